"""The estimated cost of a batch (energy_flow.training.cost_estimate) against the measured first
batches, per preset, on this machine: the probe's time and basis, the estimate, its upper bound,
and the first N real batches (train_step on the same model, after the probe).

    .venv/bin/python benchmarks/bench_cost_estimate.py --preset debug [--batches 3] [--threads 1]

The data is the bundled corpus through the teacher (cached), the batch the sampler's first, as
the app and the headless trainer do. Prints one Markdown row for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training.cost_estimate import estimate_cost, format_seconds  # noqa: E402
from energy_flow.training.sampler import BatchSampler  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer, build_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="debug")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = create_preset(args.preset, device=args.device)
    data = load_data(cfg, None, None)
    cfg = cfg.replace(teacher_dim=data.dim)
    trainer = EnergyTrainer(build_model(cfg), cfg)
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed)
    idx = sampler.indices(0)
    t0 = time.perf_counter()
    cost = estimate_cost(trainer.processor, cfg, data.inputs[idx], data.targets[idx])
    probe_wall = time.perf_counter() - t0
    print(cost.line())
    for warning in cost.warnings():
        print("warning:", warning)
    measured = []
    for step in range(args.batches):
        idx = sampler.indices(step)
        t0 = time.perf_counter()
        report = trainer.train_step((data.inputs[idx], data.targets[idx], idx))
        measured.append((time.perf_counter() - t0, int(report.flow_stats.active_per_step[:-1].sum())))
        print(f"batch {step + 1}: {format_seconds(measured[-1][0])}, {measured[-1][1]:,} flow-steps")
    print(cost.with_first_batch(*measured[0]).check_line())
    batches = " / ".join(format_seconds(s) for s, _ in measured)
    print(f"| {args.preset} | {args.threads} | {format_seconds(probe_wall)} ({cost.probe.steps} steps × "
          f"{cost.probe.samples} samples) | {format_seconds(cost.seconds)} (≤ {format_seconds(cost.seconds_upper)}) "
          f"| {batches} | {measured[0][0] / cost.seconds:.2f} | {cost.assumed_flow_steps:,} / {measured[0][1]:,} |")


if __name__ == "__main__":
    main()
