"""The window's status bar: run state, the batch in flight, the shown batch, device and view speed.

Every label is permanent (always in the same place) and holds one fact; the full text of a
shortened one is its tooltip. Texts change only when their fact does: with an OpenGL view in
the window every status-bar repaint recomposites the window around it, which costs on
software GL, so the phase of the batch in flight (which changes several times per batch, many
times a second on small models) is drawn at most every ``PHASE_INTERVAL_MS``.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QObject, QSize, Qt, QTimer
from PyQt6.QtGui import QResizeEvent
from PyQt6.QtWidgets import QLabel, QMainWindow, QStatusBar

from app.snapshot import Snapshot
from app.view.lattice_view import VIEW_SPEED_TIP, LatticeView, view_speed_text
from energy_flow.trace.figures import BATCH
from app.window.icons import RECORD_COLOR

#: The status bar shows the batch's phase at most this often (ms).
PHASE_INTERVAL_MS = 250
#: The 3D view's frame rate is read this often (ms).
FPS_INTERVAL_MS = 1000
#: Labels on the right, in order; "state", "rec" and "phase" sit on the left.
FACTS = ("device", "data", "batch", "step", "active", "loss", "rate", "fps")
#: Facts of the shown batch, reset to "–" when no batch is shown.
BATCH_FACTS = ("batch", "step", "active", "loss", "rate")
STATE_COLORS = {"running": "#1f8f4e", "error": "#b03030", "loading": "#2f5f9f", "replay": "#6a3fa0"}
BADGE_STYLE = "color: white; border-radius: 3px; padding: 0 6px;"


#: A shortened status-bar label keeps at least this many characters before its "…".
MIN_CHARS = 6
#: Labels that may be shortened, and how many characters each keeps; every other fact (state,
#: step, active flows, loss, rate, view speed) is short and always whole: the long, slow-changing
#: ones give way first, device and data down to a bare "…" (the tooltip keeps each whole text),
#: so that at the smallest window (1024 px) the bar fits the window.
SHORTENED = {"device": 0, "data": 0, "batch": 6, "phase": 6, "rec": 3}
#: A passing message keeps at least this many.
MESSAGE_MIN_CHARS = 20
#: Below this window width a message keeps only this many (tried as a new user at the smallest
#: window, 1024 px: the bar was wider than the window and its last facts were drawn off its edge).
NARROW_WINDOW_PX, NARROW_MESSAGE_MIN_CHARS = 1100, 8


class FitLabel(QLabel):
    """A status-bar label that is never cut: when the bar gives it less than its text needs it
    shows the text shortened with "…", and its tooltip carries the whole text.

    ``text()`` is the whole text (the fact); ``shown()`` is what is drawn.
    """

    def __init__(self, text: str = "", min_chars: int | None = MIN_CHARS) -> None:
        """``min_chars``: characters kept when shortened; None: never shortened."""
        super().__init__()
        self._min_chars = min_chars
        self._full = ""
        self._tip = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt API)
        if text != self._full:
            self._full = text
            self.updateGeometry()
        self._fit()

    def text(self) -> str:
        return self._full

    def set_min_chars(self, chars: int) -> None:
        if chars != self._min_chars:
            self._min_chars = chars
            self.updateGeometry()

    def shown(self) -> str:
        return super().text()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 (Qt API)
        self._tip = tip
        self._fit()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(self._full) + margins.left() + margins.right() + 12
        return QSize(width, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        if self._min_chars is None:
            return self.sizeHint()
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(self._full[:self._min_chars] + "…") + margins.left() + margins.right()
        return QSize(min(width, self.sizeHint().width()), super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        room = self.contentsRect().width()
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(room, 0))
        if shown != super().text():
            super().setText(shown)
        cut = shown != self._full
        tip = self._full if cut and self._full not in self._tip else ""
        super().setToolTip("\n".join(t for t in (tip, self._tip) if t))


class FitStatusBar(QStatusBar):
    """A status bar whose passing messages are never cut: they are shown in a :class:`FitLabel`
    that takes the room left of the facts (at least :data:`MESSAGE_MIN_CHARS` characters of it
    while a message shows), shortened with "…" where needed, the whole message in its tooltip.

    Qt's own message area gets no room once the facts fill the bar (at 1100 px it showed
    "Export failed: cannot"); this one competes with the facts, which shorten too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.message_label = FitLabel("", min_chars=MESSAGE_MIN_CHARS)
        self.message_label.setContentsMargins(4, 0, 4, 0)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.clearMessage)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        window = self.window()
        narrow = window is not self and window.width() < NARROW_WINDOW_PX
        self.message_label.set_min_chars(NARROW_MESSAGE_MIN_CHARS if narrow else MESSAGE_MIN_CHARS)

    def place_message(self) -> None:
        """Put the message label left of every fact (call after the facts are added)."""
        self.insertPermanentWidget(0, self.message_label, 1)

    def showMessage(self, text: str, timeout: int = 0) -> None:  # noqa: N802 (Qt API)
        self.message_label.setText(text)
        if timeout > 0:
            self._timer.start(timeout)
        else:
            self._timer.stop()
        self.messageChanged.emit(text)

    def currentMessage(self) -> str:  # noqa: N802 (Qt API)
        return self.message_label.text()

    def clearMessage(self) -> None:  # noqa: N802 (Qt API)
        self._timer.stop()
        if self.message_label.text():
            self.message_label.setText("")
            self.messageChanged.emit("")


