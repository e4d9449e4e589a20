"""Help → Keyboard shortcuts and Help → About: texts built from the live window, not a copy.

The shortcut list is read from the window's actions, so it cannot drift from what the keys
really do; About names the app's version, its docs, the versions it runs on and the device.
"""

from __future__ import annotations

import html
import platform
from pathlib import Path
from typing import Callable

from PyQt6.QtCore import PYQT_VERSION_STR, QT_VERSION_STR
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QMainWindow, QMessageBox


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


def about_text(device: str) -> str:
    """The app's version, where its docs are, versions of what it runs on, and the live run's
    device (``device``: in words, or why there is none)."""
    import numpy
    import pyqtgraph
    import torch
    import vispy

    import energy_flow

    docs = Path(energy_flow.__file__).resolve().parents[1] / "docs"
    lines = [
        f"<b>Energy Flow Studio {html.escape(energy_flow.__version__)}</b> — watch an energy-flow lattice "
        "network learn.",
        f"Documentation: README.md and {html.escape(str(docs))} (recording format, health checks, benchmarks); "
        "Help → Keyboard shortcuts lists every key.",
        f"Device of the live run: {html.escape(device)}",
        f"Python {platform.python_version()} · torch {torch.__version__} · numpy {numpy.__version__}",
        f"Qt {QT_VERSION_STR} · PyQt {PYQT_VERSION_STR} · VisPy {vispy.__version__} · "
        f"pyqtgraph {pyqtgraph.__version__}",
    ]
    return "<br>".join(lines)


def add_help_menu(window: QMainWindow, device: Callable[[], str]) -> None:
    """Help → Keyboard shortcuts (F1) and About; ``device`` names the live run's device when asked."""
    menu = window.menuBar().addMenu("&Help")
    shortcuts = menu.addAction("Keyboard shortcuts")
    shortcuts.setShortcut(QKeySequence("F1"))
    shortcuts.triggered.connect(lambda: QMessageBox.information(window, "Keyboard shortcuts", shortcuts_text(window)))
    about = menu.addAction("About Energy Flow Studio")
    about.triggered.connect(lambda: QMessageBox.about(window, "About Energy Flow Studio", about_text(device())))
