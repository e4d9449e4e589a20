"""No legend or label on data (issue 28, item 2), checked from the rendered widgets' geometry:
every legend outside its plot's data area, no two tick labels of an axis overlapping, batch and
step axes at whole numbers, energy axes from 0 — in every panel, at 1280×800 and 1920×1080."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from PyQt6.QtGui import QImage, QPainter

from app.panels.series import LegendStrip

SNAPSHOT_TIMEOUT_MS = 15_000


def _step(qtbot, window) -> None:
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS):
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")


def _tick_label_boxes(axis: pg.AxisItem) -> list[tuple[object, str]]:
    """The boxes (axis coordinates) and texts of the tick labels the axis draws now."""
    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    if specs is None:
        return []
    return [(rect, text) for rect, _flags, text in specs[2]]


def _plots(window):
    for title, panel in window.panels.items():
        for graphics in panel.findChildren(pg.GraphicsLayoutWidget):
            for item in graphics.ci.items:
                if isinstance(item, pg.PlotItem) and item.isVisible():
                    yield title, item


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_no_legend_or_tick_label_on_data_and_whole_batch_ticks(qtbot, make_window, size):
    window = make_window()
    for _ in range(3):
        _step(qtbot, window)
    window.resize(*size)
    window.reset_layout()
    qtbot.wait(300)
    legends = checked_axes = 0
    for title, dock in window.docks.items():
        dock.raise_()
        qtbot.wait(150)
        for _title, plot in [(t, p) for t, p in _plots(window) if t == title]:
            data = plot.vb.sceneBoundingRect()
            legend = plot.legend
            if legend is not None and legend.isVisible() and legend.items:
                assert isinstance(legend, LegendStrip), f"{title}: a floating legend"
                box = legend.sceneBoundingRect()
                assert not box.intersects(data), f"{title}: legend {box} over the data {data}"
                legends += 1
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                if not axis.isVisible():
                    continue
                boxes = _tick_label_boxes(axis)
                for i, (a, ta) in enumerate(boxes):
                    for b, tb in boxes[i + 1:]:
                        assert not a.intersects(b), f"{title}: tick labels {ta!r} and {tb!r} overlap"
                label = axis.labelText or ""
                if name == "bottom" and ("batch" in label or "step" in label):
                    texts = [t for _, t in boxes]
                    assert all(float(t.replace("−", "-")).is_integer() for t in texts), f"{title}: {texts}"
                checked_axes += 1
    energy = window.panels["Energy"]
    assert energy.hist_plot.viewRange()[0][0] >= 0 and energy.band_plot.viewRange()[1][0] >= 0
    assert legends >= 6 and checked_axes >= 20
