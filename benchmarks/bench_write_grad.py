"""Backward memory of the flow-state rewrite (``step_phases.write_rows``), before and after its
custom backward (issue 29 item 6).

    .venv/bin/python benchmarks/bench_write_grad.py [--capacity 2049] [--layers 3] [--hidden 1024]

Two measurements, each with the composition autograd built before (``cat``, two ``index_put_``,
a slice; kept here as ``composed_write_rows``) and with ``write_rows`` as it is now:

1. one rewrite of a [capacity, layers, hidden] float32 hidden state (the optimized preset's GRU
   at a reduced capacity, like bench_marginal_memory.py's 2,049 slots), half the slots stepped
   and a quarter written by children: torch's live tensor bytes at backward's peak
   (``energy_flow.memory.timeline``), and the gradients of both compared exactly;
2. a whole forward + backward of the optimized preset's model (3×1024 GRU, recomputed segments
   of 6 steps, 40 steps) on a reduced ``--lattice``² start plane at ``--capacity`` slots, as
   bench_marginal_memory.py runs it: the backward's peak of live bytes, and its parameter
   gradients compared exactly.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_optimized_config  # noqa: E402
from energy_flow.core import step_phases  # noqa: E402
from energy_flow.memory.timeline import measure_live_tensors  # noqa: E402
from energy_flow.training import build_model  # noqa: E402

MB = 1e6


def composed_write_rows(full, active, stepped, slots, children):
    """The rewrite as it was: autograd's own backward of cat + index_put_ + slice."""
    capacity = full.shape[0]
    grown = torch.cat([full, full[:1]])
    grown.index_put_((active,), stepped)
    return grown.index_put_((slots,), children)[:capacity]


def one_rewrite(write, capacity: int, layers: int, hidden: int) -> tuple[float, float, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    full = torch.randn(capacity, layers, hidden, generator=g, requires_grad=True)
    active = torch.randperm(capacity, generator=g)[: capacity // 2]
    stepped = torch.randn(active.numel(), layers, hidden, generator=g, requires_grad=True)
    free = torch.ones(capacity, dtype=torch.bool)
    free[active] = False
    kids = torch.nonzero(free).squeeze(1)[: capacity // 4]
    slots = torch.cat([kids, torch.full((capacity // 8,), capacity)])  # and some "no child" rows
    parent = torch.randint(0, active.numel(), (slots.numel(),), generator=g)
    children = stepped[parent]
    weight = torch.randn(capacity, layers, hidden, generator=g)
    out = write(full, active, stepped, slots, children)
    loss = (out * weight).sum()

    def backward():
        return torch.autograd.grad(loss, [full, stepped])

    grads, peak = measure_live_tensors(backward)
    return peak.peak_bytes / MB, peak.allocated_bytes / MB, list(grads)


def whole_step(samples: int, lattice: int, capacity: int) -> tuple[float, float, list[torch.Tensor]]:
    c = create_optimized_config(lattice_width=lattice, lattice_height=lattice, batch_size=samples,
                                max_active_flows=capacity, trace_enabled=False)
    model = build_model(c)
    x = F.normalize(torch.randn(samples, c.teacher_dim, generator=torch.Generator().manual_seed(1)), dim=1)
    loss = model(x).outputs.square().sum()
    params = [p for p in model.parameters() if p.requires_grad]

    def backward():
        return torch.autograd.grad(loss, params, allow_unused=True)

    grads, peak = measure_live_tensors(backward)
    return peak.peak_bytes / MB, peak.phase_peaks["backward"] / MB, [gr for gr in grads if gr is not None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capacity", type=int, default=2049)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--lattice", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  torch {torch.__version__}")
    new_write = step_phases.write_rows
    copy_mb = args.capacity * args.layers * args.hidden * 4 / MB
    before, alloc_before, g_before = one_rewrite(composed_write_rows, args.capacity, args.layers, args.hidden)
    after, alloc_after, g_after = one_rewrite(new_write, args.capacity, args.layers, args.hidden)
    same = all(torch.equal(a, b) for a, b in zip(g_before, g_after))
    print(f"one rewrite of [{args.capacity}, {args.layers}, {args.hidden}] float32 ({copy_mb:.1f} MB a copy): "
          f"backward peak {before:.1f} MB before, {after:.1f} MB now, saved {before - after:.1f} MB "
          f"(= {(before - after) / copy_mb:.2f} copies); allocated in backward {alloc_before:.1f} MB before, "
          f"{alloc_after:.1f} MB now (= {(alloc_before - alloc_after) / copy_mb:.2f} copies fewer); "
          f"gradients identical: {same}")
    step_phases.write_rows = composed_write_rows
    try:
        before, phase_before, g_before = whole_step(args.samples, args.lattice, args.capacity)
    finally:
        step_phases.write_rows = new_write
    after, phase_after, g_after = whole_step(args.samples, args.lattice, args.capacity)
    same = len(g_before) == len(g_after) and all(torch.equal(a, b) for a, b in zip(g_before, g_after))
    print(f"optimized preset's model, {args.lattice}×{args.lattice} start plane, batch {args.samples}, "
          f"{args.capacity:,} slots, forward+backward: backward peak "
          f"{before:.1f} MB before, {after:.1f} MB now (backward's own allocations, recomputation "
          f"aside: {phase_before:.1f} MB before, {phase_after:.1f} MB now); "
          f"parameter gradients identical: {same}")


if __name__ == "__main__":
    main()
