"""What the health checks measure on a real run of a preset: the figures docs/health.md's
thresholds were set against. Prints, every K batches, each check's level and measured value.

    python -m benchmarks.health_defaults --preset debug --batches 60 --every 5
    python -m benchmarks.health_defaults --preset debug --batches 300 --every 10 --data wordnet:3000
"""

from __future__ import annotations

import argparse

import torch

from energy_flow.config import create_preset
from energy_flow.diagnostics import CHECK_KEYS
from energy_flow.diagnostics.sources import HealthMonitor
from energy_flow.config import parse_overrides
from energy_flow.headless import load_data
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.trainer import EnergyTrainer, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="debug")
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="as main.py's --data (e.g. wordnet:3000); default the bundled corpus")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (repeatable)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = create_preset(args.preset, device="cpu", **parse_overrides(args.set))
    data = load_data(config, args.data, None)
    config = config.replace(teacher_dim=data.dim)
    trainer = EnergyTrainer(build_model(config), config)
    sampler = BatchSampler(len(data), config.batch_size, config.seed)
    monitor = HealthMonitor(config.to_dict())
    print("batch " + " ".join(f"{k[:12]:>12}" for k in CHECK_KEYS))
    for _ in range(args.batches):
        idx = sampler.indices(trainer.step_count)
        report = trainer.train_step((data.inputs[idx], data.targets[idx], idx))
        health = monitor.observe_report(report)
        if report.step % args.every == 0 or report.step == 1:
            cells = []
            for v in health:
                value = "" if v.value is None else f"{v.value:.3g}"
                cells.append(f"{v.level.mark}{value:>11}")
            print(f"{report.step:5d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
