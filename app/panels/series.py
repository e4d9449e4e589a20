"""Small helpers that keep plots legible in narrow docks: visible single points, titles that
never widen a plot."""

from __future__ import annotations

import types

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.colormaps import TITLE_SIZE


def set_title(plot: pg.PlotItem, text: str) -> None:
    """Set a plot's title without letting its text width set the plot's minimum width.

    pyqtgraph sizes a title to its text (``LabelItem.updateMin``, run on every text change and
    resize); a title longer than the dock made the whole plot layout wider than the dock, which
    then cut off the right part of every plot of the panel (x axes ending at step 6 of 16,
    legends half gone). The title keeps its height and claims no width; titles are written
    short enough for a ~330 px panel.
    """
    label = plot.titleLabel
    if not getattr(label, "_claims_no_width", False):
        label.updateMin = types.MethodType(_height_only_update_min, label)
        label._claims_no_width = True
    plot.setTitle(text, size=TITLE_SIZE)


def _height_only_update_min(label: pg.LabelItem) -> None:
    """``LabelItem.updateMin`` with the widths left at 0 (the size-hint table it answers from)."""
    height = label.itemRect().height()
    label.setMinimumWidth(0)
    label.setMinimumHeight(height)
    label._sizeHint = {Qt.SizeHint.MinimumSize: (0, height), Qt.SizeHint.PreferredSize: (0, height),
                       Qt.SizeHint.MaximumSize: (-1, -1), Qt.SizeHint.MinimumDescent: (0, 0)}
    label.updateGeometry()


def set_series(curve: pg.PlotDataItem, x: np.ndarray, y: np.ndarray) -> None:
    """Give ``curve`` its points; a lone point gets a dot, since a line through one point draws
    nothing (the first batch of a run, or a one-batch recording, would leave the plot empty)."""
    curve.setData(x, y)
    if x.shape[0] == 1:
        pen = curve.opts["pen"]
        curve.setSymbol("o")
        curve.setSymbolSize(5)
        curve.setSymbolPen(pen)
        curve.setSymbolBrush(pen.color())
    elif curve.opts["symbol"] is not None:
        curve.setSymbol(None)
