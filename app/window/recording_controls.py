"""Recordings in the window: File → Open / drop a file / ``--open``, Export, and Record.

The window shows one source at a time. *Live*: the training worker's snapshots. *Replay*: a
recording's batches through :class:`~app.sources.replay.ReplaySource`, with a timeline (batch and step
sliders, play/loop/speed, follow latest) above the 3D view. Opening a recording pauses
training and stops drawing live snapshots; "Back to live training" (or Run / Step) returns.
A file that cannot be opened is reported in the banner and whatever was shown stays shown.

Record appends every trained batch to a new recording from the worker thread (the window
draws only the newest snapshot, so recording from here would miss batches). Export writes the
shown batch as a one-batch recording and/or a PNG of the 3D view rendered offscreen at the
size the user picks; failures are shown and lose nothing, and training carries on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Protocol

from PyQt6.QtCore import QEvent, QObject, QStandardPaths, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QFileDialog, QWidget

from app.sources.replay import ReplaySource
from app.window.export import ExportDialog, ExportRequest, write_export
from app.window.icons import icon
from app.window.timeline import ReplayTimeline
from energy_flow.files.output_paths import check_distinct
from energy_flow.trace.recording import RecordingError, open_recording
from energy_flow.trace.recording.guards import is_recording, refuse_to_replace_non_recording

RECORDING_SUFFIXES = (".h5", ".hdf5")

#: Asks for a recording to open (None: cancelled).
OpenProvider = Callable[[QWidget], str | None]
#: Asks where to record (None: cancelled).
RecordProvider = Callable[[QWidget], str | None]
#: Asks what to export, given a default base path (None: cancelled).
ExportProvider = Callable[[QWidget, Path, bool], ExportRequest | None]


def _ask_open(parent: QWidget, folder: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open recording", folder, "Recordings (*.h5 *.hdf5);;All files (*)")
    return path or None


def _ask_record(parent: QWidget, folder: str) -> str | None:
    """The file to record to. The dialog asks nothing about an existing file: Qt's "replace it?"
    cannot know that the app refuses to replace a file that is not a recording, so
    :meth:`RecordingController.record_target_ok` asks (or refuses) instead."""
    default = str(Path(folder) / time.strftime("run-%Y%m%d-%H%M%S.h5"))
    path, _ = QFileDialog.getSaveFileName(parent, "Record training to", default, "Recordings (*.h5)",
                                          options=QFileDialog.Option.DontConfirmOverwrite)
    return path or None


def _ask_export(parent: QWidget, base: Path, can_render: bool) -> ExportRequest | None:
    return ExportDialog.get_request(parent, base, can_render=can_render)


class RecordingHost(Protocol):
    """What the recording controller uses of the window — and nothing else (a test checks that
    every window member it reads is named here). Wide, because recording, replay and export
    switch what the whole window shows between a live run and a file; the worker is reached
    only through its signals and its recording slots, never its trainer or dataset."""

    worker: Any                 # app.sources.worker.TrainingWorker: signals and queued slots
    worker_thread: Any
    live: Any                   # app.window.live_run.LiveRun: what the signals said of the run
    config_panel: Any
    text_bridge_panel: Any
    lattice_view: Any
    step_slider: Any
    toolbar: Any
    banner: Any
    notice: Any                 # the loading line above the view
    run_status: Any             # the status bar's run facts
    worker_state: str
    run_requested: Any          # the window's signals
    step_requested: Any
    pause_requested: Any
    step_changed: Any
    snapshot_shown: Any

    def refresh_state(self) -> None: ...
    def confirm_question(self, title: str, text: str) -> bool: ...
    def show_snapshot(self, snapshot: Any) -> None: ...
    @property
    def latest_snapshot(self) -> Any: ...
    def clear_views(self) -> None: ...
    def show_error(self, message: str) -> None: ...
    def start(self, *args: Any) -> Any: ...
    def menuBar(self) -> Any: ...
    def statusBar(self) -> Any: ...
    def centralWidget(self) -> Any: ...
    def setAcceptDrops(self, on: bool) -> None: ...
    def installEventFilter(self, watcher: QObject) -> None: ...


class RecordingController(QObject):
    """Adds the File menu, the Export/Record toolbar actions and the replay timeline to ``window``.

    The three ``*_provider`` arguments are the dialogs; tests pass functions instead.
    """

    mode_changed = pyqtSignal(str)          # "live" or "replay"
    record_requested = pyqtSignal(str)      # → worker.start_recording (queued)
    stop_record_requested = pyqtSignal()    # → worker.stop_recording (queued)

    def __init__(self, window: RecordingHost, open_provider: OpenProvider | None = None,
                 record_provider: RecordProvider | None = None,
                 export_provider: ExportProvider = _ask_export) -> None:
        super().__init__(window)
        self.window = window
        self.worker = window.worker
        self._ask_open: OpenProvider = open_provider or (lambda parent: _ask_open(parent, self.start_folder()))
        self._ask_record: RecordProvider = record_provider or (lambda parent: _ask_record(parent, self.start_folder()))
        self._ask_export = export_provider
        self.mode = "live"
        self._live_snapshot = None
        self.recording_path: Path | None = None   # the last recording written (Open starts there)
        self.last_folder: Path | None = None      # where the last export went or recording opened from
        self.batches_recorded = 0
        self.last_recording_note: str | None = None
        self.replay = ReplaySource(self)
        self._replay_info: tuple[str, int] = ("", 0)        # path and schema of the replayed file
        self._replay_banner: str | None = None              # the banner text it was given
        self.timeline = ReplayTimeline()
        self.timeline.hide()
        self._build_actions()
        self._connect()
        window.centralWidget().layout().insertWidget(2, self.timeline)
        window.setAcceptDrops(True)
        window.installEventFilter(self)

    # ------------------------------------------------------------------ construction
    def _build_actions(self) -> None:
        w = self.window

        def action(text: str, tip: str, slot, shortcut: str | None = None, checkable: bool = False,
                   icon_name: str | None = None) -> QAction:
            act = QAction(icon(icon_name), text, w) if icon_name else QAction(text, w)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
                tip = f"{tip} ({shortcut})"
            act.setToolTip(tip)
            act.setCheckable(checkable)
            (act.toggled if checkable else act.triggered).connect(slot)
            return act

        self.open_action = action("Open recording…", "Replay a recording (.h5) in this window; training "
                                  "pauses", self._open_dialog, "Ctrl+O", icon_name="open")
        self.export_action = action("Export", "Export the shown batch: a one-batch recording and/or a PNG "
                                    "of the 3D view at a resolution you pick", self.export, "Ctrl+E",
                                    icon_name="export")
        self.record_action = action("Record", "Append every trained batch to a recording file",
                                    self._record_toggled, "Ctrl+Shift+R", checkable=True, icon_name="record")
        self.live_action = action("Back to live training", "Leave the replay and show the training run again",
                                  self.back_to_live, "Ctrl+L")
        self.live_action.setEnabled(False)
        self.export_action.setEnabled(False)
        menu = self.file_menu = w.menuBar().addMenu("&File")
        for act in (self.open_action, self.export_action, self.record_action, self.live_action):
            menu.addAction(act)
        w.toolbar.addSeparator()
        for act in (self.export_action, self.record_action):
            w.toolbar.addAction(act)

    def _connect(self) -> None:
        w, r, t = self.window, self.replay, self.timeline
        self.worker.snapshot_ready.connect(self._on_live_snapshot)
        self.worker.loaded.connect(self._on_model_rebuilt)
        self.record_requested.connect(self.worker.start_recording)
        self.stop_record_requested.connect(self.worker.stop_recording)
        self.worker.recording_changed.connect(self._on_recording_changed)
        r.snapshot_ready.connect(self._on_replay_snapshot)
        r.batch_count_changed.connect(t.set_batch_count)
        r.batch_count_changed.connect(self._on_batch_count)
        r.following_changed.connect(t.set_following)
        r.error.connect(w.show_error)
        r.opened.connect(self._on_opened)
        t.batch_selected.connect(r.show_batch)
        t.follow_toggled.connect(r.set_following)
        t.step_selected.connect(w.step_slider.setValue)
        w.step_changed.connect(t.set_step)
        self.mode_changed.connect(lambda mode: w.toolbar.show_step_controls(mode == "live"))
        w.snapshot_shown.connect(lambda _s: self.export_action.setEnabled(True))
        # Asking to train while a recording is shown returns to the live run first.
        w.run_requested.connect(self._training_requested)
        w.step_requested.connect(self._training_requested)

    # ------------------------------------------------------------------ replay
    def _open_dialog(self) -> None:
        path = self._ask_open(self.window)
        if path:
            self.open_recording(path)

    def open_recording(self, path: str | Path) -> bool:
        """Show a recording; on failure the banner says why and nothing else changes."""
        opened = self.replay.open(path)
        if opened:
            self.last_folder = Path(path).resolve().parent
        return opened

    def _on_opened(self, path: str, info: dict) -> None:
        if self.mode != "replay":
            if self.window.worker_state == "running":
                self.window.pause_requested.emit()
            self.worker.snapshot_ready.disconnect(self.window.show_snapshot)
            self.mode = "replay"
            self.mode_changed.emit("replay")
        self.timeline.show()
        self.live_action.setEnabled(True)
        self.window.refresh_state()
        self.window.config_panel.show_recorded(info["config"], Path(path).name)
        if not self.window.live.loaded:     # nothing live to describe: say what is shown instead
            labels = self.window.run_status.labels
            labels["device"].setText("no live run")
            labels["data"].setText(f"recording {Path(path).name}")
            labels["data"].setToolTip(str(path))
        self._replay_banner = None
        if not info["num_batches"]:
            # Nothing of the live run may stay on screen under the "replay" badge.
            self.window.clear_views()
        self._replay_info = (path, info["schema_version"])
        self._show_replay_banner(info["num_batches"])

    def _show_replay_banner(self, num_batches: int) -> None:
        """The replay banner, with the recording's batch count as it is now (Follow latest grows it)."""
        path, schema = self._replay_info
        count = f"{num_batches} batch" if num_batches == 1 else f"{num_batches} batches"
        empty = (" — nothing to show yet: no batch is complete in it (Follow latest shows each one as it is "
                 "written)") if not num_batches else ""
        self._replay_banner = f"Replaying {path} — {count}, schema {schema}{empty}. " + self._how_back()
        self.window.banner.show_message(self._replay_banner, "info")

    def _on_batch_count(self, num_batches: int) -> None:
        """A refresh found new batches: the banner says so, unless it now shows something else."""
        banner = self.window.banner
        if (self.mode == "replay" and self._replay_banner is not None and banner.isVisible()
                and banner.kind == "info" and banner.label.text() == self._replay_banner):
            self._show_replay_banner(num_batches)

    def _how_back(self) -> str:
        """The banner's second sentence: how to get to live training, true to what is enabled."""
        w = self.window
        if w.live.loaded:
            return "Live training is paused; Run, Step or File → Back to live training (Ctrl+L) returns to it."
        if w.worker_thread.isRunning():
            return "Live training is still loading; File → Back to live training (Ctrl+L) shows it."
        return "Live training is not started; File → Start live training (Ctrl+L) starts it."

    def _on_replay_snapshot(self, snapshot) -> None:
        self.timeline.set_num_steps(snapshot.telemetry.num_steps)
        if self.replay.current_index is not None:
            self.timeline.set_batch(self.replay.current_index)
        self.window.show_snapshot(snapshot)

    def back_to_live(self) -> None:
        """Show the training run again; starts the worker if it never ran (``--open``)."""
        if not self.window.worker_thread.isRunning():
            self.window.notice.setText("Loading — starting the training worker…")
            self.window.start()
        if self.mode != "replay":
            return
        self.replay.close()
        self.timeline.pause()
        self.timeline.hide()
        self.worker.snapshot_ready.connect(self.window.show_snapshot)
        self.mode = "live"
        self.live_action.setEnabled(False)
        self.live_action.setText("Back to live training")
        self.mode_changed.emit("live")
        self.window.refresh_state()
        self.window.config_panel.leave_recorded()
        self.window.text_bridge_panel.clear()
        if self.window.banner.kind == "info":
            self.window.banner.hide()
        if self._live_snapshot is not None:
            self.window.show_snapshot(self._live_snapshot)
        else:
            self.window.clear_views()   # the replayed batch must not pass for a live one

    def _training_requested(self) -> None:
        self.back_to_live()

    def replay_only(self) -> None:
        """Started with ``--open``: the worker is not started until the user asks for it.

        If the file did not open (the banner says why), nothing is shown and nothing trains: the
        window says that, not "loading" as if live training were starting."""
        self.live_action.setEnabled(True)
        self.live_action.setText("Start live training")
        self.window.refresh_state()
        if self.mode == "live" and not self.window.worker_thread.isRunning():
            self.window.run_status.show_state("not started", "live training: not started")
            self.window.notice.setText("Live training is not started: File → Open recording… (Ctrl+O) opens "
                                       "another file, File → Start live training (Ctrl+L) starts training.")
            self.window.notice.show()

    def _on_live_snapshot(self, snapshot) -> None:
        self._live_snapshot = snapshot
        if self.record_action.isChecked():
            self.batches_recorded += 1     # the worker appends every snapshot's batch
            self._show_rec()

    def _show_rec(self) -> None:
        """A red "REC" with the file and batches written, while recording: not only a pressed button."""
        label = self.window.run_status.labels["rec"]
        on = self.record_action.isChecked() and self.recording_path is not None
        label.setVisible(on)
        if on:
            label.setText(f"REC {self.recording_path.name} · {self.batches_recorded} batches")
            label.setToolTip(f"Recording every trained batch to {self.recording_path}")

    def start_folder(self) -> str:
        """Where Open, Record and Export dialogs start: the folder last exported to or opened from,
        else the last recording's, else ./runs where it exists, else the user's Documents folder
        (else home) — never the working directory itself, which is often the source tree."""
        if self.last_folder is not None and self.last_folder.is_dir():
            return str(self.last_folder)
        if self.recording_path is not None and self.recording_path.parent.is_dir():
            return str(self.recording_path.parent)
        runs = Path.cwd() / "runs"
        if runs.is_dir():
            return str(runs)
        documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
        if documents and Path(documents).is_dir():
            return documents
        return str(Path.home())

    def _on_model_rebuilt(self, _info: dict) -> None:
        """The last live batch belonged to the old model: "back to live" must not show it."""
        self._live_snapshot = None

    # ------------------------------------------------------------------ export
    def export(self) -> None:
        snapshot = self.window.latest_snapshot
        if snapshot is None:
            self.window.show_error("Nothing to export yet: no batch is shown")
            return
        render = self.window.lattice_view.render_image
        step = snapshot.report.step if snapshot.report is not None else (self.replay.current_index or 0) + 1
        request = self._ask_export(self.window, Path(self.start_folder()) / f"energy-flow-batch{step}", True)
        if request is None:
            return
        config, provenance = self._export_metadata()
        try:
            # Never export over the recording being replayed or being written (its reader or
            # writer would keep a deleted file, and the run's batches would be lost).
            recording = self.recording_path if self.record_action.isChecked() else None
            check_distinct({"the open recording": self.replay.path, "the recording being written": recording,
                            "the export": request.h5_path})
            written = write_export(request, snapshot, config, provenance, render)
        except (OSError, ValueError) as exc:
            self.window.show_error(f"Export failed: {exc}. Nothing was replaced; training carries on.")
            return
        if written:
            self.last_folder = Path(written[0]).parent
        self.window.banner.show_message("Exported " + ", ".join(str(p) for p in written), "info")

    def _export_metadata(self) -> tuple[dict, dict]:
        if self.mode == "replay":
            return self.replay.config, self.replay.provenance
        live = self.window.live      # what the worker's signals said: its trainer is not read here
        return live.config.to_dict(), live.provenance()

    # ------------------------------------------------------------------ record
    def _record_toggled(self, on: bool) -> None:
        if not on:
            self.stop_record_requested.emit()
            return
        path = self._ask_record(self.window)
        if not path or not self.record_target_ok(Path(path)):
            self._set_record_checked(False)
            return
        self.record_requested.emit(path)

    def record_target_ok(self, path: Path) -> bool:
        """May a new recording be written at ``path``? A file of another kind is refused at once,
        with the writer's own reason; a recording is replaced only if the user says so."""
        if not path.exists():
            return True
        try:
            refuse_to_replace_non_recording(path)
        except OSError as exc:
            self.window.show_error(f"Not recording: {exc} (pick another file name)")
            return False
        if not is_recording(path):
            return True      # an empty file: nothing in it to lose
        try:
            with open_recording(path) as old:
                held = f"{old.num_batches} batch" if old.num_batches == 1 else f"{old.num_batches} batches"
        except (RecordingError, OSError) as exc:
            held = f"its batches cannot be counted: {exc}"
        return self.window.confirm_question(
            "Replace the recording",
            f"{path} is a recording ({held}). Recording to it replaces it: its batches are lost. Replace it?")

    def _on_recording_changed(self, on: bool, text: str) -> None:
        self._set_record_checked(on)
        self.recording_path = Path(text) if on else self.recording_path
        self.batches_recorded = 0
        self.last_recording_note = None if on else text
        self._show_rec()
        self.record_action.setToolTip(f"Recording to {text}" if on else "Append every trained batch to a "
                                      "recording file (Ctrl+Shift+R)")
        self.window.statusBar().showMessage(f"Recording to {text}" if on else f"Recording off: {text}", 10_000)
        if not on and text.startswith("cannot"):
            self.window.show_error(text)

    def _set_record_checked(self, on: bool) -> None:
        self.record_action.blockSignals(True)
        self.record_action.setChecked(on)
        self.record_action.blockSignals(False)

    # ------------------------------------------------------------------ drops
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if obj is self.window and event.type() in (QEvent.Type.DragEnter, QEvent.Type.Drop):
            paths = [u.toLocalFile() for u in event.mimeData().urls()] if event.mimeData().hasUrls() else []
            paths = [p for p in paths if Path(p).suffix.lower() in RECORDING_SUFFIXES]
            if not paths:
                return False
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            if event.type() == QEvent.Type.Drop:
                self.open_recording(paths[0])
            return True
        return super().eventFilter(obj, event)
