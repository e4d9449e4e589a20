"""Energy: how the flows' energy is distributed, at one step and over all steps of the batch.

Top: the histogram of the energies of the flows processed at the selected step (fixed bins over
[0, 1], from the model's device-side histogram), with the input energy range — the energies
the input mapper gave the flows at placement — shaded, so drift away from it is visible.
Bottom: the distribution over steps as TensorBoard-style percentile bands (p5–p95, p25–p75,
median) with the selected step marked.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QWidget

from app.colormaps import ENERGY_LUT, ENERGY_RANGE, energy_range_of, qcolor
from app.panels.base import SnapshotPanel
from app.panels.series import integer_ticks, legend_below, set_title
from app.snapshot import Snapshot, batch_axis
from energy_flow.trace.figures import BATCH

STEP_LINE_PEN = pg.mkPen((255, 255, 255, 140), width=1)
HIST_COLOR = qcolor(tuple(ENERGY_LUT[170]))
BAND_COLOR = qcolor(tuple(ENERGY_LUT[150]))
INPUT_RANGE_BRUSH = (90, 160, 255, 45)
PLANE_PENS = ((255, 150, 80), (110, 190, 255), (180, 255, 140))


def add_percentile_bands(plot: pg.PlotItem, color: tuple[int, ...]) -> dict[str, pg.PlotDataItem]:
    """p5–p95 and p25–p75 filled bands plus a median line; returns the five curves by name.

    The bands are FillBetweenItems over invisible edge curves, so updating a curve's data is
    enough to move its band.
    """
    rgb = color[:3]
    names = ("p5", "p25", "p50", "p75", "p95")
    curves = {n: plot.plot(pen=pg.mkPen((*rgb, 90), width=1)) for n in names if n != "p50"}
    plot.addItem(pg.FillBetweenItem(curves["p5"], curves["p95"], brush=(*rgb, 45)))
    plot.addItem(pg.FillBetweenItem(curves["p25"], curves["p75"], brush=(*rgb, 90)))
    curves["p50"] = plot.plot(pen=pg.mkPen(rgb, width=1), name="median")
    return curves


def set_percentile_bands(curves: dict[str, pg.PlotDataItem], x: np.ndarray, pct: np.ndarray) -> None:
    """Give the five curves their columns of ``pct`` [n, 5] at ``x``, dropping non-finite rows.

    Steps with no flow (or nothing moved, at step 0) are NaN in the telemetry; they are left
    out rather than drawn, so the bands never pass through a NaN.
    """
    keep = np.all(np.isfinite(pct), axis=1)
    for i, name in enumerate(("p5", "p25", "p50", "p75", "p95")):
        curves[name].setData(x[keep], pct[keep, i].astype(np.float64))


class EnergyPanel(SnapshotPanel):
    """Energy histogram at the selected step, and percentile bands over the steps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self._add_page(self.graphics)

        self.hist_plot = self.graphics.addPlot(row=0, col=0)
        self.hist_plot.setLabel("bottom", "energy")
        self.hist_plot.setLabel("left", "flows")
        self.hist_plot.setXRange(*ENERGY_RANGE, padding=0)
        self.input_range = pg.LinearRegionItem(values=(0.0, 0.0), movable=False, brush=INPUT_RANGE_BRUSH,
                                               pen=pg.mkPen((90, 160, 255, 160), width=1))
        self.input_range.setZValue(-10)
        self.hist_plot.addItem(self.input_range)
        self.hist_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, brush=(*HIST_COLOR[:3], 110),
                                              pen=pg.mkPen(HIST_COLOR, width=1))


        self.band_plot = self.graphics.addPlot(row=1, col=0)
        set_title(self.band_plot, "energy over propagation steps (all flows)")
        self.band_plot.setLabel("bottom", "propagation step")
        integer_ticks(self.band_plot)
        self.band_plot.setLabel("left", "energy")
        self.band_plot.setYRange(*ENERGY_RANGE, padding=0)
        legend_below(self.band_plot)
        self.band_curves = add_percentile_bands(self.band_plot, BAND_COLOR)
        self.band_plot.legend.addItem(pg.BarGraphItem(x=[0], height=[0], width=0, brush=(*BAND_COLOR[:3], 90)),
                                      "p25–p75, p5–p95")
        self.step_line = pg.InfiniteLine(angle=90, movable=False, pen=STEP_LINE_PEN)
        self.band_plot.addItem(self.step_line)

        # Over the run: the deposit_share figure (energy deposited on each plane / energy placed).
        self.share_plot = self.graphics.addPlot(row=2, col=0)
        set_title(self.share_plot, "placed energy deposited, per output plane, over the run")
        self.share_plot.setLabel("bottom", "batch")
        self.share_plot.setLabel("left", "share")
        self.share_plot.setLimits(yMin=0.0)
        self.share_plot.getAxis("left").enableAutoSIPrefix(False)   # a share reads 0.28, not 280 (x0.001)
        integer_ticks(self.share_plot)
        legend_below(self.share_plot)
        self.share_curves: list[pg.PlotDataItem] = []

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: percentile bands and input range; the histogram follows the step."""
        self._snapshot = snapshot
        tel = snapshot.telemetry
        agg = tel.aggregates
        self.input_range.setRegion(tel.input_energy_range)
        lo, hi = energy_range_of(tel)   # [0, 1], or another model's wider range (signed, > 1)
        # The model's energies are ≥ 0: the axis starts at 0, not at −0.02 of padding. A recording
        # of another model may hold negative energies; its range is padded on both sides.
        pad = 0.02 * (hi - lo)
        bottom = lo - pad if lo < 0 else lo
        self.hist_plot.setXRange(bottom, hi + pad, padding=0)
        self.band_plot.setYRange(bottom, hi + pad, padding=0)
        steps = np.arange(agg.num_steps + 1, dtype=np.float64)
        set_percentile_bands(self.band_curves, steps, agg.energy_percentiles)
        self.band_plot.setXRange(0, max(agg.num_steps, 1), padding=0.02)
        self._set_deposit_share(snapshot, tel.plane_z)
        self._show_page(agg.num_steps)

    def _set_deposit_share(self, snapshot: Snapshot, plane_z: tuple[float, ...]) -> None:
        """One curve per output plane (kept apart, never summed); NaN batches are left out."""
        x, label = batch_axis(snapshot.history)
        share = np.asarray(snapshot.history.get(BATCH.deposit_share.key, np.zeros((0, 0))), dtype=np.float64)
        if len(self.share_curves) != len(plane_z):
            self.share_plot.clear()
            self.share_plot.legend.clear()
            self.share_curves = [self.share_plot.plot(pen=pg.mkPen(PLANE_PENS[i % len(PLANE_PENS)], width=1),
                                                      name=f"plane z = {z:+g}") for i, z in enumerate(plane_z)]
        self.share_plot.setLabel("bottom", label)
        last, top = [], 0.0
        for i, (curve, z) in enumerate(zip(self.share_curves, plane_z)):
            y = share[:, i] if share.ndim == 2 and share.shape[1] > i else np.zeros(0)
            keep = np.isfinite(y) & np.isfinite(x[:y.size])
            curve.setData(x[:y.size][keep], y[keep])
            if keep.any():
                top = max(top, float(y[keep].max()))
                last.append(f"z = {z:+g}: {y[keep][-1]:.3f}")
        self.share_plot.setYRange(0.0, max(top, 1e-3) * 1.1, padding=0)   # a share from 0: no zoomed-in wiggle
        latest = " · ".join(last) if last else "not measured (tracing off, or not in the recording)"
        set_title(self.share_plot, f"placed energy deposited, per output plane, over the run<br>{latest}")

    def _show_step(self, step: int) -> None:
        tel = self._snapshot.telemetry
        agg = tel.aggregates
        t = int(np.clip(step, 0, agg.num_steps))
        counts = agg.energy_hist[t]
        self.hist_curve.setData(agg.energy_bin_edges.astype(np.float64), counts.astype(np.float64))
        self.step_line.setValue(t)
        median = agg.energy_percentiles[t, 2]
        # At step t the histogram holds every flow that was stepped (alive when the step began,
        # so also those that ended during it), not only the flows still alive afterwards.
        what = "placement" if t == 0 else f"step {t}"
        counted = "flows placed" if t == 0 else "flows stepped"
        median_text = f"median {median:.3f}" if np.isfinite(median) else "no flow processed"
        lo, hi = tel.input_energy_range
        set_title(self.hist_plot, f"energy at {what}: {int(counts.sum()):,} {counted}, {median_text}"
                                f"<br>input energy range [{lo:.3f}, {hi:.3f}] (shaded)")
