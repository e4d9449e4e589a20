"""Per-batch series that stay visible however few points they have."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg


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
