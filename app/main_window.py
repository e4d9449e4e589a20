"""MainWindow: the lattice view, the panels as docks, the training controls and the status bar.

The window never computes: training runs in a :class:`~app.worker.TrainingWorker` in its own
QThread, driven through queued signals. Snapshots may arrive faster than they can be drawn
(the tiny preset trains ~15 batches/s), so the window keeps only the newest one; a ~30 Hz frame
timer hands it to one view per frame (see ``_on_frame``) and older ones are dropped unseen.
The propagation-step slider is coalesced the same way.

Failures are shown in a banner above the view, never in a blocking dialog, and never take the
window down: a panel that raises is reported in the banner and the others still update.
"""

from __future__ import annotations

import importlib
import logging
import traceback

import numpy as np
from PyQt6.QtCore import QThread, Qt, QTimer, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QAction, QCloseEvent, QKeySequence
from PyQt6.QtWidgets import (QDockWidget, QFrame, QHBoxLayout, QLabel, QMainWindow, QPushButton,
                             QSlider, QToolBar, QVBoxLayout, QWidget)

from app.panels.config_panel import ConfigPanel
from app.panels.health_panel import HealthPanel
from app.panels.text_bridge_panel import TextBridgePanel
from app.snapshot import Snapshot
from app.worker import TrainingWorker

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
_AREAS = {"left": Qt.DockWidgetArea.LeftDockWidgetArea, "right": Qt.DockWidgetArea.RightDockWidgetArea,
          "top": Qt.DockWidgetArea.TopDockWidgetArea, "bottom": Qt.DockWidgetArea.BottomDockWidgetArea}


