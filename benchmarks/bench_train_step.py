"""The debug preset's train step with the flow-state rewrite as it was and as it is, side by side
in one run (issue 29 item 5).

    .venv/bin/python benchmarks/bench_train_step.py [--threads 1] [--repeats 5] [--preset debug]

Two trainers built from the same config and seed train the same batch, interleaved step by step
(so load from other processes hits both alike): one with ``step_phases.write_rows`` as it was
before issue 29 (``torch.cat`` with a row of itself, then autograd's own backward of
``index_put_``: bench_write_grad.py's ``composed_write_rows``), one as it is now. Prints the
median seconds per train step of each and their ratio, and checks that both trainers' losses
and parameters are equal after the steps (the rewrite's values and gradients are the same).
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

from benchmarks.bench_write_grad import composed_write_rows  # noqa: E402
from energy_flow.config import create_preset  # noqa: E402
from energy_flow.core import step_phases  # noqa: E402
from energy_flow.training import build_model  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer  # noqa: E402
from tests.conftest import unit_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="debug")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  torch {torch.__version__}  "
          f"threads {args.threads}")
    c = create_preset(args.preset, device="cpu")
    x = unit_rows(c.batch_size, c.teacher_dim, seed=1)
    y = unit_rows(c.batch_size, c.teacher_dim, seed=2)
    paths = {"before": composed_write_rows, "now": step_phases.write_rows}
    trainers = {name: EnergyTrainer(build_model(c), c) for name in paths}
    times: dict[str, list[float]] = {name: [] for name in paths}
    losses: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for i in range(args.repeats + 1):  # the first round warms up
            for name, write in paths.items():
                step_phases.write_rows = write
                t0 = time.perf_counter()
                report = trainers[name].train_step((x, y))
                if i:
                    times[name].append(time.perf_counter() - t0)
                losses[name].append(report.loss)
    finally:
        step_phases.write_rows = paths["now"]
    before, now = (statistics.median(times[n]) for n in paths)
    same = losses["before"] == losses["now"] and all(
        torch.equal(a, b) for a, b in zip(trainers["before"].processor.parameters(),
                                          trainers["now"].processor.parameters()))
    print(f"{args.preset} train step, batch {c.batch_size}, median of {args.repeats}: {before:.3f} s before, "
          f"{now:.3f} s now: {before / now:.2f}× faster; losses and parameters after "
          f"{args.repeats + 1} steps identical: {same}")


if __name__ == "__main__":
    main()
