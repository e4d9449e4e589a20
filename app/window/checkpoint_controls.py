"""Saving and opening the trained model from the window, and asking before weights are lost.

File → Save checkpoint (Ctrl+S) writes the live model (weights, optimiser, step count) with the
same atomic writer as the headless trainer; File → Open checkpoint… replaces the live model by
a saved one (its config, this run's device and data). Both run in the worker thread, between
batches; this controller only asks where, and keeps the count of trained batches that are not
saved (:class:`~app.window.live_run.LiveRun`) so that Reset, Open and closing the window ask
first whenever trained batches would be lost.

It is given the narrow things it uses — a parent for dialogs, the File menu, the live run's
record, a yes/no question and where dialogs start — not the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QFileDialog, QMenu, QWidget

from app.window.icons import icon
from app.window.live_run import LiveRun

#: Asks where to save (parent, default path) or what to open (parent, folder); None: cancelled.
PathProvider = Callable[[QWidget, str], str | None]
CHECKPOINT_FILTER = "Checkpoints (*.pt);;All files (*)"


def _ask_save(parent: QWidget, default: str) -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, "Save checkpoint", default, CHECKPOINT_FILTER)
    return path or None


def _ask_open(parent: QWidget, folder: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open checkpoint", folder, CHECKPOINT_FILTER)
    return path or None


def unsaved_text(batches: int) -> str:
    return f"{batches} trained batch{'es' if batches != 1 else ''}"


class CheckpointController(QObject):
    save_requested = pyqtSignal(str)     # → worker.save_checkpoint (queued)
    open_requested = pyqtSignal(str)     # → worker.open_checkpoint (queued)

    def __init__(self, parent: QWidget, menu: QMenu, live: LiveRun, confirm: Callable[[str, str], bool],
                 start_folder: Callable[[], str], save_provider: PathProvider = _ask_save,
                 open_provider: PathProvider = _ask_open) -> None:
        super().__init__(parent)
        self._parent = parent
        self.live = live
        self.confirm = confirm
        self._start_folder = start_folder
        self._ask_save = save_provider
        self._ask_open = open_provider
        self.save_action = QAction(icon("save"), "Save checkpoint…", parent)
        self.save_action.setShortcut(QKeySequence("Ctrl+S"))
        self.save_action.setToolTip("Save the trained model (weights, optimiser, batch count) to a .pt file (Ctrl+S)")
        self.save_action.triggered.connect(self.ask_save)
        self.open_action = QAction("Open checkpoint…", parent)
        self.open_action.setToolTip("Replace the live model by a saved one (its config, this run's device and data)")
        self.open_action.triggered.connect(self.ask_open)
        menu.addAction(self.save_action)
        menu.addAction(self.open_action)
        self.set_enabled(False)

    def set_enabled(self, loaded: bool) -> None:
        self.save_action.setEnabled(loaded)
        self.open_action.setEnabled(loaded)

    def default_path(self) -> str:
        if self.live.checkpoint is not None:
            return self.live.checkpoint
        return str(Path(self._start_folder()) / f"energy-flow-batch{self.live.batches_trained}.pt")

    def ask_path(self) -> str | None:
        """Ask where to save; None if cancelled. A folder typed in the dialog that does not exist
        yet is made (a new user typed runs/today/model.pt and got "No such file or directory").
        If it cannot be made, the save's own error names the file and the reason."""
        path = self._ask_save(self._parent, self.default_path())
        if path:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass        # the worker's "cannot write checkpoint PATH: <reason>" reports it
        return path or None

    def ask_save(self) -> None:
        """Ask where, then save there (the worker saves between batches)."""
        path = self.ask_path()
        if path:
            self.save_requested.emit(path)

    def ask_open(self) -> None:
        path = self._ask_open(self._parent, self._start_folder())
        if path and self.may_discard("Open checkpoint", f"replace the live model by {Path(path).name}"):
            self.open_requested.emit(path)

    def unsaved_note(self) -> str:
        """One line for a question that would discard the weights; "" when all are saved."""
        unsaved = self.live.unsaved_batches
        return (f"⚠ The weights of {unsaved_text(unsaved)} are not saved (No, then File → Save checkpoint, "
                "Ctrl+S, saves them).") if unsaved else ""

    def may_discard(self, title: str, doing: str) -> bool:
        """True when nothing trained is unsaved, or the user agreed to lose it by ``doing``."""
        unsaved = self.live.unsaved_batches
        if unsaved == 0:
            return True
        return self.confirm(title, f"The weights of {unsaved_text(unsaved)} are not saved. Discard them and "
                                   f"{doing}?\n\n(No: keep them; File → Save checkpoint, Ctrl+S, saves them.)")


def close_question(unsaved: int, batch: int, phase: str) -> str | None:
    """What closing the window would lose, in words (the caller adds its question); None when
    it loses nothing.

    ``batch``/``phase``: the batch in flight and what it is doing ("forward"/"backward" while
    it trains). Closing abandons such a batch within one propagation step rather than waiting
    for it: on the larger presets one batch takes minutes on a CPU."""
    parts = []
    if phase in ("forward", "backward"):
        parts.append(f"Batch {batch} is still training ({phase} pass): closing abandons it (the model keeps "
                     "the weights of the batches before it).")
    if unsaved:
        parts.append(f"The weights of {unsaved_text(unsaved)} are not saved.")
    return " ".join(parts) if parts else None
