"""MainWindow: the lattice view, the panels as docks, the training controls and the status bar.

The window never computes: training runs in a :class:`~app.sources.worker.TrainingWorker` in its own
QThread, driven through queued signals. Snapshots may arrive faster than they can be drawn
(the tiny preset trains ~15 batches/s), so the window keeps only the newest one; a ~30 Hz frame
timer hands it to one view per frame (see ``_on_frame``) and older ones are dropped unseen.
The propagation-step slider is coalesced the same way.

Failures are shown in a banner above the view, never in a blocking dialog, and never take the
window down: a panel that raises is reported in the banner and the others still update.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from PyQt6.QtCore import QThread, Qt, QTimer, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QAction, QCloseEvent, QKeySequence
from PyQt6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMessageBox, QSlider, QToolBar, QVBoxLayout,
                             QWidget)

from app.panels.config_panel import ConfigPanel
from app.panels.health_panel import HealthPanel
from app.panels.text_bridge_panel import TextBridgePanel
from app.snapshot import Snapshot
from app.sources.worker import TrainingWorker
from app.window.dock_layout import add_dock, apply_default_layout, fill_view_menu
from app.window.failures import MessageBanner, make_widget
from app.window.icons import icon
from app.window.status_bar import RunStatusBar

log = logging.getLogger(__name__)

WINDOW_TITLE = "Energy Flow Studio"
#: Redraw at most this often (coalescing timer interval, ms): ~30 Hz.
FRAME_INTERVAL_MS = 33
#: Propagation-step animation: one step per this many ms while "Play steps" is on.
PLAY_INTERVAL_MS = 150
#: Joining the worker thread on close waits at most this long.
SHUTDOWN_TIMEOUT_MS = 5000

#: Panels written elsewhere, embedded as docks: (dock title, module, class, dock area).
EXTERNAL_PANELS = (
    ("Training", "app.panels.training_panel", "TrainingPanel", "right"),
    ("Spawn", "app.panels.spawn_panel", "SpawnPanel", "bottom"),
    ("Energy", "app.panels.energy_panel", "EnergyPanel", "bottom"),
    ("Displacement", "app.panels.displacement_panel", "DisplacementPanel", "bottom"),
    ("Coverage", "app.panels.coverage_panel", "CoveragePanel", "bottom"),
)


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
    stop_requested = pyqtSignal()
    reset_requested = pyqtSignal()
    config_requested = pyqtSignal(object)

    def __init__(self, worker: TrainingWorker, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(WINDOW_TITLE)
        self.worker = worker
        self.worker_thread = QThread(self)
        self.worker_thread.setObjectName("training-worker")
        worker.moveToThread(self.worker_thread)
        self.worker_thread.started.connect(worker.load)
        self.worker_state = "loading"
        self._latest: Snapshot | None = None      # newest snapshot received
        self._shown: Snapshot | None = None       # snapshot the panels currently show
        self._snapshot_dirty = False
        self._round: list[str] = []               # views still to be given ``_shown`` this round
        self._step_dirty = False
        self._follow_last_step = True
        self.snapshots_received = 0
        self.snapshots_drawn = 0
        self._panel_failures: set[str] = set()
        #: Asks the user a yes/no question (title, text); tests replace it.
        self.confirm: Callable[[str, str], bool] = self._ask

        self._build_central()
        self._build_panels()
        self._build_controls()
        self.run_status = RunStatusBar(self.statusBar(), self)
        self._connect_worker()

        self._frame_timer = QTimer(self)
        self._frame_timer.setInterval(FRAME_INTERVAL_MS)
        self._frame_timer.timeout.connect(self._on_frame)
        self._frame_timer.start()
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(PLAY_INTERVAL_MS)
        self._play_timer.timeout.connect(self._advance_play)
        self.run_status.follow_view_speed(self.lattice_view)
        self._set_state("loading")
        from app.window.recording_controls import RecordingController
        self.recordings = RecordingController(self)
        self._build_menus()
        from app.window.inspection import InspectionController
        self.inspection = InspectionController(self)   # Inspector, Diagnostics and Compare docks, Inspect menu

    # ------------------------------------------------------------------ construction
    def _build_central(self) -> None:
        self.banner = MessageBanner()
        self.notice = QLabel()
        self.notice.setStyleSheet("color: #6ba8ff; padding: 2px 6px;")
        self.notice.setWordWrap(True)
        self.lattice_view = make_widget("app.view.lattice_view", "LatticeView", "3D lattice view")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addWidget(self.notice)
        layout.addWidget(self.lattice_view, 1)
        self.setCentralWidget(central)

    def _build_panels(self) -> None:
        """Every panel in a dock; ``self.panels`` maps the dock title to the panel widget.

        Where the docks go is :mod:`app.window.dock_layout`'s business (applied on first show).
        """
        self.health_panel = HealthPanel()
        self.text_bridge_panel = TextBridgePanel()
        self.config_panel = ConfigPanel()
        self.panels: dict[str, QWidget] = {}
        self.docks: dict[str, QDockWidget] = {}
        self.dock_panel("Health", self.health_panel, "top", scroll=False)
        for title, module, cls, area in EXTERNAL_PANELS:
            self.dock_panel(title, make_widget(module, cls, f"{title} panel"), area)
        self.dock_panel("Text bridge", self.text_bridge_panel, "right")
        self.dock_panel("Config", self.config_panel, "right")
        self.docks["Health"].setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        self.docks["Health"].setTitleBarWidget(QWidget())  # a strip, not a captioned panel
        self._layout_applied = False

    def dock_panel(self, title: str, widget: QWidget, area: str, scroll: bool = True) -> None:
        """Put ``widget`` in a dock titled ``title``; it then takes every snapshot the window draws
        if it has ``set_snapshot`` (see ``_views``) and is listed in the View menu."""
        self.docks[title] = add_dock(self, title, widget, area, scroll)
        self.panels[title] = widget

    def reset_layout(self) -> None:
        """Every dock shown again, in its default place and size for the current window size."""
        apply_default_layout(self, self.docks)
        inspection = getattr(self, "inspection", None)
        if inspection is not None:        # its docks join the default layout's tab groups
            inspection.place_docks()
        self._layout_applied = True

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not self._layout_applied:      # the first show: the window's size is known now
            self.reset_layout()

    def _build_controls(self) -> None:
        bar = QToolBar("Training")
        bar.setObjectName("training-toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        self.toolbar = bar

        def action(text: str, tip: str, slot, shortcuts: tuple[str, ...] = (), icon_name: str | None = None) -> QAction:
            act = QAction(icon(icon_name), text, self) if icon_name else QAction(text, self)
            if shortcuts:
                act.setShortcuts([QKeySequence(s) for s in shortcuts])
                tip = f"{tip} ({' or '.join(shortcuts)})"
            act.setToolTip(tip)
            act.triggered.connect(slot)
            return act

        self.run_action = action("Run", "Train continuously; Space toggles Run/Pause", self.run_requested.emit,
                                 icon_name="run")
        self.pause_action = action("Pause", "Pause after the batch in flight; Space toggles Run/Pause",
                                   self.pause_requested.emit, icon_name="pause")
        self.step_action = action("Step", "Train exactly one batch", self.step_requested.emit, ("S",), "step")
        self.stop_action = action("Stop", "Stop training after the batch in flight", self.stop_requested.emit,
                                  ("Esc",), "stop")
        self.reset_action = action("Reset", "Rebuild the model from the current config (batch 0); asks first",
                                   self.request_reset, ("Ctrl+R",), "reset")
        for act in (self.run_action, self.pause_action, self.step_action, self.stop_action, self.reset_action):
            bar.addAction(act)
        self.toggle_run_action = action("Run/Pause", "Toggle Run/Pause", self.toggle_run, ("Space",))
        self.addAction(self.toggle_run_action)
        bar.addSeparator()

        self.play_action = action("Play steps", "Animate the propagation steps of the shown batch",
                                  self._toggle_play, ("P",), "play")
        self.play_action.setCheckable(True)
        bar.addAction(self.play_action)
        self.step_slider = QSlider(Qt.Orientation.Horizontal)
        self.step_slider.setRange(0, 0)
        self.step_slider.setMinimumWidth(160)
        self.step_slider.setToolTip("Propagation step of the shown batch (0 = placement on the start plane); "
                                    "all panels follow it. Left/Right: previous/next step")
        self.step_slider.valueChanged.connect(self._slider_moved)
        bar.addWidget(QLabel("  Step "))
        bar.addWidget(self.step_slider)
        self.step_label = QLabel(" – / – ")
        self.step_label.setMinimumWidth(70)
        bar.addWidget(self.step_label)
        self.prev_step_action = action("prev step", "Previous propagation step",
                                       lambda: self.step_slider.setValue(self.step_slider.value() - 1), ("Left",))
        self.next_step_action = action("next step", "Next propagation step",
                                       lambda: self.step_slider.setValue(self.step_slider.value() + 1), ("Right",))
        self.addAction(self.prev_step_action)
        self.addAction(self.next_step_action)

    def _build_menus(self) -> None:
        """File → Quit after the recording actions, View (every dock, reset layout), Help."""
        file_menu = self.recordings.file_menu
        file_menu.addSeparator()
        self.quit_action = QAction(icon("quit"), "Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setToolTip("Stop training (the model is not saved) and close the window (Ctrl+Q)")
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)
        self.view_menu = self.menuBar().addMenu("&View")
        fill_view_menu(self.view_menu, self.docks, self.reset_layout)
        help_menu = self.menuBar().addMenu("&Help")
        from app.window.help import about_text, shortcuts_text
        shortcuts = help_menu.addAction("Keyboard shortcuts")
        shortcuts.setShortcut(QKeySequence("F1"))
        shortcuts.triggered.connect(lambda: QMessageBox.information(self, "Keyboard shortcuts",
                                                                    shortcuts_text(self)))
        about = help_menu.addAction("About Energy Flow Studio")
        about.triggered.connect(lambda: QMessageBox.about(self, "About Energy Flow Studio", about_text(self)))

    def _connect_worker(self) -> None:
        w = self.worker
        self.run_requested.connect(w.run)
        self.pause_requested.connect(w.pause)
        self.step_requested.connect(w.step)
        self.stop_requested.connect(w.stop)
        self.reset_requested.connect(w.reset)
        self.config_requested.connect(w.apply_config)
        self.config_panel.config_requested.connect(self.config_requested.emit)
        w.snapshot_ready.connect(self.show_snapshot)
        w.state_changed.connect(self._set_state)
        w.status.connect(self._on_status)
        w.error.connect(self.show_error)
        w.loaded.connect(self._on_loaded)
        w.resources.connect(self.run_status.show_resources)
        w.phase_changed.connect(self.run_status.show_phase)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (it loads data and model, then waits for commands)."""
        self.worker_thread.start()

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Stop training and join the worker thread; True if it ended within ``timeout_ms``."""
        self._frame_timer.stop()
        self._play_timer.stop()
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
        loaded = self.worker.trainer is not None
        running = state == "running"
        self.run_action.setEnabled(loaded and not running)
        self.pause_action.setEnabled(running)
        self.step_action.setEnabled(loaded)
        self.stop_action.setEnabled(loaded and state in ("running", "paused"))
        self.reset_action.setEnabled(state != "loading")
        if state == "error" and not loaded and self.worker.dataset is not None:
            # The data loaded but no model could be built: let the user fix the config.
            self.config_panel.set_config(self.worker.config, in_effect=False)
        self.toggle_run_action.setEnabled(loaded)
        self.notice.setVisible(state == "loading" and self.showing_live)
        if state == "loading" and not self.notice.text():
            self.notice.setText("Loading — starting the training worker…")
        if running and self.banner.kind == "error":
            self.banner.hide()
        # While a recording is shown the badge says so; the live run's state is its tooltip.
        self.run_status.show_state(state if self.showing_live else "replay",
                                   f"live training: {self.live_state_text()}")

    @pyqtSlot(dict)
    def _on_loaded(self, info: dict) -> None:
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
        if not self.worker_thread.isRunning() and self.worker.trainer is None:
            return "not started"
        return self.worker_state

    @property
    def showing_live(self) -> bool:
        """True unless a recording is being replayed in this window."""
        recordings = getattr(self, "recordings", None)
        return recordings is None or recordings.mode == "live"

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
        for name, view in self._views().items():
            if hasattr(view, "clear"):
                self._call(name, "clear", None)
        self.run_status.clear_batch()

    # ------------------------------------------------------------------ controls
    def request_reset(self) -> None:
        """Reset after the user confirmed it: one keystroke must not discard trained weights.

        Apply config asks before it rebuilds the model; Reset discards as much, so it asks too
        (nothing to lose before the first batch: then it resets at once).
        """
        trainer = self.worker.trainer
        trained = trainer.step_count if trainer is not None else 0
        if trained > 0 and not self.confirm(
                "Reset the model",
                f"Discard the weights of {trained} trained batch{'es' if trained != 1 else ''} and the run's "
                "history, and start again from fresh weights at batch 0?"):
            self.statusBar().showMessage("Reset cancelled: the model is unchanged", 5_000)
            return
        self.reset_requested.emit()

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def toggle_run(self) -> None:
        if self.worker_state == "running":
            self.pause_requested.emit()
        else:
            self.run_requested.emit()

    def _toggle_play(self, on: bool) -> None:
        if on:
            if self.step_slider.value() >= self.step_slider.maximum():
                self.step_slider.setValue(0)
            self._play_timer.start()
        else:
            self._play_timer.stop()

    def _advance_play(self) -> None:
        top = self.step_slider.maximum()
        value = self.step_slider.value()
        self.step_slider.setValue(0 if value >= top else value + 1)

    def _slider_moved(self, value: int) -> None:
        self._follow_last_step = value >= self.step_slider.maximum()
        self._step_dirty = True
        self._update_step_label()
        self.step_changed.emit(value)

    @property
    def current_step(self) -> int:
        return self.step_slider.value()

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
        behind one another by more than one round.
        """
        if not self._round and self._snapshot_dirty and self._latest is not None:
            self._start_round(self._latest)
        if self._round:
            name = self._round.pop(0)
            self._call(name, "set_snapshot", self._shown)
            self._call(name, "set_step", self.step_slider.value())
            if not self._round:
                self.snapshots_drawn += 1
                self.snapshot_shown.emit(self._shown)
            return
        if self._step_dirty and self._shown is not None:
            self._step_dirty = False
            for name in self._views():
                self._call(name, "set_step", self.step_slider.value())
            self._update_status()

    def _start_round(self, snapshot: Snapshot) -> None:
        self._snapshot_dirty = False
        self._shown = snapshot
        steps = snapshot.telemetry.num_steps
        follow = self._follow_last_step and not self._play_timer.isActive()
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, steps)
        if follow:
            self.step_slider.setValue(steps)
        self.step_slider.blockSignals(False)
        self._round = list(self._views())
        self._update_step_label()
        self._update_status()
        self.step_changed.emit(self.step_slider.value())

    def _views(self) -> dict[str, QWidget]:
        """Everything that draws snapshots: the 3D view first, then each panel."""
        views = {"Lattice view": self.lattice_view, **self.panels}
        return {name: w for name, w in views.items() if hasattr(w, "set_snapshot")}

    def _call(self, name: str, method: str, arg: object = None) -> None:
        """Call a view's ``method`` (with ``arg`` unless it is ``clear``); one that raises is
        reported in the banner, not fatal."""
        try:
            call = getattr(self._views()[name], method)
            if method == "clear":
                call()
            else:
                call(arg)
        except Exception as exc:  # noqa: BLE001 - a broken panel must not stop the others
            key = f"{name}.{method}"
            log.error("%s failed:\n%s", key, traceback.format_exc())
            if key not in self._panel_failures:
                self._panel_failures.add(key)
                self.show_error(f"{name} could not draw this batch ({method}): {type(exc).__name__}: {exc}")

    def _update_step_label(self) -> None:
        self.step_label.setText(f" {self.step_slider.value()} / {self.step_slider.maximum()} ")

    def _update_status(self) -> None:
        if self._shown is not None:
            self.run_status.show_batch(self._shown, self.step_slider.value())
