"""The worker's recording: every batch trained while it is on is appended to one HDF5 file.

It lives in the worker thread, beside training, and reports through the callables it is given
(the worker's signals): ``changed(on, path_or_why)``, ``status(line)`` and ``error(message)``.
A failing write (a full disk) closes the recording and never stops training.
"""

from __future__ import annotations

from typing import Callable

from energy_flow.trace.recording import RecordingWriter, report_fields_from
from energy_flow.training.report import TrainReport


class RecordingSink:
    """Owns at most one open :class:`RecordingWriter`."""

    def __init__(self, changed: Callable[[bool, str], None], status: Callable[[str], None],
                 error: Callable[[str], None]) -> None:
        self._changed, self._status, self._error = changed, status, error
        self.writer: RecordingWriter | None = None

    def start(self, path: str, config: dict, provenance: dict) -> None:
        """Open a new recording at ``path`` (the caller closed any previous one)."""
        try:
            self.writer = RecordingWriter(path, config, provenance)
        except (OSError, ValueError) as exc:
            self._changed(False, f"cannot record to {path}: {exc}")
            return
        self._changed(True, path)
        self._status(f"recording every batch to {path}")

    def close(self, why: str) -> None:
        """Close the recording, if any, saying how many batches it holds and why it closed."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        batches = writer.num_batches
        try:
            writer.close()
        except OSError as exc:
            why = f"{why}; closing it failed: {exc}"
        self._changed(False, f"{writer.path}: {batches} batch{'' if batches == 1 else 'es'} recorded ({why})")

    def record(self, report: TrainReport) -> None:
        """Append the batch; a failing write stops recording, never training."""
        if self.writer is None or report.telemetry is None:
            return
        try:
            self.writer.append_batch(report.telemetry, report_fields_from(report))
        except (OSError, ValueError) as exc:
            path = self.writer.path
            self.close(f"write failed: {exc}")
            self._error(f"Recording to {path} stopped: {exc}. Training carries on; the batches "
                        "recorded before are intact.")
