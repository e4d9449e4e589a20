"""What the GUI draws: the newest batch plus the run's history, as read-only copies.

The worker builds a :class:`Snapshot` after every batch (from a live ``TrainReport``) and the
replay source builds one per recorded batch; views and panels only ever read them. A panel
has two entry points: ``set_snapshot(snapshot)`` (a new batch arrived — rebuild data) and
``set_step(step)`` (the step slider moved — cheap update of what is highlighted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energy_flow.diagnostics import HealthReport
from energy_flow.trace.figures import BATCH, history_figures
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training.report import TrainReport


@dataclass(frozen=True)
class DecodedSample:
    """One sample of the batch, decoded by the text bridge."""

    input_text: str
    target_text: str
    decoded: tuple[tuple[str, float], ...]  # nearest corpus sentences with cosine, best first
    target_similarity: float                # cosine(output, target embedding)


class RunHistory:
    """Per-batch figures over the whole run (grows; the worker hands out copies).

    One series per figure declared with ``history=True`` in
    :data:`energy_flow.trace.figures.BATCH`, each measured from the batch's TrainReport by its
    declaration (``batches_per_second``, which only the worker knows, is passed in).
    """

    def __init__(self) -> None:
        self._series: dict[str, list] = {f.key: [] for f in history_figures()}

    def append(self, report: TrainReport, batches_per_second: float) -> None:
        for f in history_figures():
            value = batches_per_second if f is BATCH.batches_per_second else f.measure(report)
            self._series[f.key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        """Read-only float64 copies of every series, ``[N, *shape]`` as declared ([N, len(MODULES)]
        for a per-module figure, [N, P] for a per-plane one), for drawing."""
        out = {}
        for f in history_figures():
            arr = np.asarray(self._series[f.key], dtype=np.float64)
            if f.trailing and arr.size == 0:
                arr = arr.reshape(0, 0)
            arr.flags.writeable = False
            out[f.key] = arr
        return out

    def __len__(self) -> int:
        return len(self._series[BATCH.step.key])


def batch_axis(history: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """The x values and axis label for per-batch curves of ``history``.

    The training batch number (the ``step`` figure) when every batch has one; otherwise (a
    recording from another recorder, with no training step) the batch's position in the
    recording, 1-based, and a label that says so — never NaN x values, which draw nothing.
    """
    steps = np.asarray(history.get(BATCH.step.key, np.zeros(0)), dtype=np.float64)
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
    #: The run's held-out evaluation (``HeldOutSchedule.to_dict()``: interval, sample and the
    #: best simple predictor's value per held-out figure on the same pairs), live or from a
    #: recording's provenance; None when unknown (an older recording).
    held_out: dict | None = None
