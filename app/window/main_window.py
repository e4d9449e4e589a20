"""MainWindow: the lattice view, the panels as docks, the training controls and the status bar.

The window never computes: training runs in a :class:`~app.sources.worker.TrainingWorker` in its own
QThread, driven through queued signals. Snapshots may arrive faster than they can be drawn
(the tiny preset trains ~15 batches/s), so the window keeps only the newest one; a ~30 Hz frame
timer hands it to one view per frame (see ``_on_frame``) and older ones are dropped unseen.
The propagation-step slider is coalesced the same way.

Failures are shown in a banner above the view, never in a blocking dialog, and never take the
window down: a panel that raises is reported in the banner and the others still update.

The window knows its panels through :mod:`app.panels.registry` (one spec each) and draws them
through the :class:`~app.panels.base.SnapshotView` protocol; it knows the live run only through
the worker's signals (:class:`~app.window.live_run.LiveRun`), never by reading the worker's
trainer or dataset, which belong to the worker's thread.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from PyQt6.QtCore import QThread, QTimer, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QAction, QCloseEvent, QKeySequence, QResizeEvent
from PyQt6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow, QMessageBox, QVBoxLayout, QWidget

from app.panels.base import SnapshotView
from app.panels.config_panel import ConfigPanel
from app.panels.health_panel import HealthPanel
from app.panels.registry import CONFIG, HEALTH, TEXT_BRIDGE, TRAINING, WINDOW_PANELS, PanelSpec
from app.panels.text_bridge_panel import TextBridgePanel
from app.panels.training_panel import TrainingPanel
from app.snapshot import Snapshot
from app.sources.worker import TrainingWorker
from app.view.lattice_view import LatticeView
from app.window.checkpoint_controls import CheckpointController, unsaved_text
from app.window.close_guard import CloseGuard
from app.window.cost_notice import show_cost
from app.window.dock_layout import (MIN_WINDOW, apply_default_layout, fill_view_menu, fit_column, make_dock,
                                     scroll_area, stacks_fit)
from app.window.failures import MessageBanner, build_panel
from app.window.help import add_help_menu
from app.window.icons import icon
from app.window.inspection import InspectionController
from app.window.live_run import LiveRun
from app.window.recording_controls import RecordingController
from app.window.status_bar import RunStatusBar
from app.window.training_toolbar import TrainingToolbar

log = logging.getLogger(__name__)

WINDOW_TITLE = "Energy Flow Studio"
#: Redraw at most this often (coalescing timer interval, ms): ~30 Hz.
FRAME_INTERVAL_MS = 33
#: Joining the worker thread on close waits at most this long.
SHUTDOWN_TIMEOUT_MS = 5000
#: A resize is answered (the side column refitted) once the size has been still this long (ms).
RESIZE_SETTLE_MS = 150


class MainWindow(QMainWindow):
    """Hosts the worker's thread; see the module docstring for the drawing policy.

    The constructor moves ``worker`` to :attr:`worker_thread` (not started yet); :meth:`start`
    starts that thread, which runs ``worker.load`` first.
    """

    #: The snapshot the window just drew (after coalescing): hook exports/recordings here.
    snapshot_shown = pyqtSignal(object)
    #: The propagation step every view shows, whenever it changes (by the user or a new batch).
    step_changed = pyqtSignal(int)
    # Queued requests to the worker (it lives in another thread).
    run_requested = pyqtSignal()
    pause_requested = pyqtSignal()
    step_requested = pyqtSignal()
    reset_requested = pyqtSignal()
    config_requested = pyqtSignal(object)

    def __init__(self, worker: TrainingWorker, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(WINDOW_TITLE)
        self.setMinimumSize(*MIN_WINDOW)
        self.worker = worker
        self.live = LiveRun(worker.config)
        self._batch_phase: tuple[int, str] = (0, "done")   # the batch in flight and its phase
        self.worker_thread = QThread(self)
        self.worker_thread.setObjectName("training-worker")
        worker.moveToThread(self.worker_thread)
        self.worker_thread.started.connect(worker.load)
        self.worker_state = "loading"
        self._latest: Snapshot | None = None      # newest snapshot received
        self._shown: Snapshot | None = None       # snapshot the panels currently show
        self._snapshot_dirty = False
        self._round: list[list[tuple[str, SnapshotView]]] = []   # views still to be given ``_shown``, by frame
        self._step_dirty = False
        self._follow_last_step = True
        self.snapshots_received = 0
        self.snapshots_drawn = 0
        self._panel_failures: set[str] = set()
        #: Asks the user a yes/no question (title, text); tests replace it.
        self.confirm: Callable[[str, str], bool] = self._ask
        self.panels: dict[str, QWidget] = {}        # dock title → panel, for lookups (menus, tests)
        self.docks: dict[str, QDockWidget] = {}
        self._dock_specs: list[tuple[PanelSpec, QDockWidget]] = []
        #: Everything that draws snapshots, the 3D view first: (name for error messages, view).
        self._views: list[tuple[str, SnapshotView]] = []
        self._layout_applied = False
        self._layout_stacked = False

        self._build_central()
        self._build_panels()
        self._build_controls()
        self.run_status = RunStatusBar(self, self)

        self._frame_timer = QTimer(self)
        self._frame_timer.setInterval(FRAME_INTERVAL_MS)
        self._frame_timer.timeout.connect(self._on_frame)
        self._frame_timer.start()
        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(RESIZE_SETTLE_MS)
        self._resize_timer.timeout.connect(self._fit_layout)
        self.run_status.follow_view_speed(self.lattice_view)
        self.recordings = RecordingController(self)
        self.checkpoints = CheckpointController(self, self.recordings.file_menu, self.live, self.confirm_question,
                                                self.recordings.start_folder)
        self.config_panel.unsaved_note = self.checkpoints.unsaved_note     # Apply says what it loses
        self.close_guard = CloseGuard(self, self.checkpoints, self.pause_requested.emit, self.banner.show_message)
        training = self.panels[TRAINING.title]
        self.inspection = InspectionController(self, self, self.menuBar().addMenu("&Inspect"),
                                               self.lattice_view.selection,
                                               training if isinstance(training, TrainingPanel) else None,
                                               self.shown_config, self.statusBar().showMessage)
        self._build_menus()
        self._connect_worker()
        self._set_state("loading")

    # ------------------------------------------------------------------ construction
    def _build_central(self) -> None:
        self.banner = MessageBanner()
        self.notice = QLabel()
        self.notice.setStyleSheet("color: #6ba8ff; padding: 2px 6px;")
        self.notice.setWordWrap(True)
        self.lattice_view = LatticeView()
        self._views.append(("Lattice view", self.lattice_view))
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addWidget(self.notice)
        layout.addWidget(self.lattice_view, 1)
        self.setCentralWidget(central)

    def _build_panels(self) -> None:
        """Every panel of :data:`WINDOW_PANELS` in a dock (where they go: ``dock_layout``)."""
        self.health_panel, self.text_bridge_panel, self.config_panel = HealthPanel(), TextBridgePanel(), ConfigPanel()
        own: dict[PanelSpec, QWidget] = {HEALTH: self.health_panel, TEXT_BRIDGE: self.text_bridge_panel,
                                         CONFIG: self.config_panel}     # the window talks to these
        for spec in WINDOW_PANELS:
            self.add_panel(spec, own[spec] if spec in own else build_panel(spec))

    def add_panel(self, spec: PanelSpec, widget: QWidget) -> QDockWidget:
        """Dock ``widget`` as ``spec`` says; it takes every snapshot the window draws if the spec
        says it draws snapshots (and it is a :class:`SnapshotView`), and is listed in the View menu."""
        dock = make_dock(self, spec, widget)
        self.docks[spec.title] = dock
        self.panels[spec.title] = widget
        self._dock_specs.append((spec, dock))
        if spec.draws_snapshots and isinstance(widget, SnapshotView):
            self._views.append((spec.title, widget))
        return dock

    def raise_panel(self, spec: PanelSpec) -> None:
        """Bring ``spec``'s dock to the front of its tab stack."""
        self.docks[spec.title].raise_()

    def dock_content(self, spec: PanelSpec) -> QWidget:
        """What ``spec``'s dock shows (its scroll area, for a side panel)."""
        return scroll_area(self.docks[spec.title]) or self.docks[spec.title].widget()

    def reset_layout(self) -> None:
        """Every dock shown again, in its default place and size for the current window size."""
        apply_default_layout(self, self._dock_specs)
        self._layout_applied = True
        self._layout_stacked = stacks_fit(self.height())

    def _fit_layout(self) -> None:
        """After a resize: the default layout again where the column's stacking should change,
        else the column back to its share of the width (the user's arrangement is kept)."""
        if not self._layout_applied:
            return
        if stacks_fit(self.height()) != self._layout_stacked:
            self.reset_layout()
        else:
            fit_column(self, self._dock_specs)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not self._layout_applied:      # the first show: the window's size is known now
            self.reset_layout()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._resize_timer.start()

    def _build_controls(self) -> None:
        bar = self.toolbar = TrainingToolbar(self)
        self.addToolBar(bar)
        bar.run_requested.connect(self.run_requested.emit)
        bar.pause_requested.connect(self.pause_requested.emit)
        bar.step_requested.connect(self.step_requested.emit)
        bar.reset_requested.connect(self.request_reset)
        bar.toggle_requested.connect(self.toggle_run)
        self.run_action, self.pause_action = bar.run_action, bar.pause_action
        self.step_action, self.reset_action, self.toggle_run_action = bar.step_action, bar.reset_action, \
            bar.toggle_run_action
        self.play_action, self.step_slider, self.step_label = bar.play_action, bar.step_slider, bar.step_label
        self.step_slider.valueChanged.connect(self._slider_moved)

    def _build_menus(self) -> None:
        """File → Quit after the recording actions, View (every dock, reset layout), Help."""
        file_menu = self.recordings.file_menu
        file_menu.addSeparator()
        self.quit_action = QAction(icon("quit"), "Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setToolTip("Close the window; asks first if trained batches are not saved (Ctrl+Q)")
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)
        self.view_menu = self.menuBar().addMenu("&View")
        fill_view_menu(self.view_menu, self._dock_specs, self.reset_layout)
        add_help_menu(self, lambda: self.live.device if self.live.loaded else "not loaded (live training not started)")

    def _connect_worker(self) -> None:
        w = self.worker
        self.run_requested.connect(w.run)
        self.pause_requested.connect(w.pause)
        self.step_requested.connect(w.step)
        self.reset_requested.connect(w.reset)
        self.config_requested.connect(w.apply_config)
        self.config_panel.config_requested.connect(self.config_requested.emit)
        w.snapshot_ready.connect(self.show_snapshot)
        w.state_changed.connect(self._set_state)
        w.status.connect(self._on_status)
        w.error.connect(self.show_error)
        w.loaded.connect(self._on_loaded)
        w.resources.connect(self.run_status.show_resources)
        w.phase_changed.connect(self._on_phase)
        w.step_progress.connect(self.run_status.show_progress)
        w.batches_trained.connect(self._on_batches_trained)
        w.config_unbuilt.connect(lambda config: self.config_panel.set_config(config, in_effect=False))
        w.checkpoint_saved.connect(self.live.on_saved)
        self.close_guard.watch(w.checkpoint_saved, w.error)
        w.cost_estimated.connect(lambda cost: show_cost(self, cost))
        self.checkpoints.save_requested.connect(w.save_checkpoint)
        self.checkpoints.open_requested.connect(w.open_checkpoint)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (it loads data and model, then waits for commands)."""
        self.worker_thread.start()

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Stop training and join the worker thread; True if it ended within ``timeout_ms``."""
        self._frame_timer.stop()
        self.toolbar.stop_playing()
        if not self.worker_thread.isRunning():
            return True
        self.worker.cancel()
        self.worker_thread.quit()
        if self.worker_thread.wait(timeout_ms):
            self.worker.close_recording("the app closed")  # its thread has ended: safe from here
            return True
        log.error("the training thread did not stop within %d ms (state %s)", timeout_ms, self.worker_state)
        return False

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        """Ask before anything is lost (app/window/close_guard.py); then stop and join the worker."""
        batch, phase = self._batch_phase
        if not self.close_guard.may_close(self.worker_thread.isRunning(), batch, phase):
            event.ignore()
            return
        if phase in ("forward", "backward"):   # abandoned within one propagation step: say so meanwhile
            self.banner.show_message(f"Closing: abandoning batch {batch} (within one propagation step)…", "info")
            QApplication.processEvents()
        self.shutdown()
        super().closeEvent(event)

    # ------------------------------------------------------------------ worker → window
    @pyqtSlot(object)
    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Keep only the newest snapshot; the frame timer draws it (replays may call this too)."""
        self._latest = snapshot
        self._snapshot_dirty = True
        self.snapshots_received += 1

    @pyqtSlot(str)
    def show_error(self, message: str) -> None:
        self.banner.show_message(message, "error")
        self.statusBar().showMessage(message, 10_000)

    @pyqtSlot(str)
    def _on_status(self, message: str) -> None:
        self.statusBar().showMessage(message, 8_000)
        if self.worker_state == "loading":
            self.notice.setText(f"Loading — {message}")

    @pyqtSlot(str)
    def _set_state(self, state: str) -> None:
        self.worker_state = state
        loaded = self.live.loaded
        running = state == "running"
        self.run_action.setEnabled(loaded and not running)
        self.pause_action.setEnabled(running)
        self.step_action.setEnabled(loaded)
        self.reset_action.setEnabled(state != "loading")
        self.checkpoints.set_enabled(loaded)
        self.toggle_run_action.setEnabled(loaded)
        self.notice.setVisible(state == "loading" and self.showing_live)
        if state == "loading" and not self.notice.text():
            self.notice.setText("Loading — starting the training worker…")
        if running and self.banner.kind == "error":
            self.banner.hide()
        # While a recording is shown the badge says so; the live run's state is its tooltip.
        self.run_status.show_state(state if self.showing_live else "replay",
                                   f"live training: {self.live_state_text()}")
        self.run_status.set_live(self.showing_live)

    @pyqtSlot(int, str, float)
    def _on_phase(self, batch: int, phase: str, seconds: float) -> None:
        self._batch_phase = (batch, phase)
        self.run_status.show_phase(batch, phase, seconds)

    @pyqtSlot(int)
    def _on_batches_trained(self, batches: int) -> None:
        self.live.batches_trained = batches

    @pyqtSlot(dict)
    def _on_loaded(self, info: dict) -> None:
        self.live.on_loaded(info)
        self.run_status.show_loaded(info)
        self.config_panel.set_config(info["config"])
        self.text_bridge_panel.set_bridge_info(info["text_bridge"], info["text_bridge_available"])
        self.setWindowTitle(f"{WINDOW_TITLE} — {info['config'].lattice_width}×{info['config'].lattice_height}"
                            f"×{info['config'].lattice_depth}")
        self._set_state(self.worker_state)
        if self.showing_live:
            self.clear_views()

    def refresh_state(self) -> None:
        """Redraw the state badge and the controls (e.g. after switching to or from a replay)."""
        self._set_state(self.worker_state)

    def live_state_text(self) -> str:
        """The live run's state in words, including "not started" (a window opened with --open)."""
        if not self.worker_thread.isRunning() and not self.live.loaded:
            return "not started"
        return self.worker_state

    @property
    def showing_live(self) -> bool:
        """True unless a recording is being replayed in this window."""
        return self.recordings.mode == "live"

    def clear_views(self) -> None:
        """Every view back to "no batch yet", at once: a rebuilt model has trained nothing.

        Called when the worker (re)built the model (load, Reset, Apply config). Snapshots of the
        old model that are still waiting to be drawn are dropped: they arrived before ``loaded``
        (the worker emits both from one thread, so they are delivered in order).
        """
        self._latest = self._shown = None
        self._snapshot_dirty = self._step_dirty = False
        self._round = []
        self._follow_last_step = True
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, 0)
        self.step_slider.blockSignals(False)
        self.step_label.setText(" – / – ")
        for name, view in self._views:
            self._safely(name, "clear", view.clear)
        self.run_status.clear_batch()

    # ------------------------------------------------------------------ controls
    def request_reset(self) -> None:
        """Reset after the user confirmed it: one keystroke must not discard trained weights.

        Apply config asks before it rebuilds the model; Reset discards as much, so it asks too
        (nothing to lose before the first batch: then it resets at once).
        """
        unsaved = self.live.unsaved_batches
        if unsaved > 0 and not self.confirm(
                "Reset the model",
                f"Discard the weights of {unsaved_text(unsaved)} (not saved) and the run's history, and start "
                "again from fresh weights at batch 0?"):
            self.statusBar().showMessage("Reset cancelled: the model is unchanged", 5_000)
            return
        self.reset_requested.emit()

    def confirm_question(self, title: str, text: str) -> bool:
        """Ask through :attr:`confirm` (which tests replace) — looked up at each question."""
        return self.confirm(title, text)

    def _ask(self, title: str, text: str) -> bool:
        yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
        return QMessageBox.question(self, title, text, yes | no, no) == yes

    def toggle_run(self) -> None:
        if self.worker_state == "running":
            self.pause_requested.emit()
        else:
            self.run_requested.emit()

    def _slider_moved(self, value: int) -> None:
        self._follow_last_step = value >= self.step_slider.maximum()
        self._step_dirty = True
        self._update_step_label()
        self.step_changed.emit(value)

    @property
    def current_step(self) -> int:
        return self.step_slider.value()

    def shown_config(self) -> dict:
        """The config of the run on screen: the replayed file's, or the live run's."""
        if self._shown is not None and self._shown.source != "live":
            return self.recordings.replay.config
        return self.live.config.to_dict()

    @property
    def latest_snapshot(self) -> Snapshot | None:
        """The snapshot being drawn (every view shows it once ``snapshot_shown`` fired)."""
        return self._shown

    # ------------------------------------------------------------------ drawing
    def _on_frame(self) -> None:
        """One unit of drawing per frame: one view takes the round's snapshot, or a step change.

        A round starts from the newest snapshot (older ones are dropped) and hands it to one
        view per frame, so the event loop gets control back between views instead of being
        blocked for the sum of all their redraws (on software OpenGL under load, a single
        view's rebuild and repaint can take a few hundred ms). The next round starts, from the
        then-newest snapshot, only when every view shows this one, so the panels never lag
        behind one another by more than one round. The Text bridge shares the 3D view's frame
        (it only sets text): the two name the batch they show, and must never name two.
        """
        if not self._round and self._snapshot_dirty and self._latest is not None:
            self._start_round(self._latest)
        if self._round:
            shown, step = self._shown, self.step_slider.value()
            for name, view in self._round.pop(0):      # one view a frame, or the 3D view and its companion
                self._safely(name, "set_snapshot", lambda v=view: v.set_snapshot(shown))
                self._safely(name, "set_step", lambda v=view: v.set_step(step))
            if not self._round:
                self.snapshots_drawn += 1
                self.snapshot_shown.emit(self._shown)
            return
        if self._step_dirty and self._shown is not None:
            self._step_dirty = False
            step = self.step_slider.value()
            for name, view in self._views:
                self._safely(name, "set_step", lambda v=view: v.set_step(step))
            self._update_status()

    def _start_round(self, snapshot: Snapshot) -> None:
        self._snapshot_dirty = False
        self._shown = snapshot
        steps = snapshot.telemetry.num_steps
        follow = self._follow_last_step and not self.toolbar.is_playing
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, steps)
        if follow:
            self.step_slider.setValue(steps)
        self.step_slider.blockSignals(False)
        # The Text bridge is drawn in the 3D view's frame: both name their batch, and the same one.
        bridge = [v for v in self._views if v[1] is self.text_bridge_panel]
        self._round = [self._views[:1] + bridge] + [[v] for v in self._views[1:] if v not in bridge]
        self._update_step_label()
        self._update_status()
        self.step_changed.emit(self.step_slider.value())

    def _safely(self, name: str, method: str, call: Callable[[], None]) -> None:
        """Run one view's ``call``; one that raises is reported in the banner, not fatal."""
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a broken panel must not stop the others
            key = f"{name}.{method}"
            log.error("%s failed:\n%s", key, traceback.format_exc())
            if key not in self._panel_failures:
                self._panel_failures.add(key)
                self.show_error(f"{name} could not draw this batch ({method}): {type(exc).__name__}: {exc}")

    def _update_step_label(self) -> None:
        self.toolbar.show_step(held=not self._follow_last_step)

    def _update_status(self) -> None:
        if self._shown is not None:
            self.run_status.show_batch(self._shown, self.step_slider.value())
