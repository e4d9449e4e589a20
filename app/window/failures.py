"""Failures shown where they happen, never in a blocking dialog and never fatal to the window.

:class:`MessageBanner` is the line above the 3D view that says what went wrong (or what is
loading); :func:`build_panel` builds a panel from its spec and, when its constructor raises,
puts an :class:`UnavailableWidget` saying why in its place, so one broken panel costs that
panel, not the app.
"""

from __future__ import annotations

import logging
import traceback

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from app.panels.registry import PanelSpec

log = logging.getLogger(__name__)


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


class UnavailableWidget(QLabel):
    """Stands in for a widget whose module failed to import, saying why (loudly, in red)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} unavailable:\n{reason}")
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet("color: #ff6b6b; border: 1px dashed #ff6b6b; padding: 8px;")


def build_panel(spec: PanelSpec) -> QWidget:
    """``spec.cls()``, or an :class:`UnavailableWidget` naming the error in its place."""
    try:
        return spec.cls()
    except Exception as exc:  # noqa: BLE001 - show the failure where the panel would be
        log.error("cannot create the %s panel:\n%s", spec.title, traceback.format_exc())
        return UnavailableWidget(f"{spec.title} panel", f"{type(exc).__name__}: {exc}")
