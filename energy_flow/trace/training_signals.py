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

#: The model's top-level parts, in the order of every per-module value (stored as [4] columns).
MODULES = ("input_mapper", "neuron", "carrier", "output_mapper")

#: Per-batch numbers (float64; NaN unknown).
SCALAR_FIELDS = ("loss", "mse", "cosine_loss", "learning_rate", "landed_fraction", "grad_norm",
                 "grad_clip", "output_spread", "target_spread")
#: Per-module numbers: dicts {module: float} over MODULES (float64 [4] columns; NaN unknown).
MODULE_FIELDS = ("grad_norms", "update_ratios", "weight_norms")
#: Keys accepted in ``report_fields`` (all optional; unknown ones are rejected).
REPORT_FIELDS = ("step", *SCALAR_FIELDS, *MODULE_FIELDS, "skipped", "nonfinite",
                 "params_without_grad", "params_without_grad_count")
#: Keys that say a training step happened (``landed_fraction`` is a flow count, not training).
TRAINING_KEYS = tuple(k for k in REPORT_FIELDS if k != "landed_fraction")


def report_fields_from(report: Any) -> dict[str, Any]:
    """``report_fields`` for :meth:`RecordingWriter.append_batch` from a TrainReport."""
    return {"step": report.step, "loss": report.loss, "mse": report.mse,
            "cosine_loss": report.cosine_loss, "learning_rate": report.learning_rate,
            "landed_fraction": report.flow_stats.landed_fraction,
            "grad_norm": report.grad_norm, "grad_clip": report.grad_clip,
            "output_spread": report.output_spread, "target_spread": report.target_spread,
            "grad_norms": {m: float(report.grad_norms.get(m, math.nan)) for m in MODULES},
            "update_ratios": {m: float(report.update_ratios.get(m, math.nan)) for m in MODULES},
            "weight_norms": {m: float(report.weight_norms.get(m, math.nan)) for m in MODULES},
            "skipped": bool(report.skipped), "nonfinite": report.nonfinite,
            "params_without_grad": tuple(report.params_without_grad),
            "params_without_grad_count": len(report.params_without_grad)}


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
