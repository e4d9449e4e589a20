"""ReplayTimeline: the controls for moving through a recording — which batch, which step.

It only emits requests (``batch_selected``, ``step_selected``, ``follow_toggled``); it never
reads files. The host answers a batch request by showing that batch and then telling the
timeline what it shows through :meth:`set_batch` / :meth:`set_num_steps`, which never echo a
signal back, so there is no feedback loop.

Design choices:

* Batch indices in signals and methods are 0-based; the widgets show them 1-based ("batch 3
  of 10"), like the snapshot's ``batch_label``.
* The batch slider does not track while dragged (``batch_selected`` fires on release, on
  keyboard steps and from the spin box once editing ends): every batch request reads the
  file, and dragging across a thousand batches must not queue a thousand reads.
* Step playback runs at ``BASE_STEPS_PER_SECOND`` × the chosen speed. At the last step it
  wraps to 0 with *loop* on; otherwise it stops there. It never moves on to the next batch by
  itself: that would read the file from a timer and change the batch under the user's eyes.
* Choosing a batch other than the newest while *follow latest* is on turns following off
  (and says so through ``follow_toggled(False)``): the user asked to look at that batch.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt, QTimer, pyqtSignal, pyqtSlot
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox,
                             QWidget)

from app.window.icons import icon

#: Playback at 1× speed, in propagation steps per second.
BASE_STEPS_PER_SECOND = 5.0
#: Speeds offered, as multiples of the base rate.
SPEEDS = (0.5, 1.0, 2.0, 4.0)


class ReplayTimeline(QWidget):
    """Batch slider + spin box, step slider, play/pause, loop, speed and follow-latest."""

    batch_selected = pyqtSignal(int)
    step_selected = pyqtSignal(int)
    follow_toggled = pyqtSignal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.batch_slider = QSlider(Qt.Orientation.Horizontal)
        self.batch_slider.setTracking(False)
        self.batch_slider.setToolTip("Batch of the recording to show (applies when released)")
        self.batch_spin = QSpinBox()
        self.batch_spin.setKeyboardTracking(False)
        self.batch_spin.setToolTip("Batch number (1 = first)")
        self.batch_label = QLabel()
        self.step_slider = QSlider(Qt.Orientation.Horizontal)
        self.step_slider.setToolTip("Propagation step of the shown batch (0 = placement on the start plane)")
        self.step_label = QLabel()
        self.step_label.setMinimumWidth(70)
        self.play_button = QPushButton(icon("play"), "Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Animate the propagation steps of the shown batch")
        self.loop_check = QCheckBox("Loop")
        self.loop_check.setToolTip("Wrap to step 0 after the last step instead of stopping")
        self.speed_combo = QComboBox()
        for speed in SPEEDS:
            self.speed_combo.addItem(f"{speed:g}×", speed)
        self.speed_combo.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_combo.setToolTip(f"Playback speed; 1× = {BASE_STEPS_PER_SECOND:g} steps per second")
        self.follow_check = QCheckBox("Follow latest")
        self.follow_check.setToolTip("Show each new batch as a live writer appends it to the file")

        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(QLabel("Batch"))
        layout.addWidget(self.batch_slider, 2)
        layout.addWidget(self.batch_spin)
        layout.addWidget(self.batch_label)
        layout.addSpacing(12)
        layout.addWidget(QLabel("Step"))
        layout.addWidget(self.step_slider, 3)
        layout.addWidget(self.step_label)
        layout.addWidget(self.play_button)
        layout.addWidget(self.loop_check)
        layout.addWidget(self.speed_combo)
        layout.addWidget(self.follow_check)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self._advance)
        self._apply_speed()
        self.batch_slider.valueChanged.connect(self._batch_chosen)
        self.batch_slider.sliderMoved.connect(self._preview_batch)
        self.batch_spin.valueChanged.connect(lambda number: self._batch_chosen(number - 1))
        self.step_slider.valueChanged.connect(self._step_chosen)
        self.play_button.toggled.connect(self._play_toggled)
        self.speed_combo.currentIndexChanged.connect(lambda _i: self._apply_speed())
        self.follow_check.toggled.connect(self.follow_toggled.emit)
        self.set_batch_count(0)
        self.set_num_steps(0)

    # ------------------------------------------------------------------ host → timeline (no echo)
    def set_batch_count(self, n: int) -> None:
        """The recording has ``n`` batches (0: nothing to choose; the batch controls disable)."""
        with _Quiet(self.batch_slider, self.batch_spin):
            self.batch_slider.setRange(0, max(n - 1, 0))
            self.batch_spin.setRange(1 if n else 0, n)
        self.batch_slider.setEnabled(n > 1)
        self.batch_spin.setEnabled(n > 1)
        self._batch_count = n
        self._update_batch_label()

    def set_batch(self, index: int) -> None:
        """Show that batch ``index`` is the one drawn (no ``batch_selected`` is emitted)."""
        with _Quiet(self.batch_slider, self.batch_spin):
            self.batch_slider.setValue(index)
            self.batch_spin.setValue(index + 1)
        self._update_batch_label()

    def set_num_steps(self, num_steps: int) -> None:
        """The shown batch ran ``num_steps`` (T) steps: the step slider spans 0…T (no signal)."""
        with _Quiet(self.step_slider):
            self.step_slider.setRange(0, max(num_steps, 0))
        self.step_slider.setEnabled(num_steps > 0)
        self.play_button.setEnabled(num_steps > 0)
        if num_steps <= 0:
            self.pause()
        self._update_step_label()

    def set_step(self, step: int) -> None:
        """Move the step slider without emitting ``step_selected`` (clamped to 0…T)."""
        with _Quiet(self.step_slider):
            self.step_slider.setValue(step)
        self._update_step_label()

    def set_following(self, on: bool) -> None:
        """Reflect follow mode set elsewhere (e.g. ended by a failed refresh); no signal."""
        with _Quiet(self.follow_check):
            self.follow_check.setChecked(on)

    # ------------------------------------------------------------------ playback
    @pyqtSlot()
    def play(self) -> None:
        """Start animating steps; from step 0 again if the slider sits on the last step."""
        self.play_button.setChecked(True)

    @pyqtSlot()
    def pause(self) -> None:
        self.play_button.setChecked(False)

    @property
    def is_playing(self) -> bool:
        return self._timer.isActive()

    @property
    def batch(self) -> int:
        return self.batch_slider.value()

    @property
    def step(self) -> int:
        return self.step_slider.value()

    @property
    def steps_per_second(self) -> float:
        return BASE_STEPS_PER_SECOND * float(self.speed_combo.currentData())

    def _play_toggled(self, on: bool) -> None:
        self.play_button.setText("Pause" if on else "Play")
        self.play_button.setIcon(icon("pause" if on else "play"))
        if not on:
            self._timer.stop()
            return
        if self.step_slider.maximum() == 0:
            self.pause()
            return
        if self.step_slider.value() >= self.step_slider.maximum():
            self.step_slider.setValue(0)
        self._timer.start()

    def _apply_speed(self) -> None:
        self._timer.setInterval(max(1, round(1000.0 / self.steps_per_second)))

    def _advance(self) -> None:
        value, top = self.step_slider.value(), self.step_slider.maximum()
        if value < top:
            self.step_slider.setValue(value + 1)
        elif self.loop_check.isChecked():
            self.step_slider.setValue(0)
        if self.step_slider.value() >= top and not self.loop_check.isChecked():
            self.pause()

    # ------------------------------------------------------------------ user → host
    def _batch_chosen(self, index: int) -> None:
        if index < 0 or index >= self._batch_count:
            return
        with _Quiet(self.batch_slider, self.batch_spin):
            self.batch_slider.setValue(index)
            self.batch_spin.setValue(index + 1)
        self._update_batch_label()
        if self.follow_check.isChecked() and index != self._batch_count - 1:
            self.follow_check.setChecked(False)   # emits follow_toggled(False)
        self.batch_selected.emit(index)

    def _preview_batch(self, index: int) -> None:
        """While dragging: update the number shown, not the batch (see the module docstring)."""
        with _Quiet(self.batch_spin):
            self.batch_spin.setValue(index + 1)
        self._update_batch_label(index)

    def _step_chosen(self, step: int) -> None:
        self._update_step_label()
        self.step_selected.emit(step)

    def _update_batch_label(self, index: int | None = None) -> None:
        shown = self.batch_slider.value() if index is None else index
        self.batch_label.setText(f"batch {shown + 1} of {self._batch_count}" if self._batch_count
                                 else "no batches")

    def _update_step_label(self) -> None:
        self.step_label.setText(f"step {self.step_slider.value()} / {self.step_slider.maximum()}")


class _Quiet:
    """Blocks the widgets' signals inside a ``with`` block (host updates must not echo)."""

    def __init__(self, *widgets: QWidget) -> None:
        self._widgets = widgets

    def __enter__(self) -> None:
        self._old = [w.blockSignals(True) for w in self._widgets]

    def __exit__(self, *exc: object) -> None:
        for w, old in zip(self._widgets, self._old):
            w.blockSignals(old)
