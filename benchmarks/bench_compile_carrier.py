"""Would ``torch.compile`` make the debug preset's step faster on the CPU? The carrier part of a
step (neuron → GRU → heads: the largest share of the step's time in the profile) eager and
compiled, side by side in one run, compile time included.

    .venv/bin/python benchmarks/bench_compile_carrier.py [--threads 1] [--flows 4600] [--repeats 5]

``FlowProcessor._carrier_step`` of the debug preset's model, forward and backward on ``--flows``
rows (4,600 is the debug preset's mean number of flows per step at batch 16), compiled with
``dynamic=True`` (the number of active flows changes every step; a static compile would
recompile for each). Prints the first call's time (the compilation), a call at another row
count, the medians of eager and compiled calls interleaved, and the largest difference between
their outputs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_debug_config  # noqa: E402
from energy_flow.training import build_model  # noqa: E402


def inputs(c, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, generator=g) * 2 - 1).requires_grad_(),
            torch.randn(n, c.energy_dim, generator=g).requires_grad_(),
            torch.randn(n, c.energy_dim, generator=g).requires_grad_(),
            torch.rand(n, generator=g).requires_grad_(),
            torch.randn(n, c.carrier_num_layers, c.carrier_hidden_size, generator=g).requires_grad_()]


def forward_backward(fn, args: list[torch.Tensor]) -> tuple[float, tuple[torch.Tensor, ...]]:
    t0 = time.perf_counter()
    outs = fn(*args)
    sum(o.float().sum() for o in outs).backward()
    return time.perf_counter() - t0, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flows", type=int, default=4600)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  torch {torch.__version__}  "
          f"threads {args.threads}")
    c = create_debug_config()
    model = build_model(c)
    eager = model._carrier_step
    compiled = torch.compile(model._carrier_step, dynamic=True)
    first, outs_c = forward_backward(compiled, inputs(c, args.flows, 0))
    _, outs_e = forward_backward(eager, inputs(c, args.flows, 0))
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(outs_e, outs_c))
    other, _ = forward_backward(compiled, inputs(c, args.flows - 300, 1))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            times[name].append(forward_backward(fn, inputs(c, args.flows, 2))[0])
    e, k = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"first compiled call (compilation): {first:.1f} s; a call at {args.flows - 300} rows: {other * 1e3:.0f} ms")
    print(f"carrier forward + backward, {args.flows} rows: eager {e * 1e3:.1f} ms, compiled {k * 1e3:.1f} ms "
          f"(eager / compiled = {e / k:.2f}×); largest output difference {diff:.2e}")
    print(f"compilation pays for itself after {first / max(e - k, 1e-9):,.0f} carrier calls"
          if e > k else "compiled is not faster: the compilation never pays for itself")


if __name__ == "__main__":
    main()
