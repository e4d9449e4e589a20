"""The debug preset's train step in two source trees, interleaved, as one ratio.

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/bench_ab.py /tmp/base . [--rounds 5] [--batches 6] [--threads 1]

Each round runs a fresh process per tree (A then B, then B then A the next round, so a drift in
machine load falls on both) that trains ``--batches`` batches after a warm-up batch on the same
fixed inputs, with telemetry on as the app runs it, and prints the median seconds per step. The
figure is the ratio of the trees' medians over all rounds, with each round's ratio beside it so
the noise is visible. Used for issue 27's "the step stays within noise" check. ``--phase``
times one of the step's own phases instead of the whole step (the report's ``timings``:
forward, backward, optimizer — the optimizer phase includes the step's norms and figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, statistics, sys, torch
import torch.nn.functional as F
torch.set_num_threads({threads})
from energy_flow.config import create_debug_config
from energy_flow.training import EnergyTrainer, build_model
c = create_debug_config(device="cpu")
g = torch.Generator().manual_seed(0)
x = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
y = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
t = EnergyTrainer(build_model(c), c)
t.train_step((x, y))
times = [t.train_step((x, y)).timings["{phase}"] for _ in range({batches})]
print(json.dumps(statistics.median(times)))
"""


def run(tree: Path, python: str, batches: int, threads: int, phase: str) -> float:
    out = subprocess.run([python, "-c", CHILD.format(batches=batches, threads=threads, phase=phase)], cwd=tree,
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="source tree A (the baseline)")
    ap.add_argument("b", type=Path, help="source tree B (the change)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--phase", choices=("total", "forward", "backward", "optimizer"), default="total")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"a": [], "b": []}
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        for which in order:
            times[which].append(run(getattr(args, which).resolve(), sys.executable, args.batches, args.threads,
                                    args.phase))
        print(f"round {r + 1}: A {times['a'][-1] * 1e3:.0f} ms, B {times['b'][-1] * 1e3:.0f} ms, "
              f"B/A {times['b'][-1] / times['a'][-1]:.3f}", flush=True)
    a, b = statistics.median(times["a"]), statistics.median(times["b"])
    print(f"median over {args.rounds} rounds: A {a * 1e3:.0f} ms, B {b * 1e3:.0f} ms per train step "
          f"({args.phase}); B/A = {b / a:.3f} (round ratios {min(x / y for x, y in zip(times['b'], times['a'])):.3f}–"
          f"{max(x / y for x, y in zip(times['b'], times['a'])):.3f})")


if __name__ == "__main__":
    main()
