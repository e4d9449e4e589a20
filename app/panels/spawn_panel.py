"""Spawns: how many children the spawn head asked for, how many the flow budget allowed.

Top: per propagation step of the newest batch, requested / granted / denied-by-budget as step
lines (counts over all flows of the batch), with the selected step marked. Bottom: the same
three totals per batch over the whole run, from the snapshot's history, divided by the flows the
batch placed on the start plane, so a researcher sees how often flows split and whether the
budget starts to bind as training goes on — and a smaller batch (the last of an epoch) does not
read as a drop in spawning.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QWidget

from app.colormaps import SPAWN_SERIES_COLORS
from app.panels.base import SnapshotPanel
from app.panels.series import integer_ticks, legend_below, set_series, set_title
from app.snapshot import Snapshot, batch_axis
from energy_flow.trace.figures import BATCH

#: The per-batch spawn figures the run's curves draw, by curve name.
HISTORY_FIGURES = {"requested": BATCH.spawn_requested, "granted": BATCH.spawn_granted, "denied": BATCH.spawn_denied}

STEP_LINE_PEN = pg.mkPen((255, 255, 255, 140), width=1)


def per_placed_flow(counts: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """``counts / placed`` per batch; NaN (not drawn) where the placed count is unknown or 0."""
    out = np.full(counts.shape, np.nan)
    n = min(counts.shape[0], placed.shape[0])
    ok = np.isfinite(placed[:n]) & (placed[:n] > 0)
    out[:n][ok] = counts[:n][ok] / placed[:n][ok]
    return out


class SpawnPanel(SnapshotPanel):
    """Spawn requests, grants and budget denials: per step of the batch and per batch of the run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        self.graphics = pg.GraphicsLayoutWidget()
        self._add_page(self.graphics)
        self.step_plot = self.graphics.addPlot(row=0, col=0)
        self.step_plot.setLabel("bottom", "propagation step")
        integer_ticks(self.step_plot)
        self.step_plot.setLabel("left", "flows")
        legend_below(self.step_plot)
        self.step_curves: dict[str, pg.PlotDataItem] = {}
        # Granted (filled) first, requested dashed over it: they coincide whenever the budget
        # does not bind, and both must stay visible.
        for name in ("granted", "requested", "denied"):
            color = SPAWN_SERIES_COLORS[name]
            filled = name == "granted"
            style = Qt.PenStyle.DashLine if name == "requested" else Qt.PenStyle.SolidLine
            self.step_curves[name] = self.step_plot.plot(
                stepMode="center", pen=pg.mkPen(color, width=1, style=style), name=name,
                fillLevel=0 if filled else None, brush=(*color, 50) if filled else None)
        self.step_line = pg.InfiniteLine(angle=90, movable=False, pen=STEP_LINE_PEN)
        self.step_plot.addItem(self.step_line)

        self.history_plot = self.graphics.addPlot(row=1, col=0)
        set_title(self.history_plot, "spawns per placed flow, per batch over the run")
        self.history_plot.setLabel("bottom", "batch")
        integer_ticks(self.history_plot)
        self.history_plot.setLabel("left", "per flow")   # whole in the panel at its minimum size
        self.history_plot.getAxis("left").enableAutoSIPrefix(False)   # 0.8, not "800 (x0.001)"
        legend_below(self.history_plot)
        self.history_curves = {
            name: self.history_plot.plot(pen=pg.mkPen(SPAWN_SERIES_COLORS[name], width=1,
                                                      style=Qt.PenStyle.DashLine if name == "requested"
                                                      else Qt.PenStyle.SolidLine), name=name)
            for name in ("granted", "requested", "denied")
        }
        for curve in self.history_curves.values():
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: per-step counts and the run's per-batch totals."""
        self._snapshot = snapshot
        agg = snapshot.telemetry.aggregates
        counts = {"requested": agg.spawn_requested, "granted": agg.spawn_granted, "denied": agg.spawn_denied}
        edges = np.arange(agg.num_steps + 2, dtype=np.float64) - 0.5
        for name, curve in self.step_curves.items():
            curve.setData(edges, counts[name].astype(np.float64))
        hist = snapshot.history
        x, x_label = batch_axis(hist)
        self.history_plot.setLabel("bottom", x_label)
        placed = np.asarray(hist.get(BATCH.placed.key, np.zeros(0)), dtype=np.float64)
        for name, curve in self.history_curves.items():
            figure = HISTORY_FIGURES[name]
            y = per_placed_flow(np.asarray(hist.get(figure.key, np.zeros(0)), dtype=np.float64), placed)
            keep = np.isfinite(y)
            set_series(curve, x[keep], y[keep])
        self._show_page(agg.num_steps)

    def _show_step(self, step: int) -> None:
        agg = self._snapshot.telemetry.aggregates
        t = int(np.clip(step, 0, agg.num_steps))
        self.step_line.setValue(t)
        set_title(self.step_plot, f"spawns per propagation step (step {t}):<br>requested "
                                  f"{int(agg.spawn_requested[t]):,} · granted {int(agg.spawn_granted[t]):,} · "
                                  f"denied by budget {int(agg.spawn_denied[t]):,}")
