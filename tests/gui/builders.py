"""Real snapshots for the GUI tests that draw panels without a window."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.snapshot import RunHistory, Snapshot
from energy_flow.config import create_tiny_config
from energy_flow.training import EnergyTrainer, build_model


def trained_snapshot(batches: int, seed: int) -> Snapshot:
    """A snapshot of real batch ``batches`` of a fresh tiny model (the same unit-norm pairs every
    batch), with its run history: what a panel receives after that many Step presses."""
    c = create_tiny_config(device="cpu")
    trainer = EnergyTrainer(build_model(c), c)
    g = torch.Generator().manual_seed(seed)
    inputs = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
    targets = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
    history = RunHistory()
    for _ in range(batches):
        report = trainer.train_step((inputs, targets))
        history.append(report, 1.0 / report.timings["total"])
    return Snapshot(telemetry=report.telemetry, history=history.arrays(), report=report,
                    batch_label=f"batch {report.step}")
