"""What the checks judge: one batch's telemetry, its training signals and the run's history.

The same :class:`Evidence` is built by the app (live and replay), the headless trainer and
``python -m energy_flow.trace health``, so every verdict is computed the same way wherever it
is shown. Every part is optional: a FlowRecorder batch of another model has no training step
(``signals`` None), a version-1 recording lacks the newer telemetry fields, a run with tracing
off has no telemetry. The checks turn what is missing into "cannot judge", never into ok.

``signals`` is the dict of :func:`energy_flow.trace.recording.report_fields_from` (the same
keys a recording stores per batch): loss, mse, cosine_loss, learning_rate, grad_norm,
grad_clip, grad_norms / update_ratios / weight_norms (per module), params_without_grad,
nonfinite, outputs_finite, output_spread, target_spread, skipped. ``history`` holds per-batch
series of the run up to and including this batch (``HISTORY_SERIES``), NaN where unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from energy_flow.trace.figures import BATCH, Figure
from energy_flow.trace.telemetry import BatchTelemetry

#: Per-batch figures the trend checks read (any may be missing), declared in
#: :data:`energy_flow.trace.figures.BATCH`.
HISTORY_FIGURES = (BATCH.loss, BATCH.grad_norm, BATCH.learning_rate, BATCH.output_spread, BATCH.target_spread,
                   BATCH.held_out_cosine, BATCH.held_out_top1)
HISTORY_SERIES = tuple(f.key for f in HISTORY_FIGURES)


@dataclass(frozen=True)
class Evidence:
    telemetry: BatchTelemetry | None
    signals: Mapping[str, Any] | None = None
    history: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: From the run's config when known: the initial learning rate and max_steps.
    initial_learning_rate: float | None = None
    max_steps: int | None = None

    def series(self, figure: Figure) -> np.ndarray:
        """Finite values of one history series, oldest first (empty when not recorded)."""
        values = np.asarray(self.history.get(figure.key, ()), dtype=np.float64)
        return values[np.isfinite(values)]

    def window(self, figure: Figure, length: int) -> np.ndarray:
        """The last ``length`` values of one history series, NaN kept (empty when not recorded)."""
        return np.asarray(self.history.get(figure.key, ()), dtype=np.float64)[-length:]

    def signal(self, figure: Figure | str) -> Any:
        """One training signal, or None when there is no training step or it was not recorded
        (a declared figure, or ``outputs_finite``, which only a live report can tell)."""
        if self.signals is None:
            return None
        value = self.signals.get(figure if isinstance(figure, str) else figure.key)
        if isinstance(value, float) and np.isnan(value):
            return None
        return value


def evidence_from_config(telemetry: BatchTelemetry | None, signals: Mapping[str, Any] | None,
                         history: Mapping[str, np.ndarray] | None,
                         config: Mapping[str, Any] | None) -> Evidence:
    """Evidence with the learning rate and step limit taken from a config dict (if given)."""
    cfg = config or {}
    lr = cfg.get("learning_rate")
    steps = cfg.get("max_steps")
    return Evidence(telemetry=telemetry, signals=signals, history=dict(history or {}),
                    initial_learning_rate=float(lr) if lr is not None else None,
                    max_steps=int(steps) if steps is not None else None)
