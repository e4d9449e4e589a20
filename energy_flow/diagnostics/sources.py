"""Evidence from where batches come from: a live TrainReport, a recording, a running loop.

:class:`HealthMonitor` keeps the per-batch history a live run needs for its trend checks
(bounded: the trend checks look back at most ``FLAT_WINDOW + LOSS_WINDOW`` batches, the
monitor keeps a little more), so the headless trainer and the app's worker judge a batch the
same way ``trace health`` judges the same batch in a recording.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import numpy as np

from energy_flow.diagnostics import assess
from energy_flow.diagnostics.evidence import HISTORY_FIGURES, HISTORY_SERIES, Evidence, evidence_from_config
from energy_flow.diagnostics.thresholds import FLAT_WINDOW, LOSS_WINDOW
from energy_flow.diagnostics.verdict import HealthReport
from energy_flow.trace.recording import Recording, recorded_series, report_fields_from
from energy_flow.trace.telemetry import BatchTelemetry

#: Batches of history kept by a monitor: what the longest trend check reads.
HISTORY_LENGTH = FLAT_WINDOW + 2 * LOSS_WINDOW


def signals_from_report(report: Any) -> dict[str, Any]:
    """A TrainReport's training signals, as the dict a recording stores (plus output finiteness,
    which only a live report can tell)."""
    signals = dict(report_fields_from(report))
    signals["outputs_finite"] = bool(np.isfinite(report.outputs).all())
    return signals


def history_row(signals: Mapping[str, Any] | None) -> dict[str, float]:
    """One batch's entry of every history series (NaN where unknown)."""
    row = {}
    for name in HISTORY_SERIES:
        value = None if signals is None else signals.get(name)
        row[name] = float(value) if value is not None else float("nan")
    return row


class HealthMonitor:
    """Judges each batch of a live run with the history of the batches before it."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config = dict(config or {})
        self._history: dict[str, deque] = {name: deque(maxlen=HISTORY_LENGTH) for name in HISTORY_SERIES}

    def reset(self) -> None:
        for series in self._history.values():
            series.clear()

    def history(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(series, dtype=np.float64) for name, series in self._history.items()}

    def observe(self, telemetry, signals: Mapping[str, Any] | None) -> HealthReport:
        """Add this batch to the history and judge it."""
        for name, value in history_row(signals).items():
            self._history[name].append(value)
        return assess(evidence_from_config(telemetry, signals, self.history(), self.config))

    def observe_report(self, report: Any) -> HealthReport:
        return self.observe(report.telemetry, signals_from_report(report))


def recording_history(rec: Recording, upto: int) -> dict[str, np.ndarray]:
    """History series of batches 0…upto of a recording (NaN where the recording has no value)."""
    first = max(0, upto + 1 - HISTORY_LENGTH)
    return {f.key: recorded_series(rec, f)[first: upto + 1] for f in HISTORY_FIGURES}


def evidence_from_recording(rec: Recording, index: int, telemetry: BatchTelemetry | None = None) -> Evidence:
    """The evidence for batch ``index`` of a recording, with its history up to that batch
    (``telemetry``: the batch, when the caller has already read it)."""
    signals = rec.report_fields(index)
    tel = telemetry if telemetry is not None else rec.batch(index)
    return evidence_from_config(tel, signals, recording_history(rec, index), rec.config)


def assess_recording_batch(rec: Recording, index: int, telemetry: BatchTelemetry | None = None) -> HealthReport:
    return assess(evidence_from_recording(rec, index, telemetry))
