"""Small helpers that keep plots legible in narrow docks: visible single points, titles that
never widen a plot, and legends in a row of their own under the plot, never on the data."""

from __future__ import annotations

import types
import weakref

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


class LegendStrip(pg.LegendItem):
    """A legend laid out by its plot's layout, in a row under the x axis: never over the data.

    pyqtgraph's legend floats over the view box at an offset, where it covered curves ("requested"
    cut off, "denied" hidden, the compare legend over the Training curves). This one tells the
    layout its height and claims no width (a narrow dock must not be widened by it); its entries
    wrap into ``columns`` columns.
    """

    def updateSize(self) -> None:  # noqa: N802 (pyqtgraph API)
        height = 0.0
        for row in range(self.layout.rowCount()):
            items = [self.layout.itemAt(row, col) for col in range(self.layout.columnCount())]
            height += max((item.height() for item in items if item), default=0.0)
        self.setMinimumHeight(height)
        self.setMaximumHeight(height)
        self.setMinimumWidth(0)
        self.updateGeometry()


def legend_below(plot: pg.PlotItem, columns: int = 3) -> LegendStrip:
    """Give ``plot`` a :class:`LegendStrip` under its x axis; curves plotted with ``name=`` join it."""
    legend = LegendStrip(colCount=columns, labelTextSize=TITLE_SIZE, verSpacing=-6)
    plot.layout.addItem(legend, 4, 1)
    plot.legend = legend       # PlotItem.addItem adds named items to ``plot.legend``
    return legend


def integer_ticks(plot: pg.PlotItem, axis: str = "bottom") -> None:
    """Ticks of ``axis`` only at whole numbers: batches and propagation steps have no 1.5.

    pyqtgraph picks tick spacings of 0.5 or 0.2 when the range is short (the first batches of a
    run read "1.5, 2.5"); the minor levels are dropped and fractional major ticks filtered out.
    """
    item = plot.getAxis(axis)
    base = item.tickValues

    def whole(minVal: float, maxVal: float, size: float) -> list:   # noqa: N803 (pyqtgraph API)
        levels = []
        for spacing, values in base(minVal, maxVal, size):
            kept = [v for v in values if float(v).is_integer()]
            if kept and spacing >= 1:
                levels.append((spacing, kept))
        if not levels:        # a range under one unit: whole numbers inside it, if any
            start, stop = int(np.ceil(minVal)), int(np.floor(maxVal))
            levels = [(1.0, [float(v) for v in range(start, stop + 1)])] if stop >= start else []
        return levels[:1]

    item.tickValues = whole


#: Tick labels keep at least this many label heights apart (a short axis shows fewer ticks).
TICK_GAP_LABELS = 1.6
#: Axes already thinned (panels call :func:`legible_axes` on every new page; wrap each axis once).
_THINNED: weakref.WeakSet[pg.AxisItem] = weakref.WeakSet()


def thin_ticks(item: pg.AxisItem) -> None:
    """Fewer ticks where an axis is short, so its labels never print over one another.

    pyqtgraph always draws the first tick level's labels whatever the axis length; on the ~80 px
    plots of a narrow dock the displacement panel's "−0.4" and "−0.2" were stacked on each
    other, as were the ‖Δθ‖/‖θ‖ labels. Each level keeps every k-th tick so that labels stand at
    least :data:`TICK_GAP_LABELS` label heights (left/right axes) or label widths apart.
    """
    if item in _THINNED:
        return
    _THINNED.add(item)
    base = item.tickValues

    def spaced(minVal: float, maxVal: float, size: float) -> list:   # noqa: N803 (pyqtgraph API)
        metrics = pg.QtGui.QFontMetrics(item.style["tickFont"] or item.font())
        vertical = item.orientation in ("left", "right")
        label = metrics.height() if vertical else metrics.horizontalAdvance("−0.000")
        room = max(1, int(size / (TICK_GAP_LABELS * label)))   # an axis too short for two: one
        levels = []
        for spacing, values in base(minVal, maxVal, size):
            values = list(values)
            step = -(-len(values) // room)
            if step > 1:          # (a log axis's levels come without a spacing)
                spacing, values = (None if spacing is None else spacing * step), values[::step]
            levels.append((spacing, values))
        return levels[:1]

    item.tickValues = spaced


def legible_axes(graphics: pg.GraphicsLayoutWidget) -> None:
    """:func:`thin_ticks` on the left and bottom axes of every plot in ``graphics``."""
    for plot in graphics.ci.items:
        if isinstance(plot, pg.PlotItem):
            for name in ("left", "bottom"):
                thin_ticks(plot.getAxis(name))
