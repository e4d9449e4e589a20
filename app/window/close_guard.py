"""Closing the window without losing trained weights by a click.

Closing asks first whenever it would lose something: trained batches not saved, or a batch in
flight. With unsaved batches the question offers **Save and close** (the default), **Close
without saving** and **Cancel**. "Save and close" pauses training, asks where (the Save
checkpoint dialog), has the worker save between batches and closes the window once the worker
says the checkpoint is written; if the save fails, or the dialog is cancelled, the window stays
open (paused) and says so, so nothing is lost either way. A batch in flight with nothing unsaved
asks a plain yes/no.

It is given the narrow things it uses (the checkpoint controller, which holds the live run's
record and the window's yes/no question; pause; the banner), not the window's internals.
"""

from __future__ import annotations

from typing import Callable

from PyQt6.QtCore import QObject, QTimer, pyqtBoundSignal
from PyQt6.QtWidgets import QMessageBox, QWidget

from app.window.checkpoint_controls import CheckpointController, close_question
from app.window.live_run import LiveRun

TITLE = "Close Energy Flow Studio"
SAVE, CLOSE, CANCEL = "save", "close", "cancel"
#: (title, text) → SAVE, CLOSE or CANCEL
Chooser = Callable[[str, str], str]


def ask_save_close_cancel(parent: QWidget) -> Chooser:
    """A question with the three answers as buttons named for what they do."""
    def choose(title: str, text: str) -> str:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.NoButton, parent)
        save = box.addButton("Save and close…", QMessageBox.ButtonRole.AcceptRole)
        close = box.addButton("Close without saving", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(save)
        box.setEscapeButton(cancel)
        box.exec()
        clicked = box.clickedButton()
        return SAVE if clicked is save else CLOSE if clicked is close else CANCEL
    return choose


class CloseGuard(QObject):
    def __init__(self, window: QWidget, checkpoints: CheckpointController, pause: Callable[[], None],
                 say: Callable[[str, str], None]) -> None:
        super().__init__(window)
        self._window = window
        self._live: LiveRun = checkpoints.live
        self._checkpoints = checkpoints
        self._confirm = checkpoints.confirm
        self._pause = pause
        self._say = say
        #: Asks the three-way question; tests replace it.
        self.choose: Chooser = ask_save_close_cancel(window)
        #: Where a "Save and close" is saving; the window closes when the worker confirms it.
        self.saving_to: str | None = None

    def discard_unsaved(self) -> None:
        """From now on closing asks nothing and discards what is unsaved: for Ctrl+C in the
        terminal and for scripts done with the window, each of which says what it discards.
        Both questions are answered (a batch in flight, and trained batches not saved)."""
        self._confirm = lambda title, text: True
        self.choose = lambda title, text: CLOSE

    def may_close(self, worker_running: bool, batch: int, phase: str) -> bool:
        """True when the window may close now; otherwise it stays (cancelled, or saving first)."""
        if self.saving_to is not None:
            self._say(f"Saving to {self.saving_to} before closing…", "info")
            return False
        question = close_question(self._live.unsaved_batches, batch, phase) if worker_running else None
        if question is None:
            return True
        if self._live.unsaved_batches == 0:          # only a batch in flight would be abandoned
            return self._confirm(TITLE, question + "\n\nClose anyway?")
        waits = f" (saving waits for batch {batch} to finish)" if phase in ("forward", "backward") else ""
        answer = self.choose(TITLE, question + f"\n\nSave them before closing{waits}?")
        if answer == CLOSE:
            return True
        if answer == SAVE:
            self._pause()        # first: what is saved is what the dialog's default name counts
            path = self._checkpoints.ask_path()
            if path:
                self.saving_to = path
                self._say(f"Saving to {path}, then closing…", "info")
                self._checkpoints.save_requested.emit(path)
            else:
                self._say("Not closed: training is paused, nothing was saved (Run resumes).", "info")
        return False

    def watch(self, saved: pyqtBoundSignal, errors: pyqtBoundSignal) -> None:
        """Follow the worker's ``checkpoint_saved(path, batches)`` and ``error(message)``."""
        saved.connect(self.on_saved)
        errors.connect(self.on_error)

    def on_saved(self, path: str, batches: int) -> None:
        if self.saving_to is not None and path == self.saving_to:
            self.saving_to = None
            QTimer.singleShot(0, self._window.close)

    def on_error(self, message: str) -> None:
        """A save that fails leaves the window open (the error is already shown)."""
        if self.saving_to is not None:
            self.saving_to = None
            self._say(f"{message} The window stays open: nothing was lost.", "error")
