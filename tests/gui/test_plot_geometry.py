"""No legend or label on data (issue 28, item 2), checked from the rendered widgets' geometry:
every legend outside its plot's data area, no two tick labels of an axis overlapping, no axis
title cut by its axis or its view ("batch/s" read "tch/s"), batch and step axes at whole
numbers, energy axes from 0 — in every panel, at 1280×800 and 1920×1080."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from PyQt6.QtGui import QFontMetrics, QImage, QPainter

from app.panels.registry import DIAGNOSTICS, TEXT_BRIDGE, WINDOW_PANELS
from app.panels.series import LegendStrip, legible_axes
from tests.gui.builders import trained_snapshot

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


def _label_clipped(axis: pg.AxisItem, view: pg.GraphicsView) -> str | None:
    """Why the axis title is cut, or None: its text box must lie within the axis (a vertical
    title longer than its axis is drawn over the plots beside it and cut) and within the view."""
    label = axis.label
    box = label.mapRectToScene(label.boundingRect())
    # The text item's box has a few px of document margin around the glyphs: compare the text.
    margin = label.document().documentMargin()
    box = box.adjusted(margin, margin, -margin, -margin)
    own = axis.sceneBoundingRect()
    seen = view.mapToScene(view.viewport().rect()).boundingRect()
    for name, bounds in (("its axis", own), ("the view", seen)):
        if not bounds.adjusted(-1, -1, 1, 1).contains(box):
            return f"{box} outside {name} {bounds}"
    return None


def _plots(window):
    for title, panel in window.panels.items():
        for graphics in panel.findChildren(pg.GraphicsLayoutWidget):
            for item in graphics.ci.items:
                if isinstance(item, pg.PlotItem) and item.isVisible():
                    yield title, item, graphics


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080), (1100, 700)])
def test_no_legend_or_tick_label_on_data_and_whole_batch_ticks(qtbot, make_window, size):
    window = make_window()
    for _ in range(3):
        _step(qtbot, window)
    window.resize(*size)
    window.reset_layout()
    qtbot.wait(300)
    legends = checked_axes = titles = 0
    for title, dock in window.docks.items():
        dock.raise_()
        qtbot.wait(150)
        for plot, graphics in [(p, g) for t, p, g in _plots(window) if t == title]:
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
                if label and axis.label.isVisible():
                    clipped = _label_clipped(axis, graphics)
                    assert clipped is None, f"{title}: the {name} axis title {label!r} is cut: {clipped}"
                    titles += 1
                if name == "bottom" and ("batch" in label or "step" in label):
                    texts = [t for _, t in boxes]
                    assert all(float(t.replace("−", "-")).is_integer() for t in texts), f"{title}: {texts}"
                checked_axes += 1
    energy = window.panels["Energy"]
    assert energy.hist_plot.viewRange()[0][0] >= 0 and energy.band_plot.viewRange()[1][0] >= 0
    assert legends >= 6 and checked_axes >= 20 and titles >= 15


@pytest.mark.parametrize("spec", [s for s in WINDOW_PANELS + (DIAGNOSTICS,) if s.scrolls and s.draws_snapshots and s is not TEXT_BRIDGE],
                         ids=lambda s: s.title)
def test_axis_titles_whole_at_each_panels_minimum_size(qtbot, spec):
    """A dock smaller than its panel's minimum size scrolls, so the minimum size is the smallest a
    panel is ever drawn at: every axis title must be whole there ("batch/s" read "tch/s")."""
    panel = spec.cls()
    qtbot.addWidget(panel)
    panel.resize(*spec.min_size)
    panel.show()
    qtbot.waitExposed(panel)
    snap = trained_snapshot(batches=3, seed=0)
    panel.set_snapshot(snap)
    panel.set_step(snap.telemetry.num_steps // 2)
    qtbot.wait(100)
    titles = 0
    for graphics in panel.findChildren(pg.GraphicsLayoutWidget):
        for plot in [i for i in graphics.ci.items if isinstance(i, pg.PlotItem) and i.isVisible()]:
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                if axis.isVisible() and axis.labelText and axis.label.isVisible():
                    clipped = _label_clipped(axis, graphics)
                    assert clipped is None, f"{spec.title} at {spec.min_size}: {axis.labelText!r} is cut: {clipped}"
                    titles += 1
    assert titles >= 1


def test_an_axis_too_short_for_two_tick_labels_shows_one(qtbot):
    """A plot squeezed to ~20 px (a data-dependent range like 18.8–19.0 on the speed axis) once
    printed two tick labels over each other: the thinning keeps one where two do not fit."""
    graphics = pg.GraphicsLayoutWidget()
    qtbot.addWidget(graphics)
    plot = graphics.addPlot()
    legible_axes(graphics)
    axis = plot.getAxis("left")
    label_height = QFontMetrics(axis.style["tickFont"] or axis.font()).height()
    short = axis.tickValues(18.8, 19.0, 1.5 * label_height)
    assert sum(len(values) for _, values in short) == 1, short
    tall = axis.tickValues(18.8, 19.0, 20 * label_height)
    assert sum(len(values) for _, values in tall) >= 2, tall
