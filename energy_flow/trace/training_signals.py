"""A batch's training signals as a plain dict: what recordings store beside the telemetry.

Why a dict and not the TrainReport: a recording must also hold batches of models that have no
TrainReport (``FlowRecorder``), or no training step at all, and a reader must get the same
shape back from a file as a writer got from a live report. Every key is optional; a reader
returns NaN (numbers), None (``step``, ``skipped``, ``params_without_grad`` and its count) or
a dict of NaN (per-module values) where a signal is unknown; ``nonfinite`` is None both when
everything was finite and when unknown (``skipped`` tells them apart).

Torch-free, like everything under ``energy_flow.trace``: the health checks and the app read
these without the model.
"""

from __future__ import annotations

import math
from typing import Any

from energy_flow.trace.figures.declarations import BATCH, MODULES, recorded_batch_figures

#: Per-batch numbers (float64; NaN unknown): the recorded scalar figures.
SCALAR_FIELDS = tuple(f.key for f in recorded_batch_figures() if f.trailing == "" and f.dtype == "f8")
#: Per-module numbers: dicts {module: float} over MODULES (float64 [4] columns; NaN unknown).
MODULE_FIELDS = tuple(f.key for f in recorded_batch_figures() if f.trailing == "M")
#: Per-output-plane numbers: sequences of one float per plane (float64 [P] columns; NaN unknown).
PLANE_FIELDS = tuple(f.key for f in recorded_batch_figures() if f.trailing == "P")
#: Keys accepted in ``report_fields`` (all optional; unknown ones are rejected): every recorded
#: per-batch figure.
REPORT_FIELDS = tuple(f.key for f in recorded_batch_figures())
#: Keys that say a training step happened (the landed fraction and the per-plane deposits describe
#: flows, which a recorder of another model knows without training).
TRAINING_KEYS = tuple(k for k in REPORT_FIELDS if k != BATCH.landed_fraction.key and k not in PLANE_FIELDS)


def report_fields_from(report: Any) -> dict[str, Any]:
    """``report_fields`` for :meth:`RecordingWriter.append_batch` from a TrainReport: every
    recorded figure measured by its declaration (per-module values as {module: value})."""
    out = {}
    for f in recorded_batch_figures():
        value = f.measure(report)
        out[f.key] = dict(zip(MODULES, value)) if f.trailing == "M" else tuple(value) if f.trailing == "P" else value
    return out


def is_training_step(fields: dict[str, Any]) -> bool:
    """Whether any training signal (not only a flow count) is known in ``fields``.

    Unknown is None, NaN, or a per-module dict of NaN only.
    """
    for key in TRAINING_KEYS:
        value = fields.get(key)
        if isinstance(value, dict):
            if any(not math.isnan(v) for v in value.values()):
                return True
        elif isinstance(value, float):
            if not math.isnan(value):
                return True
        elif value is not None:
            return True
    return False
