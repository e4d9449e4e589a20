"""TrainReport: what one ``EnergyTrainer.train_step`` did, as plain read-only data.

The worker thread hands these to the GUI; the headless runner prints and summarises them.
Every number is measured from the step it describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from energy_flow.trace.telemetry import BatchTelemetry, FlowStats


@dataclass(frozen=True)
class DataProvenance:
    """Where a run's data came from; recorded in every report, summary and recording."""

    source: str          # file path, or "bundled corpus (energy_flow/training/corpus/pairs.jsonl)"
    num_pairs: int
    teacher: str         # teacher model name/path, or "precomputed embeddings"
    dim: int

    def to_dict(self) -> dict:
        return {"source": self.source, "num_pairs": self.num_pairs, "teacher": self.teacher, "dim": self.dim}


@dataclass(frozen=True)
class TrainReport:
    step: int                       # optimisation steps taken so far, this one included
    loss: float                     # total = mse_weight·mse + cosine_weight·(1 − cos)
    mse: float
    cosine_loss: float              # mean(1 − cosine(output, target))
    learning_rate: float
    grad_norm: float                # total norm before clipping (NaN if non-finite)
    grad_norms: dict[str, float]    # per module in MODULES, before clipping
    grad_clip: float                # the config's clip level for the total gradient norm
    update_ratios: dict[str, float]  # per module: ‖θ_after − θ_before‖ / ‖θ_before‖ (NaN: skipped)
    weight_norms: dict[str, float]  # per module: ‖θ‖ after the step
    output_spread: float            # 1 − mean off-diagonal cosine of the outputs (NaN: B < 2)
    target_spread: float            # the same over the targets; outputs ≪ targets = collapse
    params_without_grad: tuple[str, ...]  # trainable parameters whose gradient was None or all zero
    timings: dict[str, float]       # seconds per phase: forward, backward, optimizer, telemetry, total
    flow_stats: FlowStats
    telemetry: BatchTelemetry | None  # None when tracing is off
    skipped: bool                   # True when the update was skipped (non-finite loss/gradient)
    nonfinite: str | None           # what was non-finite, named; None when all was finite
    outputs: np.ndarray = field(repr=False)         # [B, D] float32 output embeddings
    sample_indices: np.ndarray = field(repr=False)  # [B] int64 dataset indices of the batch
    device: str = "cpu"
    provenance: DataProvenance | None = None  # where the batch's data came from (None: raw tensors)
    #: The model's figures on the run's fixed held-out sample after this batch, measured by
    #: :class:`energy_flow.training.held_out.HeldOutSchedule` every ``held_out_every`` batches
    #: (NaN on the batches in between, and when no evaluation runs).
    held_out_cosine: float = math.nan
    held_out_top1: float = math.nan

    def __post_init__(self) -> None:
        self.outputs.flags.writeable = False
        self.sample_indices.flags.writeable = False

    def summary_dict(self) -> dict:
        fs = self.flow_stats
        return {
            "step": self.step, "loss": self.loss, "mse": self.mse, "cosine_loss": self.cosine_loss,
            "learning_rate": self.learning_rate, "grad_norm": self.grad_norm,
            "grad_norms": dict(self.grad_norms), "update_ratios": dict(self.update_ratios),
            "weight_norms": dict(self.weight_norms), "output_spread": self.output_spread,
            "target_spread": self.target_spread,
            "landed_fraction": fs.landed_fraction, "coverage": list(fs.coverage),
            "spawned": fs.spawned, "spawn_requested": fs.requested, "spawn_denied": fs.denied,
            "faded": fs.faded, "timed_out": fs.timed_out,
            "landed": list(fs.landed), "steps": fs.steps, "skipped": self.skipped,
            "nonfinite": self.nonfinite, "seconds": self.timings.get("total"),
            "provenance": self.provenance.to_dict() if self.provenance else None,
            "held_out_cosine": self.held_out_cosine, "held_out_top1": self.held_out_top1,
        }
