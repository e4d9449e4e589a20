"""Diagnostics over time: gradients, update sizes, head saturation and output collapse.

The health strip says *whether* a check fails for this batch; these four plots show *how it
got there*, as TensorBoard shows scalars and distributions over steps:

1. gradient norm per module over batches (log y, before clipping) with the clip level drawn;
2. update-to-weight ratio ‖Δθ‖/‖θ‖ per module over batches (log y), with the healthy ~1e-3 line;
3. share of each head's outputs pinned at its limits over the propagation steps of the shown
   batch (the one plot that follows the step slider);
4. output spread against target spread over batches (spread = 1 − mean pairwise cosine).

Each plot's tooltip says what a bad curve looks like, with the thresholds of
:data:`~energy_flow.diagnostics.thresholds.THRESHOLDS`, so a reading here and a verdict there
agree. Series come from ``snapshot.history`` (live: RunHistory; replay: the recording's batch
columns) and ``telemetry.aggregates.saturation``; values not recorded are NaN and the plot's
title says "not recorded" instead of drawing an empty axis that looks healthy.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QWidget

from app.colormaps import TITLE_SIZE
from app.panels.base import SnapshotPanel
from app.snapshot import Snapshot
from app.panels.series import integer_ticks, legend_below
from energy_flow.diagnostics.thresholds import THRESHOLDS
from energy_flow.trace.telemetry import SATURATION_MARGIN, SATURATION_NAMES
from energy_flow.trace.training_signals import MODULES
from energy_flow.trace.figures import BATCH, BatchFigure

MODULE_COLORS = {"input_mapper": (110, 170, 255), "neuron": (255, 200, 80), "carrier": (61, 220, 132),
                 "output_mapper": (255, 110, 180)}
SATURATION_COLORS = {"retention": (255, 150, 80), "spawn": (90, 200, 255), "displacement": (61, 220, 132),
                     "payload": (200, 160, 255), "hidden": (200, 200, 200)}
CLIP_PEN = pg.mkPen((255, 90, 90), width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
GUIDE_PEN = pg.mkPen((200, 200, 200, 110), width=1, style=pg.QtCore.Qt.PenStyle.DotLine)
STEP_LINE_PEN = pg.mkPen((255, 255, 255, 140), width=1)
#: Each of the four plots: title, legend strip, x axis and a y axis tall enough for its title
#: (the ‖Δθ‖/‖θ‖ title was cut in a 50 px axis at 1920×1080), and ≥ 90 px of data: at 150 px
#: a new user at 1100×700 got ~40 px per curve. Below 4 × this the panel scrolls.
PLOT_MIN_HEIGHT = 205
#: The rule-of-thumb update size drawn as a guide on the update-ratio plot.
HEALTHY_UPDATE_RATIO = 1e-3

_T = THRESHOLDS
TOOLTIPS = {
    "grad": ("Gradient norm of each module before clipping (log scale); dashed red: the clip level "
             "(grad_clip) of the total norm, white: the total.\nBad: the total far above the clip line batch "
             f"after batch (≥{_T['gradient_explosion'].warn:g}× warns, ≥{_T['gradient_explosion'].fail:g}× fails: "
             "updates are only the clip's direction), or one module's curve dropping decades below the others "
             "(vanishing: it stops learning)."),
    "update": ("‖θ_after − θ_before‖ / ‖θ_before‖ of each module's optimiser step (log scale); dotted: "
               f"{HEALTHY_UPDATE_RATIO:g}, the usual healthy size.\nBad: a curve above "
               f"{_T['update_ratio'].warn:g} (violent steps; {_T['update_ratio'].fail:g} replaces the weights), "
               f"or below {_T['update_stalled'].warn:g} (the module is frozen)."),
    "saturation": ("Share of each head's outputs within SATURATION_MARGIN "
                   f"({SATURATION_MARGIN:g}) of its limits, per propagation step of the shown batch.\n"
                   f"Bad: a curve above {_T['saturation'].warn:g} (warns) or {_T['saturation'].fail:g} (fails): that "
                   "head is pinned and passes almost no gradient — e.g. retention near 1 means every flow keeps "
                   "(or drops) all its energy whatever it sees."),
    "spread": ("Spread = 1 − mean pairwise cosine, of the batch's output embeddings and of its targets.\n"
               f"Bad: the output curve falling below {_T['collapse'].warn:g}× the target curve (warns) or "
               f"{_T['collapse'].fail:g}× (collapse: the model predicts one direction for every input)."),
}


def _finite_positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def _modules(hist: dict[str, np.ndarray], figure: BatchFigure, n: int) -> np.ndarray:
    values = np.asarray(hist.get(figure.key, np.zeros((0, len(MODULES)))), dtype=np.float64)
    return values.reshape(-1, len(MODULES))[:n] if values.size else np.full((n, len(MODULES)), np.nan)


class DiagnosticsPanel(SnapshotPanel):
    """The four diagnostics plots (see the module docstring)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        # Four stacked plots stay legible only with ~150 px each: below that the dock's scroll
        # area (app.window.dock_layout) scrolls.
        self.setMinimumSize(320, 4 * PLOT_MIN_HEIGHT)
        self._add_page(self.graphics)
        self.grad_plot = self._plot(0, "grad", "gradient norm per module (before clip)", "‖g‖", log_y=True)
        self.grad_curves = {m: self.grad_plot.plot(pen=pg.mkPen(MODULE_COLORS[m], width=1), name=m) for m in MODULES}
        self.total_curve = self.grad_plot.plot(pen=pg.mkPen((240, 240, 240), width=1), name="total")
        self.clip_line = pg.InfiniteLine(angle=0, pen=CLIP_PEN, movable=False)
        self.grad_plot.addItem(self.clip_line)
        # Named in the legend strip, not by a label sitting on the curves.
        self.grad_plot.legend.addItem(pg.PlotDataItem(pen=CLIP_PEN), "clip")
        self.update_plot = self._plot(1, "update", "update / weight ratio per module", "‖Δθ‖/‖θ‖", log_y=True)
        self.update_curves = {m: self.update_plot.plot(pen=pg.mkPen(MODULE_COLORS[m], width=1)) for m in MODULES}
        self.update_plot.addItem(pg.InfiniteLine(pos=np.log10(HEALTHY_UPDATE_RATIO), angle=0, pen=GUIDE_PEN,
                                                 movable=False))
        self.saturation_plot = self._plot(2, "saturation", "saturated head outputs over propagation steps",
                                          "share", x_label="propagation step (shown batch)")
        self.saturation_plot.setYRange(0, 1, padding=0.02)
        self.saturation_curves = {name: self.saturation_plot.plot(pen=pg.mkPen(SATURATION_COLORS[name], width=1),
                                                                  name=name) for name in SATURATION_NAMES}
        self.saturation_plot.addItem(pg.InfiniteLine(pos=_T["saturation"].warn, angle=0, pen=GUIDE_PEN, movable=False))
        self.step_line = pg.InfiniteLine(angle=90, pen=STEP_LINE_PEN, movable=False)
        self.saturation_plot.addItem(self.step_line)
        self.spread_plot = self._plot(3, "spread", "output spread vs target spread", "1 − cos",
                                      x_label="training step (batch)")
        self.output_spread_curve = self.spread_plot.plot(pen=pg.mkPen((255, 150, 80), width=1), name="outputs")
        self.target_spread_curve = self.spread_plot.plot(pen=pg.mkPen((110, 170, 255), width=1), name="targets")
        self.update_plot.setXLink(self.grad_plot)
        self.spread_plot.setXLink(self.grad_plot)

    def _plot(self, row: int, key: str, title: str, y_label: str, log_y: bool = False,
              x_label: str = "training step (batch)") -> pg.PlotItem:
        plot = self.graphics.addPlot(row=row, col=0)
        plot.setTitle(title, size=TITLE_SIZE)
        plot.setLabel("left", y_label)
        plot.setLabel("bottom", x_label)
        integer_ticks(plot)
        plot.getAxis("left").setWidth(54)
        plot.getAxis("left").enableAutoSIPrefix(False)
        plot.setLogMode(y=log_y)
        legend_below(plot, 3 if key != "spread" else 2)
        plot.setToolTip(TOOLTIPS[key])
        # Hover tooltips go to the view box (the plot's items would cover a PlotItem tooltip).
        plot.getViewBox().setToolTip(TOOLTIPS[key])
        return plot

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: redraw the per-batch series and the shown batch's saturation."""
        self._snapshot = snapshot
        hist = snapshot.history
        x = np.asarray(hist.get(BATCH.step.key, np.zeros(0)), dtype=np.float64)
        n = x.shape[0]
        grads = _modules(hist, BATCH.grad_norms, n)
        for k, m in enumerate(MODULES):
            self.grad_curves[m].setData(*_finite_positive(x, grads[:, k]))
        total = np.asarray(hist.get(BATCH.grad_norm.key, np.full(n, np.nan)), dtype=np.float64)[:n]
        self.total_curve.setData(*_finite_positive(x, total))
        clip = np.asarray(hist.get(BATCH.grad_clip.key, np.full(n, np.nan)), dtype=np.float64)[:n]
        clip_now = float(clip[-1]) if n and np.isfinite(clip[-1]) and clip[-1] > 0 else None
        self.clip_line.setVisible(clip_now is not None)
        if clip_now is not None:
            self.clip_line.setValue(np.log10(clip_now))
        self.grad_plot.setTitle(self._grad_title(grads, total, clip_now), size=TITLE_SIZE)

        ratios = _modules(hist, BATCH.update_ratios, n)
        for k, m in enumerate(MODULES):
            self.update_curves[m].setData(*_finite_positive(x, ratios[:, k]))
        last = ratios[-1] if n else np.full(len(MODULES), np.nan)
        self.update_plot.setTitle(
            "‖Δθ‖/‖θ‖ per module: not recorded" if not np.isfinite(last).any() else
            f"‖Δθ‖/‖θ‖ per module · largest {np.nanmax(last):.0e}",
            size=TITLE_SIZE)

        out = np.asarray(hist.get(BATCH.output_spread.key, np.full(n, np.nan)), dtype=np.float64)[:n]
        tgt = np.asarray(hist.get(BATCH.target_spread.key, np.full(n, np.nan)), dtype=np.float64)[:n]
        for curve, y in ((self.output_spread_curve, out), (self.target_spread_curve, tgt)):
            keep = np.isfinite(x) & np.isfinite(y)
            curve.setData(x[keep], y[keep])
        if n and np.isfinite(out[-1]) and np.isfinite(tgt[-1]) and tgt[-1] > 0:
            spread_title = f"spread · outputs {out[-1] / tgt[-1]:.2f}× targets"
        else:
            spread_title = "output vs target spread: not recorded"
        self.spread_plot.setTitle(spread_title, size=TITLE_SIZE)

        sat = snapshot.telemetry.aggregates.saturation
        steps = np.arange(snapshot.telemetry.num_steps + 1, dtype=np.float64)
        known = sat is not None and np.isfinite(sat).any()
        for k, name in enumerate(SATURATION_NAMES):
            y = sat[:, k].astype(np.float64) if sat is not None else np.full(steps.shape, np.nan)
            keep = np.isfinite(y)
            self.saturation_curves[name].setData(steps[keep], y[keep])
        if known:
            worst = np.nanmax(sat, axis=0)
            k = int(np.nanargmax(worst))
            self.saturation_plot.setTitle(f"saturated · worst {SATURATION_NAMES[k]} {worst[k]:.0%}",
                                          size=TITLE_SIZE)
        else:
            self.saturation_plot.setTitle("saturated outputs: not recorded", size=TITLE_SIZE)
        self._show_page(snapshot.telemetry.num_steps)

    def _show_step(self, step: int) -> None:
        self.step_line.setValue(step)

    @staticmethod
    def _grad_title(grads: np.ndarray, total: np.ndarray, clip: float | None) -> str:
        if not np.isfinite(grads).any() and not np.isfinite(total).any():
            return "‖g‖ per module: not recorded"
        now = total[-1] if total.shape[0] else np.nan
        if clip is not None and np.isfinite(now):
            return f"‖g‖ per module · {now / clip:.3g}× clip"
        return f"‖g‖ per module · total {now:.3g}"