class MessageBanner(QFrame):
    """A dismissible line above the view: red for errors, blue for progress notes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dismiss = QPushButton("Dismiss")
        self.dismiss.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.dismiss)
        self.kind = ""
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        self.kind = kind
        colours = {"error": ("#5c1a1a", "#ff6b6b"), "info": ("#1a2f4a", "#6ba8ff")}[kind]
        self.setStyleSheet(f"MessageBanner {{ background: {colours[0]}; border: 1px solid {colours[1]}; }}"
                           " QLabel { color: #f4f4f4; }")
        self.label.setText(("⚠ " if kind == "error" else "") + text)
        self.dismiss.setVisible(kind == "error")
        self.show()


class MainWindow(QMainWindow):
    """Hosts the worker's thread; see the module docstring for the drawing policy.

    The constructor moves ``worker`` to :attr:`worker_thread` (not started yet); :meth:`start`
    starts that thread, which runs ``worker.load`` first.
    """

    #: The snapshot the window just drew (after coalescing): hook exports/recordings here.
    snapshot_shown = pyqtSignal(object)
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

        self._build_central()
        self._build_panels()
        self._build_controls()
        self._build_status_bar()
        self._connect_worker()

        self._frame_timer = QTimer(self)
        self._frame_timer.setInterval(FRAME_INTERVAL_MS)
        self._frame_timer.timeout.connect(self._on_frame)
        self._frame_timer.start()
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(PLAY_INTERVAL_MS)
        self._play_timer.timeout.connect(self._advance_play)
        self._fps_timer = QTimer(self)
        self._fps_timer.setInterval(1000)
        self._fps_timer.timeout.connect(self._update_fps)
        self._fps_timer.start()
        self._set_state("loading")
        from app.recording_controls import RecordingController
        self.recordings = RecordingController(self)

    # ------------------------------------------------------------------ construction
    def _build_central(self) -> None:
        self.banner = MessageBanner()
        self.notice = QLabel()
        self.notice.setStyleSheet("color: #6ba8ff; padding: 2px 6px;")
        self.notice.setWordWrap(True)
        self.lattice_view = _make_widget("app.lattice_view", "LatticeView", "3D lattice view")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addWidget(self.notice)
        layout.addWidget(self.lattice_view, 1)
        self.setCentralWidget(central)

    def _build_panels(self) -> None:
        """Every panel in a dock; ``self.panels`` maps the dock title to the panel widget."""
        self.health_panel = HealthPanel()
        self.text_bridge_panel = TextBridgePanel()
        self.config_panel = ConfigPanel()
        self.panels: dict[str, QWidget] = {}
        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("Health", self.health_panel, "top")
        self._add_dock("Config", self.config_panel, "left")
        for title, module, cls, area in EXTERNAL_PANELS:
            self._add_dock(title, _make_widget(module, cls, f"{title} panel"), area)
            if title == "Training":
                self._add_dock("Text bridge", self.text_bridge_panel, "right")
        self.docks["Health"].setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        self.docks["Health"].setTitleBarWidget(QWidget())  # a strip, not a captioned panel
        # The right column (training curves, decoded text) runs the full height; the four
        # per-step panels share the bottom row under the config and the 3D view, tall enough for
        # their stacked plots to stay legible at 1600×1000.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        bottom = [self.docks[t] for t in ("Spawn", "Energy", "Displacement", "Coverage")]
        self.resizeDocks(bottom, [1] * len(bottom), Qt.Orientation.Horizontal)
        self.resizeDocks([bottom[0]], [400], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["Config"]], [250], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Training"]], [440], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Training"], self.docks["Text bridge"]], [480, 360], Qt.Orientation.Vertical)

    def _add_dock(self, title: str, widget: QWidget, area: str) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(_AREAS[area], dock)
        self.panels[title] = widget
        self.docks[title] = dock

    def _build_controls(self) -> None:
        bar = QToolBar("Training")
        bar.setObjectName("training-toolbar")
        bar.setMovable(False)
        self.addToolBar(bar)
        self.toolbar = bar

        def action(text: str, tip: str, slot, shortcuts: tuple[str, ...] = ()) -> QAction:
            act = QAction(text, self)
            if shortcuts:
                act.setShortcuts([QKeySequence(s) for s in shortcuts])
                tip = f"{tip} ({' or '.join(shortcuts)})"
            act.setToolTip(tip)
            act.triggered.connect(slot)
            return act

        self.run_action = action("▶ Run", "Train continuously; Space toggles Run/Pause", self.run_requested.emit)
        self.pause_action = action("⏸ Pause", "Pause after the batch in flight; Space toggles Run/Pause",
                                   self.pause_requested.emit)
        self.step_action = action("⏭ Step", "Train exactly one batch", self.step_requested.emit, ("S",))
        self.stop_action = action("⏹ Stop", "Stop training after the batch in flight", self.stop_requested.emit,
                                  ("Esc",))
        self.reset_action = action("⟲ Reset", "Rebuild the model from the current config (batch 0)",
                                   self.reset_requested.emit, ("Ctrl+R",))
        for act in (self.run_action, self.pause_action, self.step_action, self.stop_action, self.reset_action):
            bar.addAction(act)
        self.toggle_run_action = action("Run/Pause", "Toggle Run/Pause", self.toggle_run, ("Space",))
        self.addAction(self.toggle_run_action)
        bar.addSeparator()

        self.play_action = action("▷ Play steps", "Animate the propagation steps of the shown batch",
                                  self._toggle_play, ("P",))
        self.play_action.setCheckable(True)
        bar.addAction(self.play_action)
        self.step_slider = QSlider(Qt.Orientation.Horizontal)
        self.step_slider.setRange(0, 0)
        self.step_slider.setMinimumWidth(320)
        self.step_slider.setToolTip("Propagation step of the shown batch (0 = placement on the start plane); "
                                    "all panels follow it. Left/Right: previous/next step")
        self.step_slider.valueChanged.connect(self._slider_moved)
        bar.addWidget(QLabel("  Propagation step "))
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

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_labels: dict[str, QLabel] = {}
        for key in ("device", "data", "batch", "step", "active", "loss", "rate", "fps"):
            label = QLabel("–")
            label.setContentsMargins(6, 0, 6, 0)
            bar.addPermanentWidget(label)
            self.status_labels[key] = label
        self.status_labels["state"] = QLabel()
        bar.insertPermanentWidget(0, self.status_labels["state"])

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
        w.resources.connect(self._on_resources)

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
        self.notice.setVisible(state == "loading")
        if state == "loading" and not self.notice.text():
            self.notice.setText("Loading — starting the training worker…")
        if running and self.banner.kind == "error":
            self.banner.hide()
        colour = {"running": "#1f8f4e", "error": "#b03030", "loading": "#2f5f9f"}.get(state, "#55555c")
        label = self.status_labels["state"]
        label.setText(state)
        label.setStyleSheet(f"background: {colour}; color: white; font-weight: bold; border-radius: 3px; "
                            "padding: 0 6px;")

    @pyqtSlot(dict)
    def _on_loaded(self, info: dict) -> None:
        self.status_labels["device"].setText(f"device: {info['device']}")
        data = info["data"]
        full = f"data: {data['source']} ({data['num_pairs']} pairs, {data['teacher']}, D={data['dim']})"
        self.status_labels["data"].setText(f"data: {_short_source(data['source'])} ({data['num_pairs']} pairs, "
                                           f"D={data['dim']})")
        self.status_labels["data"].setToolTip(full)
        self.config_panel.set_config(info["config"])
        self.text_bridge_panel.set_bridge_info(info["text_bridge"], info["text_bridge_available"])
        self.setWindowTitle(f"{WINDOW_TITLE} — {info['config'].lattice_width}×{info['config'].lattice_height}"
                            f"×{info['config'].lattice_depth}")
        self._set_state(self.worker_state)

    @pyqtSlot(dict)
    def _on_resources(self, info: dict) -> None:
        text = f"device: {info['device']}"
        if info.get("memory_text"):
            text += f", {info['memory_text']}"
        self.status_labels["device"].setText(text)

    # ------------------------------------------------------------------ controls
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

    def _views(self) -> dict[str, QWidget]:
        """Everything that draws snapshots: the 3D view first, then each panel."""
        views = {"Lattice view": self.lattice_view, **self.panels}
        return {name: w for name, w in views.items() if hasattr(w, "set_snapshot")}

    def _call(self, name: str, method: str, arg: object) -> None:
        """Call a view's ``method``; one that raises is reported in the banner, not fatal."""
        try:
            getattr(self._views()[name], method)(arg)
        except Exception as exc:  # noqa: BLE001 - a broken panel must not stop the others
            key = f"{name}.{method}"
            log.error("%s failed:\n%s", key, traceback.format_exc())
            if key not in self._panel_failures:
                self._panel_failures.add(key)
                self.show_error(f"{name} could not draw this batch ({method}): {type(exc).__name__}: {exc}")

    def _update_step_label(self) -> None:
        self.step_label.setText(f" {self.step_slider.value()} / {self.step_slider.maximum()} ")

    def _update_status(self) -> None:
        snap = self._shown
        if snap is None:
            return
        s = self.status_labels
        step = self.step_slider.value()
        agg = snap.telemetry.aggregates
        s["batch"].setText(snap.batch_label or "–")
        s["step"].setText(f"step {step}/{snap.telemetry.num_steps}")
        s["active"].setText(f"active flows: {int(agg.active[min(step, agg.active.shape[0] - 1)])}")
        # A replayed batch has no report (and recordings keep no training speed): say so.
        s["loss"].setText(f"loss {snap.report.loss:.4f}" if snap.report is not None else "loss –")
        rates = snap.history.get("batches_per_second")
        recent = np.asarray(rates[-10:] if rates is not None else [], dtype=np.float64)
        recent = recent[np.isfinite(recent) & (recent > 0)]
        # Harmonic mean of the last 10 batches: batches over the time they took.
        s["rate"].setText(f"{recent.size / np.sum(1.0 / recent):.2f} batches/s" if recent.size else "– batches/s")

    def _update_fps(self) -> None:
        fps = getattr(self.lattice_view, "fps", None)
        self.status_labels["fps"].setText(f"view {fps:.0f} fps" if isinstance(fps, float) else "view fps: –")


def _short_source(source: str, limit: int = 48) -> str:
    """A data source short enough for the status bar (the full text is the tooltip)."""
    if len(source) <= limit:
        return source
    if source.startswith("bundled corpus"):
        return "bundled corpus"
    return "…" + source[-(limit - 1):]


class UnavailableWidget(QLabel):
    """Stands in for a widget whose module failed to import, saying why (loudly, in red)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} unavailable:\n{reason}")
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet("color: #ff6b6b; border: 1px dashed #ff6b6b; padding: 8px;")


def _make_widget(module: str, cls: str, what: str) -> QWidget:
    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as exc:  # noqa: BLE001 - show the failure where the widget would be
        log.error("cannot create %s.%s:\n%s", module, cls, traceback.format_exc())
        return UnavailableWidget(what, f"{type(exc).__name__}: {exc}")

