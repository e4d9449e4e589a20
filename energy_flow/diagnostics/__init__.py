"""Health verdicts of a training run, computed from telemetry and training signals.

One module for the app, the headless trainer and ``python -m energy_flow.trace health``: each
check is a pure function of an :class:`Evidence` (no Qt), answers ok / warning / failure /
cannot judge with its numbers in one line, and takes its thresholds from
:data:`~energy_flow.diagnostics.thresholds.THRESHOLDS` (documented in docs/health.md).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from energy_flow.diagnostics import flow_checks, held_out_checks, training_checks
from energy_flow.diagnostics.evidence import HISTORY_SERIES, Evidence, evidence_from_config
from energy_flow.diagnostics.thresholds import THRESHOLDS, Threshold
from energy_flow.diagnostics.verdict import HealthReport, Level, Verdict
from energy_flow.trace.telemetry import BatchTelemetry

#: Every check, in display order (the app sorts worst first; this order breaks ties).
CHECKS: tuple[Callable[[Evidence], Verdict], ...] = (
    training_checks.finite, flow_checks.landing, flow_checks.timeouts, flow_checks.motion,
    flow_checks.edge, flow_checks.fading, flow_checks.spawn_budget, flow_checks.saturation,
    training_checks.gradients, training_checks.clipping, training_checks.updates,
    training_checks.collapse, training_checks.loss_trend, training_checks.learning_rate,
    held_out_checks.memorising,
)
CHECK_KEYS = ("finite", "landing", "timeouts", "motion", "edge", "fading", "spawn_budget", "saturation",
              "gradients", "clipping", "updates", "collapse", "loss", "learning_rate",
              "memorising")


def assess(evidence: Evidence) -> HealthReport:
    """Every check's verdict for one batch."""
    return HealthReport(tuple(check(evidence) for check in CHECKS))


def assess_batch(telemetry: BatchTelemetry | None, signals: Mapping[str, Any] | None = None,
                 history: Mapping[str, np.ndarray] | None = None,
                 config: Mapping[str, Any] | None = None) -> HealthReport:
    """:func:`assess` from the parts (``config``: the run's config dict, for lr and max_steps)."""
    return assess(evidence_from_config(telemetry, signals, history, config))


__all__ = ["CHECKS", "CHECK_KEYS", "HISTORY_SERIES", "THRESHOLDS", "Evidence", "HealthReport", "Level",
           "Threshold", "Verdict", "assess", "assess_batch", "evidence_from_config"]
