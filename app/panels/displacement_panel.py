"""Displacement: how far flows move per step along x, y and z, and how often the clamp bites.

One plot per axis (x linked) with percentile bands (p5–p95, p25–p75, median) and the step's
extreme moves (min / max, dashed lines), then the share of moved flows whose new position had to be
clamped into [-1, 1]. Index 0 is the placement — nothing has moved — and is NaN in the
telemetry by design; it is left out of every curve.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QWidget

from app.panels.base import SnapshotPanel
from app.panels.energy_panel import STEP_LINE_PEN, add_percentile_bands, set_percentile_bands
from app.panels.series import integer_ticks, set_title
from app.snapshot import Snapshot

AXES = ("Δx", "Δy", "Δz")
AXIS_COLORS = ((255, 120, 110), (120, 220, 120), (110, 160, 255))
EXTREME_STYLE = Qt.PenStyle.DashLine
CLAMP_COLOR = (255, 200, 80)


def signed(value: float) -> str:
    """``value`` with its sign, to 3 decimals; one that rounds to zero keeps its sign and size
    ("-4.2e-04", not the "-0.000" a new user puzzled over), and 0 itself is "0"."""
    if value == 0:
        return "0"
    if abs(value) < 0.0005:
        return f"{value:+.1e}"
    return f"{value:+.3f}"


class DisplacementPanel(SnapshotPanel):
    """Δx, Δy, Δz per step as percentile bands with min/max, and the clamp-hit fraction."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self._add_page(self.graphics)

        self.axis_plots: list[pg.PlotItem] = []
        self.band_curves: list[dict[str, pg.PlotDataItem]] = []
        self.min_curves: list[pg.PlotDataItem] = []
        self.max_curves: list[pg.PlotDataItem] = []
        self.step_lines: list[pg.InfiniteLine] = []
        for row, (name, color) in enumerate(zip(AXES, AXIS_COLORS)):
            plot = self.graphics.addPlot(row=row, col=0)
            plot.setLabel("left", name)
            plot.getAxis("left").enableAutoSIPrefix(False)   # keep plain normalised units
            plot.addLine(y=0, pen=pg.mkPen((255, 255, 255, 50), width=1))
            self.band_curves.append(add_percentile_bands(plot, color))
            extreme = pg.mkPen(color, width=1, style=EXTREME_STYLE)
            self.min_curves.append(plot.plot(pen=extreme))
            self.max_curves.append(plot.plot(pen=extreme))
            self.axis_plots.append(plot)
        self.clamp_plot = self.graphics.addPlot(row=len(AXES), col=0)
        self.clamp_plot.setLabel("left", "clamped")
        self.clamp_plot.setLabel("bottom", "propagation step")
        self.clamp_plot.setYRange(0, 1, padding=0.05)
        self.clamp_plot.getAxis("left").setTicks([[(0.0, "0"), (1.0, "1")], []])   # no overprinted labels
        self.clamp_curve = self.clamp_plot.plot(pen=pg.mkPen(CLAMP_COLOR, width=1), symbol="o", symbolSize=4,
                                                symbolBrush=CLAMP_COLOR, symbolPen=None)
        for plot in self.axis_plots + [self.clamp_plot]:
            integer_ticks(plot)
            line = pg.InfiniteLine(angle=90, movable=False, pen=STEP_LINE_PEN)
            plot.addItem(line)
            self.step_lines.append(line)
            if plot is not self.axis_plots[0]:
                plot.setXLink(self.axis_plots[0])

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: bands, extremes and clamp fraction for steps 1…T."""
        self._snapshot = snapshot
        agg = snapshot.telemetry.aggregates
        steps = np.arange(agg.num_steps + 1, dtype=np.float64)
        for axis in range(len(AXES)):
            set_percentile_bands(self.band_curves[axis], steps, agg.delta_percentiles[:, axis, :])
            for curve, values in ((self.min_curves[axis], agg.delta_min[:, axis]),
                                  (self.max_curves[axis], agg.delta_max[:, axis])):
                keep = np.isfinite(values)
                curve.setData(steps[keep], values[keep].astype(np.float64))
        keep = np.isfinite(agg.clamp_fraction)
        self.clamp_curve.setData(steps[keep], agg.clamp_fraction[keep].astype(np.float64))
        self.axis_plots[0].setXRange(0, max(agg.num_steps, 1), padding=0.02)
        self._show_page(agg.num_steps)

    def _show_step(self, step: int) -> None:
        agg = self._snapshot.telemetry.aggregates
        t = int(np.clip(step, 0, agg.num_steps))
        for line in self.step_lines:
            line.setValue(t)
        for axis, (name, plot) in enumerate(zip(AXES, self.axis_plots)):
            pct = agg.delta_percentiles[t, axis]
            if np.all(np.isfinite(pct)):
                set_title(plot, f"{name} at step {t}: median {signed(pct[2])}, "
                                f"p5–p95 [{signed(pct[0])}, {signed(pct[4])}]")
            else:
                set_title(plot, f"{name} at step {t}: nothing moved" + (" (placement)" if t == 0 else ""))
        clamp = agg.clamp_fraction[t]
        clamp_text = f"{clamp:.1%}" if np.isfinite(clamp) else "–"
        set_title(self.clamp_plot, f"moves clamped into [−1, 1] at step {t}: {clamp_text}")
