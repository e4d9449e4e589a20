"""Any panel as a PNG: what the user sees in a dock, written the way the 3D view's PNG is.

``QWidget.grab`` renders the widget with its children — pyqtgraph plots, tables, labels, and
GL content too under Xvfb — at the widget's size on screen, so the file shows
exactly the panel as it is laid out. (A single pyqtgraph plot can also be exported at another
size from its own right-click menu, "Export…", which pyqtgraph provides.) The file is written
atomically through :func:`app.window.export.save_png`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QWidget

from app.window.export import save_png


def widget_rgba(widget: QWidget) -> np.ndarray:
    """[h, w, 4] uint8 RGBA copy of what ``widget`` shows (ValueError when it has no size)."""
    if widget.width() <= 0 or widget.height() <= 0:
        raise ValueError(f"{type(widget).__name__} has no size on screen ({widget.width()}×{widget.height()}): "
                         "show its dock first")
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    w, h = image.width(), image.height()
    data = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8)
    return data.reshape(h, image.bytesPerLine())[:, : 4 * w].reshape(h, w, 4).copy()


def save_widget_png(widget: QWidget, path: str | os.PathLike) -> Path:
    """Write ``widget`` as a PNG at ``path`` (atomically); raises OSError/ValueError naming the problem."""
    return save_png(path, widget_rgba(widget))
