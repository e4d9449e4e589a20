"""Help → Keyboard shortcuts and Help → About: texts built from the live window, not a copy.

The shortcut list is read from the window's actions, so it cannot drift from what the keys
really do; About names the versions and the device the run uses.
"""

from __future__ import annotations

import html
import platform

from PyQt6.QtCore import PYQT_VERSION_STR, QT_VERSION_STR
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QMainWindow


def shortcuts_text(window: QMainWindow) -> str:
    """One line per action with a shortcut: "Ctrl+O — Open recording…"."""
    rows = []
    seen: set[str] = set()
    for action in window.findChildren(QAction):
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
        keys = [k for k in keys if k]
        name = action.text().replace("&", "")
        if not keys or not name or name in seen:
            continue
        seen.add(name)
        rows.append(f"{' or '.join(keys)} — {name}")
    return "\n".join(sorted(rows, key=str.lower))


def about_text(window: QMainWindow) -> str:
    """Versions of what the app runs on, and the device of the live run (if it is loaded)."""
    import numpy
    import pyqtgraph
    import torch
    import vispy

    worker = getattr(window, "worker", None)
    trainer = getattr(worker, "trainer", None)
    device = str(trainer.device) if trainer is not None else "not loaded (live training not started)"
    lines = [
        "<b>Energy Flow Studio</b> — watch an energy-flow lattice network learn.",
        f"Device of the live run: {html.escape(device)}",
        f"Python {platform.python_version()} · torch {torch.__version__} · numpy {numpy.__version__}",
        f"Qt {QT_VERSION_STR} · PyQt {PYQT_VERSION_STR} · VisPy {vispy.__version__} · "
        f"pyqtgraph {pyqtgraph.__version__}",
    ]
    return "<br>".join(lines)
