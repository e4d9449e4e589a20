"""Toolbar and button icons that render on any machine.

Media-control characters (⏸ ⏭ ⏹ ⏺) are missing from the fonts these machines ship (DejaVu,
URW base35), so buttons labelled with them showed empty boxes. Icons come from the Qt style,
which draws them itself, and the one it lacks — record — is drawn here.
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QColor, QIcon, QPainter, QPixmap
from PyQt6.QtWidgets import QApplication, QStyle

_STANDARD = {
    "run": QStyle.StandardPixmap.SP_MediaPlay,
    "play": QStyle.StandardPixmap.SP_MediaPlay,
    "pause": QStyle.StandardPixmap.SP_MediaPause,
    "step": QStyle.StandardPixmap.SP_MediaSkipForward,
    "reset": QStyle.StandardPixmap.SP_BrowserReload,
    "export": QStyle.StandardPixmap.SP_DialogSaveButton,
    "save": QStyle.StandardPixmap.SP_DriveFDIcon,
    "open": QStyle.StandardPixmap.SP_DialogOpenButton,
    "help": QStyle.StandardPixmap.SP_DialogHelpButton,
    "quit": QStyle.StandardPixmap.SP_DialogCloseButton,
}
RECORD_COLOR = "#e0342b"


def icon(name: str) -> QIcon:
    """The icon called ``name`` (a key of the table above, or "record")."""
    if name == "record":
        return record_icon()
    style = QApplication.style()
    if style is None or name not in _STANDARD:
        raise ValueError(f"no icon {name!r}; known: record, {', '.join(_STANDARD)}")
    return style.standardIcon(_STANDARD[name])


def record_icon(size: int = 32) -> QIcon:
    """A filled red disc: the usual "record" sign."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(RECORD_COLOR))
    painter.drawEllipse(QPointF(size / 2, size / 2), size * 0.34, size * 0.34)
    painter.end()
    return QIcon(pixmap)
