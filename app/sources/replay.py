"""ReplaySource: turns a recording on disk into the same :class:`Snapshot` the live worker emits.

Views and panels cannot tell a replayed batch from a live one except by ``snapshot.source``
(the file's path) and ``snapshot.report`` (``None``): they draw both through ``set_snapshot``.

Why it is built this way:

* **Lazy.** A recording may be gigabytes; opening reads only attributes and the commit
  column, and a snapshot reads exactly one batch (tens of ms whatever the file size, see
  docs/recording-format.md), so this runs on the GUI thread without freezing it. A small LRU
  cache keeps the last few batches, so scrubbing back and forth does not re-read them.
* **Nothing lost on a bad file.** :meth:`ReplaySource.open` opens and validates the new file
  completely — including reading the batch it is going to show — before it closes the one that
  was open, so a failed open leaves the previous recording open and usable.
* **Read-only.** Only :func:`~energy_flow.trace.recording.open_recording` is used, which opens
  the file read-only (SWMR reader), so a live writer can keep appending while we follow it.

History: every per-batch figure the live run keeps (``history=True`` in
:data:`energy_flow.trace.figures.BATCH`) is rebuilt from the file by its declaration
(:func:`energy_flow.trace.recording.recorded_series`): a recorded figure from its
``batches/*`` column, a spawn total or the placed count from the per-step series (one small read
per series, repeated only when the batch count changes, so "spawns per batch over the run" is
complete at any batch), a figure the file does not hold — batches per second, which is never
recorded, or a training signal a version-1 file lacks — as NaN, never an invented value (the
panels then say "not recorded"). A batch whose training step is unknown (``-1`` in the file)
has NaN as its step.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, QTimer, pyqtSignal, pyqtSlot

from app.snapshot import Snapshot
from energy_flow.diagnostics.sources import assess_recording_batch
from energy_flow.trace.figures import BATCH, history_figures
from energy_flow.trace.recording import Recording, RecordingError, open_recording, recorded_series
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training.held_out import recorded_held_out

log = logging.getLogger(__name__)

#: Batches kept decoded in memory (debug preset: ~4 MB each). Enough for back-and-forth scrubbing.
CACHE_BATCHES = 4
#: How often "follow latest" looks for batches a live writer appended.
FOLLOW_INTERVAL_MS = 1000


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64)   # a copy: snapshots never share mutable arrays
    out.flags.writeable = False
    return out


class ReplaySource(QObject):
    """One open recording (or none) and the snapshots of its batches.

    Signals:

    * ``opened(path, info)`` — a recording is now the open one; ``info`` holds ``path``,
      ``num_batches``, ``config``, ``provenance``, ``schema_version`` and ``size_bytes``.
    * ``batch_count_changed(n)`` — after opening, and whenever a refresh finds new batches.
    * ``snapshot_ready(snapshot)`` — a batch to draw: after :meth:`open` (the first batch, or
      the newest when following), after :meth:`show_batch`, and for each new newest batch
      while following.
    * ``following_changed(on)`` — follow mode changed (also when a failed refresh ends it).
    * ``error(message)`` — one line naming the file and the problem; nothing else changed.
    """

    opened = pyqtSignal(str, dict)
    batch_count_changed = pyqtSignal(int)
    snapshot_ready = pyqtSignal(object)
    following_changed = pyqtSignal(bool)
    error = pyqtSignal(str)

    def __init__(self, parent: QObject | None = None, cache_batches: int = CACHE_BATCHES,
                 follow_interval_ms: int = FOLLOW_INTERVAL_MS) -> None:
        super().__init__(parent)
        if cache_batches < 1:
            raise ValueError(f"cache_batches must be ≥ 1, got {cache_batches}")
        self._cache_size = cache_batches
        self._recording: Recording | None = None
        self._cache: OrderedDict[int, BatchTelemetry] = OrderedDict()
        self._columns: dict[str, np.ndarray] = {}
        self._current: int | None = None
        self._following = False
        self._timer = QTimer(self)
        self._timer.setInterval(follow_interval_ms)
        self._timer.timeout.connect(self._on_follow_tick)

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        return self._recording is not None

    @property
    def path(self) -> Path | None:
        return None if self._recording is None else self._recording.path

    @property
    def num_batches(self) -> int:
        return 0 if self._recording is None else self._recording.num_batches

    @property
    def config(self) -> dict:
        """The recording's config dict (what an export of one of its batches must carry)."""
        return {} if self._recording is None else dict(self._recording.config)

    @property
    def provenance(self) -> dict:
        """The recording's provenance; passing it to an export keeps its ``created``/``git_commit``."""
        return {} if self._recording is None else dict(self._recording.provenance)

    @property
    def current_index(self) -> int | None:
        """Index of the batch last emitted through ``snapshot_ready`` (None before any)."""
        return self._current

    @property
    def following(self) -> bool:
        return self._following

    # ------------------------------------------------------------------ opening and closing
    @pyqtSlot(str)
    def open(self, path: str | os.PathLike) -> bool:
        """Make ``path`` the open recording; on failure emit ``error`` and keep the old one.

        Returns True on success. The new file is validated (root attributes, every dataset,
        shapes) and the batch to be shown first is read from it before the old recording is
        closed, so a file that fails anywhere on that path changes nothing.
        """
        path = Path(path)
        try:
            new = open_recording(path)
        except (RecordingError, OSError) as exc:
            self._fail(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return False
        try:
            first = (new.num_batches - 1 if self._following else 0) if new.num_batches else None
            columns = self._read_columns(new)
            telemetry = new.batch(first) if first is not None else None
            size = new.path.stat().st_size
        except (RecordingError, OSError, KeyError) as exc:
            new.close()
            self._fail(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return False
        self._close_recording()
        self._recording = new
        self._columns = columns
        if telemetry is not None and first is not None:
            self._remember(first, telemetry)
        info = {"path": str(new.path), "num_batches": new.num_batches, "config": dict(new.config),
                "provenance": dict(new.provenance), "schema_version": new.schema_version,
                "size_bytes": size}
        self.opened.emit(str(new.path), info)
        self.batch_count_changed.emit(new.num_batches)
        if first is not None:
            self._emit_snapshot(first)
        return True

    @pyqtSlot()
    def close(self) -> None:
        """Close the open recording (if any) and stop following."""
        self.set_following(False)
        self._close_recording()

    def _close_recording(self) -> None:
        if self._recording is not None:
            self._recording.close()
        self._recording = None
        self._cache.clear()
        self._columns = {}
        self._current = None

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, index: int) -> Snapshot:
        """The snapshot of batch ``index``; raises RecordingError/IndexError (nothing emitted)."""
        rec = self._require_open()
        i = self._normalise(rec, index)
        telemetry = self._telemetry(rec, i)
        n = rec.num_batches
        step = self._columns[BATCH.step.key][i]
        step_text = "unknown" if not np.isfinite(step) else str(int(step))
        return Snapshot(telemetry=telemetry, history=self._history(i), report=None,
                        source=str(rec.path), report_fields=rec.report_fields(i),
                        health=assess_recording_batch(rec, i, telemetry),
                        batch_label=f"recording batch {i + 1}/{n} (training batch {step_text})",
                        held_out=recorded_held_out(rec.provenance))

    @pyqtSlot(int)
    def show_batch(self, index: int) -> bool:
        """Emit ``snapshot_ready`` for batch ``index``; on failure emit ``error``, return False."""
        try:
            self._emit_snapshot(index)
        except (RecordingError, IndexError, ValueError, OSError) as exc:
            self._fail(str(exc))
            return False
        return True

    def _emit_snapshot(self, index: int) -> None:
        snap = self.snapshot(index)
        self._current = self._normalise(self._require_open(), index)
        self.snapshot_ready.emit(snap)

    def _require_open(self) -> Recording:
        if self._recording is None:
            raise ValueError("no recording is open")
        return self._recording

    @staticmethod
    def _normalise(rec: Recording, index: int) -> int:
        n = rec.num_batches
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{rec.path}: batch index must be an integer, got {index!r}")
        if not -n <= index < n:
            raise IndexError(f"{rec.path}: batch {index} out of range ({n} complete batches)")
        return int(index) % n

    def _telemetry(self, rec: Recording, i: int) -> BatchTelemetry:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        telemetry = rec.batch(i)
        self._remember(i, telemetry)
        return telemetry

    def _remember(self, i: int, telemetry: BatchTelemetry) -> None:
        self._cache[i] = telemetry
        self._cache.move_to_end(i)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    @staticmethod
    def _read_columns(rec: Recording) -> dict[str, np.ndarray]:
        return {f.key: recorded_series(rec, f) for f in history_figures()}

    def _history(self, i: int) -> dict[str, np.ndarray]:
        """RunHistory-shaped arrays for batches 0…i (see the module docstring for the sources)."""
        return {key: _frozen(values[:i + 1]) for key, values in self._columns.items()}

    # ------------------------------------------------------------------ following a live run
    @pyqtSlot(bool)
    def set_following(self, on: bool) -> None:
        """Follow latest: poll for new batches about once a second and show each newest one.

        Turning it on also shows the newest batch right away (if it is not the one shown).
        """
        on = bool(on) and self._recording is not None
        if on == self._following:
            return
        self._following = on
        if on:
            self._timer.start()
        else:
            self._timer.stop()
        self.following_changed.emit(on)
        if on:
            self.refresh()   # a failed refresh turns following off again (and says so)
            if self._following and self.num_batches and self._current != self.num_batches - 1:
                self.show_batch(self.num_batches - 1)

    @pyqtSlot()
    def refresh(self) -> int:
        """Pick up batches a live writer committed; returns the count (emits when it grew).

        A refresh that fails is reported through ``error`` and ends following (it would fail
        again every second); the batches already read stay available.
        """
        rec = self._recording
        if rec is None:
            return 0
        before = rec.num_batches
        try:
            n = rec.refresh()
            if n != before:
                self._columns = self._read_columns(rec)
        except (RecordingError, OSError, KeyError) as exc:
            self._fail(str(exc))
            self.set_following(False)
            return before
        if n != before:
            self.batch_count_changed.emit(n)
            if self._following and n:
                self.show_batch(n - 1)
        return n

    def _on_follow_tick(self) -> None:
        self.refresh()

    def _fail(self, message: str) -> None:
        log.error("replay: %s", message)
        self.error.emit(message)