class RunStatusBar(QObject):
    """Owns the labels of ``window``'s status bar (a :class:`FitStatusBar`): ``labels[name]`` for
    every fact, ``busy`` the training badge; every label a :class:`FitLabel`."""

    def __init__(self, window: QMainWindow, parent: QObject | None = None) -> None:
        super().__init__(parent)
        bar = FitStatusBar()
        bar.setSizeGripEnabled(False)       # the window manager resizes; the grip took room from the facts
        window.setStatusBar(bar)
        self.labels: dict[str, QLabel] = {}
        for key in FACTS:
            label = FitLabel("–", SHORTENED.get(key))
            label.setContentsMargins(4, 0, 4, 0)
            bar.addPermanentWidget(label)
            self.labels[key] = label
        # Tried as a new user: "0.54 batch/s" here and "0.68 batch/s" in the Training panel read as
        # a contradiction; they are two honest measures, and the tooltip says which this is.
        self.labels["rate"].setToolTip("Training speed over the last 10 batches: batches ÷ the time they took. "
                                       "The Training panel's title shows the last batch's own speed.")
        self.labels["state"] = FitLabel(min_chars=None)
        bar.insertPermanentWidget(0, self.labels["state"])
        # What the batch in flight is doing (a batch takes seconds on the debug preset), and how
        # long the last one took. A static badge, not an animated busy bar: with an OpenGL view in
        # the window every repaint composites the whole window, which costs on software GL.
        self.busy = FitLabel("training", min_chars=None)
        self.busy.setStyleSheet(f"background: #2f5f9f; {BADGE_STYLE}")
        self.busy.hide()
        self.labels["phase"] = FitLabel("", SHORTENED["phase"])
        self.labels["rec"] = FitLabel("", SHORTENED["rec"])
        self.labels["rec"].setStyleSheet(f"background: {RECORD_COLOR}; font-weight: bold; {BADGE_STYLE}")
        self.labels["rec"].hide()
        bar.insertPermanentWidget(1, self.labels["rec"])
        bar.insertPermanentWidget(2, self.busy)
        bar.insertPermanentWidget(3, self.labels["phase"])
        bar.place_message()
        self._phase_text = (False, "")
        self._estimate = ""        # "est. 3.1 s": the model's estimated time per batch
        self._batch = 0
        self._live = True       # False while a recording is shown: nothing of the live run then
        self._phase_timer = QTimer(self)
        self._phase_timer.setSingleShot(True)
        self._phase_timer.setInterval(PHASE_INTERVAL_MS)
        self._phase_timer.timeout.connect(self._show_phase)
        self._fps_timer = QTimer(self)
        self._fps_timer.setInterval(FPS_INTERVAL_MS)

    def show_state(self, shown: str, tooltip: str) -> None:
        """The state badge: the live run's state, or "replay" while a recording is shown."""
        label = self.labels["state"]
        label.setText(shown)
        label.setToolTip(tooltip)
        label.setStyleSheet(f"background: {STATE_COLORS.get(shown, '#55555c')}; font-weight: bold; {BADGE_STYLE}")

    def show_loaded(self, info: dict) -> None:
        """Device and data of a (re)built model (the worker's ``loaded`` payload)."""
        self.show_device(info["device"], f"device: {info['device']}")
        data = info["data"]
        self.labels["data"].setText(f"{short_source(data['source'])}, {data['num_pairs']} pairs")
        self.labels["data"].setToolTip(
            f"data: {data['source']} ({data['num_pairs']} pairs, {data['teacher']}, D={data['dim']})")

    def show_resources(self, info: dict) -> None:
        """The device after a batch, with its memory in use where the device reports it."""
        text, tip = info["device"], f"device: {info['device']}"
        if info.get("memory_text"):
            text += f", {info['memory_text']}"
            tip += f"; {info['memory_text']}"
        self.show_device(text, tip)

    def show_device(self, text: str, tip: str) -> None:
        self.labels["device"].setText(text)
        self.labels["device"].setToolTip(tip)

    def show_phase(self, batch: int, phase: str, seconds: float) -> None:
        """Remember the batch's phase (or the last batch's duration); drawn by a coalescing timer."""
        self._batch = batch
        if phase == "done":
            self._phase_text = (False, f"last batch {seconds:.2f} s{self._estimated()}" if seconds == seconds
                                else "")
        else:
            self._phase_text = (True, f"batch {batch}: {phase}…{self._estimated()}")
        self._schedule_phase()

    def show_estimate(self, text: str, tip: str) -> None:
        """The model's estimated time per batch (``text`` e.g. "est. 3.1 s"), beside the batch's
        phase from now on; shown alone until the first batch starts."""
        self._estimate = text
        self.labels["phase"].setToolTip(tip)
        if not self._phase_text[0]:
            self._phase_text = (False, f"{text} per batch")
        self._schedule_phase()

    def _estimated(self) -> str:
        return f" ({self._estimate})" if self._estimate else ""

    def show_progress(self, phase: str, done: int, total: int) -> None:
        """Where the pass in flight is: "batch 3: forward, step 5 of ≤16" (forward may end early)."""
        if not self._phase_text[0]:
            return              # the batch ended before this queued report arrived
        bound = "≤" if phase == "forward" else ""
        self._phase_text = (True, f"batch {self._batch}: {phase}, step {done} of {bound}{total}…{self._estimated()}")
        self._schedule_phase()

    def _schedule_phase(self) -> None:
        if not self._phase_timer.isActive():
            self._phase_timer.start()

    def set_live(self, live: bool) -> None:
        """Show the live run's batch in flight (True) or nothing of it (a recording is shown)."""
        if live != self._live:
            self._live = live
            self._show_phase()

    def _show_phase(self) -> None:
        busy, text = self._phase_text if self._live else (False, "")
        if self.labels["phase"].text() != text:
            self.labels["phase"].setText(text)
        if self.busy.isVisible() != busy:
            self.busy.setVisible(busy)

    def show_batch(self, snap: Snapshot, step: int) -> None:
        """The shown batch at ``step``: label, step, active flows, loss, training speed."""
        s = self.labels
        agg = snap.telemetry.aggregates
        s["batch"].setText(snap.batch_label or "–")
        s["step"].setText(f"step {step}/{snap.telemetry.num_steps}")
        s["active"].setText(f"active flows: {int(agg.active[min(step, agg.active.shape[0] - 1)])}")
        # A replayed batch has no report: its loss is the recorded one (the Training panel's last
        # point); recordings keep no training speed, so the rate says "–".
        losses = snap.history.get(BATCH.loss.key)
        loss = snap.report.loss if snap.report is not None else (
            float(losses[-1]) if losses is not None and len(losses) else float("nan"))
        s["loss"].setText(f"loss {loss:.4f}" if np.isfinite(loss) else "loss –")
        rates = snap.history.get(BATCH.batches_per_second.key)
        recent = np.asarray(rates[-10:] if rates is not None else [], dtype=np.float64)
        recent = recent[np.isfinite(recent) & (recent > 0)]
        # Harmonic mean of the last 10 batches: batches over the time they took.
        s["rate"].setText(f"{recent.size / np.sum(1.0 / recent):.2f} batch/s" if recent.size else "– batch/s")

    def clear_batch(self) -> None:
        for key in BATCH_FACTS:
            self.labels[key].setText("–")

    def follow_view_speed(self, view: LatticeView) -> None:
        """Show ``view``'s frame rate every ``FPS_INTERVAL_MS``."""
        self.labels["fps"].setToolTip(VIEW_SPEED_TIP)
        self._fps_timer.timeout.connect(lambda: self.show_fps(view.fps, view.idle))
        self._fps_timer.start()

    def show_fps(self, fps: float, idle: bool) -> None:
        """The 3D view's frame rate; "idle" while it draws nothing (it redraws only on changes)."""
        self.labels["fps"].setText(view_speed_text(fps, idle))


def short_source(source: str, limit: int = 28) -> str:
    """A data source short enough for the status bar (the full text is the tooltip)."""
    if len(source) <= limit:
        return source
    if source.startswith("bundled corpus"):
        return "bundled corpus"
    return "…" + source[-(limit - 1):]
