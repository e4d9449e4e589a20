"""Start the GUI: QApplication, torch thread budget, the main window and its training worker.

Order matters for start-up time: the window is shown before anything heavy happens; the
teacher, the corpus embeddings and the model are created afterwards in the worker thread
while the window says what it is loading.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import traceback
from types import TracebackType

import torch

from energy_flow.config import EnergyConfig

log = logging.getLogger(__name__)

#: How often the Qt event loop hands control back to Python so Ctrl+C (SIGINT) is noticed.
SIGNAL_POLL_MS = 200

#: Exit status after Ctrl+C (the shell convention, 128 + SIGINT).
EXIT_INTERRUPTED = 130

_threads_configured = False


def configure_torch_threads() -> int:
    """Leave one core to the GUI: torch gets ``cpu_count - 1`` threads (at least 1).

    ``torch.set_num_threads`` is process-wide and meant to be set once, at start-up; later
    calls are ignored here so the budget never changes under a running worker.
    """
    global _threads_configured
    if not _threads_configured:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
        _threads_configured = True
    return torch.get_num_threads()


#: Preferred window size; smaller screens get their available area.
PREFERRED_SIZE = (1600, 1000)
#: Room assumed for a window manager's title bar and borders before the window is shown (px).
FRAME_ALLOWANCE = (16, 40)
#: After showing, the window's frame is checked against the screen once it has been decorated (ms).
FRAME_CHECK_MS = 300


def _available(window, available):
    if available is not None:
        return available
    screen = window.screen()
    return screen.availableGeometry() if screen is not None else None


def fit_to_screen(window, available=None) -> None:
    """Size the window to fit the screen it opens on, title bar included, and centre it there.

    ``available`` is the screen's available geometry (``QScreen.availableGeometry``: the
    desktop's panels taken off); tests pass a small one. Before the window is shown its frame
    is unknown, so :data:`FRAME_ALLOWANCE` is assumed; once shown, the real frame is used
    (:func:`keep_on_screen`). A screen smaller than the window's minimum size gets the window at
    its top-left corner, so that the title bar (to move it) is on the screen.
    """
    available = _available(window, available)
    if available is None:
        window.resize(*PREFERRED_SIZE)
        return
    frame, inner = window.frameGeometry(), window.geometry()
    known = window.isVisible() and frame.height() > inner.height()
    extra_w, extra_h = (frame.width() - inner.width(), frame.height() - inner.height()) if known else FRAME_ALLOWANCE
    width = max(min(PREFERRED_SIZE[0], available.width() - extra_w), window.minimumWidth())
    height = max(min(PREFERRED_SIZE[1], available.height() - extra_h), window.minimumHeight())
    window.resize(width, height)
    # move() places the frame's top-left corner (the title bar's) there.
    window.move(available.x() + max(0, (available.width() - width - extra_w) // 2),
                available.y() + max(0, (available.height() - height - extra_h) // 2))


def keep_on_screen(window, available=None) -> bool:
    """Once the window manager has framed the window: if any of the frame (the title bar above
    all) is off the available screen, fit it again with the real frame. True if it moved."""
    available = _available(window, available)
    if available is None or available.contains(window.frameGeometry()):
        return False
    fit_to_screen(window, available)
    return True


def run_gui(config: EnergyConfig, data_source: str | None = None, teacher_path: str | None = None,
            open_path: str | None = None, start_paused: bool = False) -> int:
    """Run Energy Flow Studio until the window closes; returns the process exit code.

    Training starts as soon as the model is loaded, unless ``start_paused``. With
    ``open_path`` the window replays that recording and live training is not started until the
    user asks for it (a bad file is reported in the window, which stays usable).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = configure_torch_threads()

    import vispy
    from PyQt6.QtCore import QCoreApplication, QEvent, QTimer
    from PyQt6.QtWidgets import QApplication

    vispy.use("pyqt6")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Energy Flow Studio")

    from app.sources.worker import TrainingWorker
    from app.window.main_window import MainWindow

    worker = TrainingWorker(config, data_source=data_source, teacher_path=teacher_path)
    window = MainWindow(worker)
    fit_to_screen(window)
    window.show()
    QTimer.singleShot(FRAME_CHECK_MS, lambda: keep_on_screen(window))
    log.info("window shown; torch uses %d thread(s); loading in the worker thread", threads)

    def on_exception(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        # PyQt aborts the process on an unhandled exception in a slot unless a hook is set:
        # report it in the window instead and carry on.
        text = "".join(traceback.format_exception(kind, exc, tb))
        log.error("unhandled exception:\n%s", text)
        window.show_error(f"Internal error: {kind.__name__}: {exc} (details in the terminal)")

    sys.excepthook = on_exception
    # Ctrl+C: Python runs signal handlers only when it gets control, so a timer gives it some.
    interrupted: list[bool] = []

    def on_sigint(*_: object) -> None:
        # Python runs this at whatever bytecode it is executing — possibly inside a paint
        # handler of the 3D view. Closing from there destroys the window mid-paint (a segfault
        # in the next flush), so only schedule the close; it runs between events.
        interrupted.append(True)
        window.close_guard.discard_unsaved()   # Ctrl+C is the answer; the summary names what is lost
        QTimer.singleShot(0, window.close)  # stops the worker and joins its thread

    signal.signal(signal.SIGINT, on_sigint)
    keepalive = QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(SIGNAL_POLL_MS)

    if open_path is not None:
        window.recordings.open_recording(open_path)
        window.recordings.replay_only()
    else:
        if not start_paused:
            def run_once_loaded(state: str) -> None:
                if state == "idle":
                    worker.state_changed.disconnect(run_once_loaded)
                    window.run_requested.emit()
            worker.state_changed.connect(run_once_loaded)
        window.start()
    code = app.exec()
    keepalive.stop()
    if not window.shutdown(timeout_ms=1000):
        # A thread still running when Qt tears down aborts the process; exit without teardown.
        log.error("exiting with the training thread still busy")
        sys.stderr.flush()
        os._exit(code or 1)
    # Destroy the window now, in Qt's order, rather than leaving pyqtgraph's scenes to Python's
    # garbage collector at interpreter exit (a half-collected QGraphicsLayout can crash Qt).
    if interrupted:
        print(interrupted_summary(window), file=sys.stderr, flush=True)
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    gc.collect()
    return EXIT_INTERRUPTED if interrupted else code


def interrupted_summary(window) -> str:
    """The one line Ctrl+C prints: what was stopped and what was saved (after the worker ended)."""
    live = window.live
    trained = f"stopped training after {live.batches_trained} batches" if live.loaded else \
        "live training was not running"
    note = window.recordings.last_recording_note
    saved = f"recording closed: {note}" if note else "nothing was being recorded"
    model = (f"{live.unsaved_batches} trained batches not saved" if live.unsaved_batches else
             f"the model was saved to {live.checkpoint}" if live.checkpoint else "nothing trained to save")
    return f"Interrupted (Ctrl+C): {trained} ({model}); {saved}."
