"""Training curves over the run: losses, learning rate, landed fraction, throughput.

Losses are drawn TensorBoard-style: the raw per-batch values thin and faint, a debiased
exponential moving average on top (smoothing factor adjustable), optionally on a log y axis.
Everything comes from ``snapshot.history`` (one entry per batch). Curves use clip-to-view and
peak downsampling so tens of thousands of batches stay cheap to redraw.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import (QCheckBox, QDoubleSpinBox, QHBoxLayout, QLabel, QVBoxLayout,
                             QWidget)

from app.panels.base import SnapshotPanel
from app.panels.held_out_plot import HeldOutPlot
from app.panels.series import integer_ticks, legible_axes, set_series, set_title
from app.snapshot import Snapshot, batch_axis
from energy_flow.trace.figures import BATCH

LOSS_SERIES = ((BATCH.loss.key, "total", (240, 240, 240)), (BATCH.mse.key, "MSE", (110, 170, 255)),
               (BATCH.cosine_loss.key, "1−cos", (255, 150, 80)))
RAW_ALPHA = 70
DEFAULT_SMOOTHING = 0.6
#: Largest growth factor w^-L inside one EMA block; keeps the blockwise sums well conditioned.
_BLOCK_GROWTH = 1e6


def debiased_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: EMA started at 0 and divided by (1 − w^n) to remove its bias.

    Vectorised in blocks: within a block of length L the recurrence s_j = w·s_{j−1} + (1−w)·v_j
    is s_j = w^j·s_0 + (1−w)·w^j·Σ_{k≤j} w^{−k}·v_k, a cumulative sum; L is chosen so that w^{−L}
    stays ≤ 1e6. Non-finite values must be removed by the caller.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or weight <= 0.0:
        return v.copy()
    w = float(min(weight, 0.999999))
    block = max(1, int(math.log(_BLOCK_GROWTH) / -math.log(w)))
    out = np.empty_like(v)
    state = 0.0
    for start in range(0, v.size, block):    # one iteration per block, not per point
        chunk = v[start:start + block]
        j = np.arange(1, chunk.size + 1, dtype=np.float64)
        grow = w ** -j
        decay = w ** j
        ema = decay * state + (1.0 - w) * decay * np.cumsum(grow * chunk)
        out[start:start + chunk.size] = ema
        state = ema[-1]
    n = np.arange(1, v.size + 1, dtype=np.float64)
    return out / (1.0 - w ** n)


def _curve(plot: pg.PlotItem, color, alpha: int = 255, name: str | None = None) -> pg.PlotDataItem:
    curve = plot.plot(pen=pg.mkPen((*color, alpha), width=1), name=name)
    curve.setClipToView(True)
    curve.setDownsampling(auto=True, method="peak")
    return curve


#: Pixels the loss plot keeps (title, legend and about 80 px of data) however short the dock.
LOSS_MIN_HEIGHT = 150

class TrainingPanel(SnapshotPanel):
    """Loss curves (raw + smoothed), learning rate, landed fraction and batches per second."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        page = QWidget()
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Smoothing:"))
        self.smoothing_spin = QDoubleSpinBox()
        self.smoothing_spin.setRange(0.0, 0.999)
        self.smoothing_spin.setSingleStep(0.01)
        self.smoothing_spin.setDecimals(3)
        self.smoothing_spin.setValue(DEFAULT_SMOOTHING)
        self.smoothing_spin.setToolTip("Debiased exponential moving average, as in TensorBoard (0 = off).")
        self.smoothing_spin.valueChanged.connect(lambda _v: self._update_losses())
        controls.addWidget(self.smoothing_spin)
        self.log_check = QCheckBox("log y (losses)")
        self.log_check.toggled.connect(self._set_log_y)
        controls.addWidget(self.log_check)
        controls.addStretch(1)
        self.graphics = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.graphics, 1)
        self._add_page(page)

        # Stacked vertically with linked x: pyqtgraph links x in screen space, which only lines
        # up for plots above one another.
        self.loss_plot = self.graphics.addPlot(row=0, col=0)
        self.raw_curves: dict[str, pg.PlotDataItem] = {}
        self.smooth_curves: dict[str, pg.PlotDataItem] = {}
        for key, label, color in LOSS_SERIES:
            self.raw_curves[key] = _curve(self.loss_plot, color, RAW_ALPHA)
            self.smooth_curves[key] = _curve(self.loss_plot, color)
        # The held-out figures against the best simple predictor: what the loss cannot say.
        self.held_out = HeldOutPlot(self.graphics.addPlot(row=1, col=0))
        self.lr_plot = self.graphics.addPlot(row=2, col=0)
        self.lr_plot.setLogMode(y=True)
        self.lr_plot.setLabel("left", "lr")
        self.lr_curve = _curve(self.lr_plot, (200, 160, 255))
        self.landed_plot = self.graphics.addPlot(row=3, col=0)
        self.landed_plot.setLabel("left", "landed")
        self.landed_plot.setYRange(0, 1, padding=0.02)
        self.landed_plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")], []])
        self.landed_curve = _curve(self.landed_plot, (61, 220, 132))
        self.speed_plot = self.graphics.addPlot(row=4, col=0)
        self.speed_plot.setLabel("left", "batch/s")
        self.speed_plot.setLabel("bottom", "batch")
        for plot in (self.loss_plot, self.held_out.plot, self.lr_plot, self.landed_plot, self.speed_plot):
            integer_ticks(plot)       # batches: no 1.5
        self.speed_curve = _curve(self.speed_plot, (255, 200, 80))
        # The loss is the panel's main plot: it keeps room for its data where the dock is short
        # (the plots under it scroll), and takes twice the others' share of any extra height.
        self.loss_plot.setMinimumHeight(LOSS_MIN_HEIGHT)
        self.graphics.ci.layout.setRowStretchFactor(0, 2)
        # The held-out plot keeps its batch ticks: its legend sits under them, off the data.
        self.held_out.plot.setXLink(self.loss_plot)
        for plot in (self.loss_plot, self.lr_plot, self.landed_plot):
            if plot is not self.loss_plot:
                plot.setXLink(self.loss_plot)
            plot.getAxis("bottom").setStyle(showValues=False)
        self.speed_plot.setXLink(self.loss_plot)
        for plot in (self.loss_plot, self.held_out.plot, self.lr_plot, self.landed_plot, self.speed_plot):
            plot.getAxis("left").setWidth(60)
            plot.getAxis("left").enableAutoSIPrefix(False)
        self.graphics.ci.layout.setRowStretchFactor(0, 5)
        self.graphics.ci.layout.setRowStretchFactor(1, 4)
        for row in (2, 3, 4):
            self.graphics.ci.layout.setRowStretchFactor(row, 2)
        legible_axes(self.graphics)   # five plots in one dock: short axes keep their labels apart

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: redraw every series from the run's history (numpy, no per-point loop)."""
        self._snapshot = snapshot
        hist = snapshot.history
        x, x_label = batch_axis(hist)
        self.speed_plot.setLabel("bottom", x_label)
        for curve, figure in ((self.lr_curve, BATCH.learning_rate), (self.landed_curve, BATCH.landed_fraction),
                              (self.speed_curve, BATCH.batches_per_second)):
            y = hist.get(figure.key, np.zeros(0))
            keep = np.isfinite(y) & (y > 0) if figure is BATCH.learning_rate else np.isfinite(y)
            keep &= np.isfinite(x)
            set_series(curve, x[keep], y[keep])
            if figure is BATCH.learning_rate and keep.any():
                # A constant rate spans no decade; give the log axis a factor of 3 either side.
                lo, hi = float(y[keep].min()), float(y[keep].max())
                self.lr_plot.setYRange(math.log10(lo / 3), math.log10(hi * 3), padding=0)
                # A short plot cannot hold a log axis's minor labels (they overprinted each other):
                # label only the lowest and highest rate of the run.
                ticks = sorted({(math.log10(v), f"{v:.2g}") for v in (lo, hi)})
                self.lr_plot.getAxis("left").setTicks([ticks, []])
        self._update_losses()
        self.held_out.draw(hist, x, snapshot.held_out)
        self._stack.setCurrentWidget(self._page)
        if len(x):
            which = "batch" if x_label == "batch" else "recording batch"
            if np.isfinite(hist[BATCH.loss.key][-1]):
                # The legend is the title's second line, in the curves' colours: a legend box
                # inside the plot covered the curves.
                values = " · ".join(f"<span style='color:rgb{color}'>━ {label} {hist[key][-1]:.3g}</span>"
                                    for key, label, color in LOSS_SERIES)
                set_title(self.loss_plot, f"loss at {which} {int(x[-1])}<br>{values}")
            else:   # e.g. a FlowRecorder batch of a model run without a training step
                set_title(self.loss_plot, f"loss: {which} {int(x[-1])} has no training step recorded")
            rate = hist[BATCH.batches_per_second.key][-1]
            # Recordings keep no training speed (NaN): say nothing rather than "nan batches/s".
            speed = f" · {rate:.2f} batch/s" if np.isfinite(rate) else ""
            set_title(self.lr_plot, f"lr {hist[BATCH.learning_rate.key][-1]:.3g} · landed "
                                    f"{hist[BATCH.landed_fraction.key][-1]:.1%}{speed}")

    @property
    def smoothing(self) -> float:
        return float(self.smoothing_spin.value())

    def set_smoothing(self, weight: float) -> None:
        self.smoothing_spin.setValue(weight)

    def _set_log_y(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self._update_losses()

    def _update_losses(self) -> None:
        if self._snapshot is None:
            return
        hist = self._snapshot.history
        x, _ = batch_axis(hist)
        for key, _, _ in LOSS_SERIES:
            y = hist.get(key, np.zeros(0))
            # A skipped (non-finite) batch is left out, as in TensorBoard; log y also needs > 0.
            keep = np.isfinite(y) & (y > 0) if self.log_check.isChecked() else np.isfinite(y)
            keep &= np.isfinite(x)
            set_series(self.raw_curves[key], x[keep], y[keep])
            set_series(self.smooth_curves[key], x[keep], debiased_ema(y[keep], self.smoothing))
