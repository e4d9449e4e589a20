"""What the GUI draws: the newest batch plus the run's history, as read-only copies.

The worker builds a :class:`Snapshot` after every batch (from a live ``TrainReport``) and the
replay source builds one per recorded batch; views and panels only ever read them. A panel
has two entry points: ``set_snapshot(snapshot)`` (a new batch arrived — rebuild data) and
``set_step(step)`` (the step slider moved — cheap update of what is highlighted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from energy_flow.diagnostics import HealthReport
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.trace.training_signals import MODULES
from energy_flow.training.report import TrainReport


@dataclass(frozen=True)
class DecodedSample:
    """One sample of the batch, decoded by the text bridge."""

    input_text: str
    target_text: str
    decoded: tuple[tuple[str, float], ...]  # nearest corpus sentences with cosine, best first
    target_similarity: float                # cosine(output, target embedding)


#: History series with one column per module of MODULES.
PER_MODULE_SERIES = ("grad_norms", "update_ratios")
#: History series the diagnostics panel draws (all per batch).
TRAINING_SIGNAL_SERIES = ("grad_norm", "grad_clip", *PER_MODULE_SERIES, "output_spread", "target_spread")


@dataclass
class RunHistory:
    """Per-batch scalars over the whole run (grows; the worker hands out copies)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    cosine_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    landed_fraction: list[float] = field(default_factory=list)
    batches_per_second: list[float] = field(default_factory=list)
    spawn_requested: list[int] = field(default_factory=list)
    spawn_granted: list[int] = field(default_factory=list)
    spawn_denied: list[int] = field(default_factory=list)
    placed: list[int] = field(default_factory=list)      # flows placed on the start plane
    # Training signals for the diagnostics panel; per-module series are rows in MODULES order.
    grad_norm: list[float] = field(default_factory=list)
    grad_clip: list[float] = field(default_factory=list)
    grad_norms: list[list[float]] = field(default_factory=list)
    update_ratios: list[list[float]] = field(default_factory=list)
    output_spread: list[float] = field(default_factory=list)
    target_spread: list[float] = field(default_factory=list)

    def append(self, report: TrainReport, batches_per_second: float) -> None:
        self.step.append(report.step)
        self.loss.append(report.loss)
        self.mse.append(report.mse)
        self.cosine_loss.append(report.cosine_loss)
        self.learning_rate.append(report.learning_rate)
        self.landed_fraction.append(report.flow_stats.landed_fraction)
        self.batches_per_second.append(batches_per_second)
        agg = report.telemetry.aggregates if report.telemetry is not None else None
        self.spawn_requested.append(int(agg.spawn_requested.sum()) if agg is not None else 0)
        self.spawn_granted.append(report.flow_stats.spawned)
        self.spawn_denied.append(int(agg.spawn_denied.sum()) if agg is not None else 0)
        self.placed.append(int(agg.active[0]) if agg is not None else report.flow_stats.initial_flows)
        self.grad_norm.append(report.grad_norm)
        self.grad_clip.append(report.grad_clip)
        self.grad_norms.append([report.grad_norms.get(m, float("nan")) for m in MODULES])
        self.update_ratios.append([report.update_ratios.get(m, float("nan")) for m in MODULES])
        self.output_spread.append(report.output_spread)
        self.target_spread.append(report.target_spread)

    def arrays(self) -> dict[str, np.ndarray]:
        """Read-only numpy copies of every series, for drawing ([N, len(MODULES)] per module)."""
        out = {}
        for name, values in self.__dict__.items():
            arr = np.asarray(values, dtype=np.float64)
            if name in PER_MODULE_SERIES:
                arr = arr.reshape(-1, len(MODULES))
            arr.flags.writeable = False
            out[name] = arr
        return out

    def __len__(self) -> int:
        return len(self.step)


def batch_axis(history: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """The x values and axis label for per-batch curves of ``history``.

    The training batch number (``history["step"]``) when every batch has one; otherwise (a
    recording from another recorder, with no training step) the batch's position in the
    recording, 1-based, and a label that says so — never NaN x values, which draw nothing.
    """
    steps = np.asarray(history.get("step", np.zeros(0)), dtype=np.float64)
    if steps.size and not np.all(np.isfinite(steps)):
        return np.arange(1, steps.size + 1, dtype=np.float64), "recording batch"
    return steps, "batch"


@dataclass(frozen=True)
class Snapshot:
    telemetry: BatchTelemetry
    history: dict[str, np.ndarray]        # RunHistory.arrays() at the time of the batch
    report: TrainReport | None = None     # None when replaying a recording
    decoded: tuple[DecodedSample, ...] = ()
    source: str = "live"                  # "live" or the recording's path
    health: HealthReport | None = None    # the batch's verdicts (energy_flow.diagnostics)
    batch_label: str = ""                 # e.g. "batch 12" or "recording batch 3/10"
    #: A replayed batch's recorded training signals (``Recording.report_fields``: the dict
    #: ``report_fields_from(report)`` makes; None for a batch without a training step, and
    #: for live snapshots, which have ``report``).
    report_fields: dict | None = None
