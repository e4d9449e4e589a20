"""The training toolbar: Run, Pause, Step, Reset, and the propagation-step slider with Play.

Pause is the only way to stop training (a separate Stop did exactly what Pause does, and the
two looked alike while meaning the same); Run goes on from the batch where it paused. The
toolbar only emits requests and moves its slider; the window decides what they do.
"""

from __future__ import annotations

from typing import Callable

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QLabel, QSlider, QToolBar, QWidget

from app.window.icons import icon

#: Propagation-step animation: one step per this many ms while "Play steps" is on.
PLAY_INTERVAL_MS = 150


class TrainingToolbar(QToolBar):
    run_requested = pyqtSignal()
    pause_requested = pyqtSignal()
    step_requested = pyqtSignal()
    reset_requested = pyqtSignal()     # the window asks before it resets
    toggle_requested = pyqtSignal()    # Space: Run or Pause, as the state says

    def __init__(self, shortcut_owner: QWidget) -> None:
        super().__init__("Training")
        self.setObjectName("training-toolbar")
        self.setMovable(False)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)

        def action(text: str, tip: str, slot: Callable[..., None], shortcuts: tuple[str, ...] = (),
                   icon_name: str | None = None) -> QAction:
            act = QAction(icon(icon_name), text, shortcut_owner) if icon_name else QAction(text, shortcut_owner)
            if shortcuts:
                act.setShortcuts([QKeySequence(s) for s in shortcuts])
                tip = f"{tip} ({' or '.join(shortcuts)})"
            act.setToolTip(tip)
            act.triggered.connect(slot)
            return act

        self.run_action = action("Run", "Train continuously; Space toggles Run/Pause", self.run_requested.emit,
                                 icon_name="run")
        self.pause_action = action("Pause", "Stop training after the batch in flight; Run goes on from there "
                                   "(Space toggles Run/Pause)", self.pause_requested.emit, ("Esc",), "pause")
        self.step_action = action("Step", "Train exactly one batch", self.step_requested.emit, ("S",), "step")
        self.reset_action = action("Reset", "Rebuild the model from the current config (batch 0); asks first",
                                   self.reset_requested.emit, ("Ctrl+R",), "reset")
        for act in (self.run_action, self.pause_action, self.step_action, self.reset_action):
            self.addAction(act)
        self.toggle_run_action = action("Run/Pause", "Toggle Run/Pause", self.toggle_requested.emit, ("Space",))
        shortcut_owner.addAction(self.toggle_run_action)
        self.addSeparator()

        self.play_action = action("Play steps", "Animate the propagation steps of the shown batch",
                                  self._toggle_play, ("P",), "play")
        self.play_action.setCheckable(True)
        self.addAction(self.play_action)
        self.step_slider = QSlider(Qt.Orientation.Horizontal)
        self.step_slider.setRange(0, 0)
        self.step_slider.setMinimumWidth(160)
        self.step_slider.setToolTip("Propagation step of the shown batch (0 = placement on the start plane); "
                                    "all panels follow it. Left/Right: previous/next step")
        self.step_label = QLabel(" – / – ")
        self.step_label.setMinimumWidth(70)
        #: Play, "Step", the slider and its label: hidden while a recording is shown, whose replay
        #: bar has its own (one step slider on screen, not two moving together).
        self._step_controls = [self.play_action, self.addWidget(QLabel("  Step ")),
                               self.addWidget(self.step_slider), self.addWidget(self.step_label)]
        self.prev_step_action = action("prev step", "Previous propagation step",
                                       lambda: self.step_slider.setValue(self.step_slider.value() - 1), ("Left",))
        self.next_step_action = action("next step", "Next propagation step",
                                       lambda: self.step_slider.setValue(self.step_slider.value() + 1), ("Right",))
        shortcut_owner.addAction(self.prev_step_action)
        shortcut_owner.addAction(self.next_step_action)
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(PLAY_INTERVAL_MS)
        self._play_timer.timeout.connect(self._advance_play)

    def show_step_controls(self, shown: bool) -> None:
        """Show the step controls (live run) or hide them (a recording's replay bar has its own);
        hidden, the slider still drives the views and Left/Right still move it."""
        if not shown:
            self._play_timer.stop()
            self.play_action.setChecked(False)
        for control in self._step_controls:
            control.setVisible(shown)

    def show_step(self, held: bool) -> None:
        """The step label: "6 / 16", and "held" while a step chosen on the slider stays chosen for
        every new batch (the view keeps the step one studies instead of jumping to the last)."""
        value, top = self.step_slider.value(), self.step_slider.maximum()
        held = held and value < top
        self.step_label.setText(f" {value} / {top}{' · held' if held else ''} ")
        self.step_label.setToolTip(
            f"Step {value} stays chosen for every new batch; drag the slider to the end to follow the "
            "last step again" if held else "The shown step; at the end it follows each new batch's last step")

    @property
    def is_playing(self) -> bool:
        return self._play_timer.isActive()

    def stop_playing(self) -> None:
        self._play_timer.stop()

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
