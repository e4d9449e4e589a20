"""Coverage: where on each output plane the batch landed, and how coverage grew over the steps.

One heatmap per output plane — planes are kept apart, never summed — showing either the energy
deposited per cell (summed over the batch) or the share of samples that reached the cell.
Images are row-major float32 [H, W] with fixed levels shared by all planes, so colours compare
across planes; cell (i, j) is drawn centred on its lattice coordinate (x, y in [-1, 1]).

The energy heatmaps follow the step slider: they show what was deposited up to the selected
step (``BatchTelemetry.plane_energy_steps``, cumulative), on levels fixed by the end of the
batch so colours compare across steps. A batch recorded without per-step deposits (older
recordings) shows the end of the batch and says so in the caption; "share of samples
reaching" is only known for the end of the batch. Each title gives the plane's z, the share of
cells reached and the mean-over-samples coverage at the selected step. Below, coverage per step
for every plane.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF
from PyQt6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.colormaps import COVERAGE_LUT, DEPOSIT_LOG_LABEL, deposit_level, pg_colormap
from app.panels.energy_panel import STEP_LINE_PEN
from app.panels.base import SnapshotPanel
from app.panels.series import integer_ticks, legend_below, set_title
from app.snapshot import Snapshot
from energy_flow.trace.telemetry import BatchTelemetry

MODES = ("energy deposited", "share of samples reaching")
PLANE_COLORS = ((255, 150, 80), (110, 190, 255), (180, 255, 140))


def _signed(z: float) -> str:
    return "0" if z == 0 else f"{z:+g}".replace("-", "−")


class CoveragePanel(SnapshotPanel):
    """Per-plane heatmaps (energy deposited / share of samples reaching) and coverage per step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        page = QWidget()
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Show:"))
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.mode_combo.currentIndexChanged.connect(lambda _i: self._update_images())
        controls.addWidget(self.mode_combo)
        self.log_check = QCheckBox("log scale (energy)")
        self.log_check.setToolTip("Colour by ln(1 + energy), as the 3D view does: busy edge cells would "
                                  "otherwise hide the rest.")
        self.log_check.setChecked(True)
        self.log_check.toggled.connect(lambda _on: self._update_images())
        controls.addWidget(self.log_check)
        controls.addStretch(1)
        self.graphics = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.graphics, 1)
        self._add_page(page)

        self.plane_plots: list[pg.PlotItem] = []
        self.images: list[pg.ImageItem] = []
        self.colorbar = pg.ColorBarItem(colorMap=pg_colormap(COVERAGE_LUT), interactive=False, width=12)
        self.step_plot: pg.PlotItem | None = None
        self.coverage_curves: list[pg.PlotDataItem] = []
        self.step_line = pg.InfiniteLine(angle=90, movable=False, pen=STEP_LINE_PEN)
        self.image_step: int | None = None    # step the heatmaps show; None: end of the batch
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setStyleSheet("color: #9aa0a6;")
        layout.addWidget(self.caption)

    # ------------------------------------------------------------------ layout per plane count
    def _build_plots(self, num_planes: int) -> None:
        """(Re)create one image plot per output plane plus the per-step curve."""
        self.graphics.clear()   # deletes the old plots' items: the step line is made anew below
        self.step_line = pg.InfiniteLine(angle=90, movable=False, pen=STEP_LINE_PEN)
        self.plane_plots, self.images, self.coverage_curves = [], [], []
        for p in range(num_planes):
            plot = self.graphics.addPlot(row=0, col=p)
            plot.setAspectLocked(True)
            image = pg.ImageItem(axisOrder="row-major")
            plot.addItem(image)
            self.plane_plots.append(plot)
            self.images.append(image)
        self.graphics.addItem(self.colorbar, row=0, col=num_planes)
        self.colorbar.setImageItem(self.images)
        self.step_plot = self.graphics.addPlot(row=1, col=0, colspan=num_planes + 1)
        self.step_plot.setLabel("bottom", "propagation step")
        integer_ticks(self.step_plot)
        self.step_plot.setLabel("left", "%")
        self.step_plot.setYRange(0, 100, padding=0.02)
        legend_below(self.step_plot)
        self.step_plot.addItem(self.step_line)
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)

    # ------------------------------------------------------------------ contract
    def set_snapshot(self, snapshot: Snapshot) -> None:
        """New batch: images, titles and per-step coverage curves."""
        old = self._snapshot
        self._snapshot = snapshot
        tel = snapshot.telemetry
        if old is None or old.telemetry.plane_z != tel.plane_z:
            self._build_plots(tel.num_planes)
            self.coverage_curves = [
                self.step_plot.plot(pen=pg.mkPen(PLANE_COLORS[p % len(PLANE_COLORS)], width=1),
                                    name=f"z={_signed(z)}")
                for p, z in enumerate(tel.plane_z)]
        steps = np.arange(tel.num_steps + 1, dtype=np.float64)
        for p, curve in enumerate(self.coverage_curves):
            curve.setData(steps, 100.0 * tel.aggregates.coverage[:, p].astype(np.float64))
        self.step_plot.setXRange(0, max(tel.num_steps, 1), padding=0.02)
        self._update_images()
        self._show_page(tel.num_steps)

    @property
    def mode(self) -> str:
        return MODES[self.mode_combo.currentIndex()]

    def set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(MODES.index(mode))

    # ------------------------------------------------------------------ updates
    def _selected_step(self) -> int:
        tel = self._snapshot.telemetry
        return int(np.clip(tel.num_steps if self._step is None else self._step, 0, tel.num_steps))

    def _update_images(self) -> None:
        """Image data at the selected step and the shared fixed levels for the selected quantity."""
        if self._snapshot is None:
            return
        tel = self._snapshot.telemetry
        per_step = _plane_energy_steps(tel)
        t = self._selected_step()
        if self.mode == MODES[0]:
            final = tel.plane_energy.astype(np.float32)
            data = final if per_step is None else per_step[t].astype(np.float32)
            self.image_step = None if per_step is None else t
            log = self.log_check.isChecked()
            if log:      # the 3D view's unit and scale (app.view.lattice_frame)
                final, data = deposit_level(final), deposit_level(data)
            top = float(final.max()) if final.size else 0.0   # deposits only grow: the end is the top
            levels = (0.0, top if top > 0 else 1.0)
            label = DEPOSIT_LOG_LABEL if log else "energy deposited"
        else:
            data = tel.plane_reached.astype(np.float32)
            self.image_step = None
            levels, label = (0.0, 1.0), "share of samples reaching the cell"
        self.log_check.setEnabled(self.mode == MODES[0])
        w, h = tel.lattice_shape[0], tel.lattice_shape[1]
        dx, dy = 2.0 / (w - 1), 2.0 / (h - 1)   # cell centres sit on linspace(-1, 1, W)
        rect = QRectF(-1 - dx / 2, -1 - dy / 2, w * dx, h * dy)
        for image, plane in zip(self.images, data):
            image.setImage(np.ascontiguousarray(plane), autoLevels=False, levels=levels)
            image.setRect(rect)   # after setImage: the rect maps the image's current pixel size
        self.colorbar.setLevels(levels)
        self.colorbar.setLabel("right", label)
        self._set_caption(t)

    def _set_caption(self, t: int) -> None:
        """What the heatmaps and the titles' counts refer to: step t, or the end of the batch."""
        tel = self._snapshot.telemetry
        if self.mode != MODES[0]:
            when = "heatmaps: end of batch (the share of samples per cell is recorded only for the whole batch)"
        elif _plane_energy_steps(tel) is None:
            when = "heatmaps and cells reached: end of batch (this recording has no per-step deposits)"
        else:
            when = f"heatmaps and cells reached: energy deposited up to step {t} of {tel.num_steps}"
        self.caption.setText(f"{when[0].upper()}{when[1:]}; per sample: at step {t}.")

    def _show_step(self, step: int) -> None:
        tel = self._snapshot.telemetry
        t = int(np.clip(step, 0, tel.num_steps))
        self.step_line.setValue(t)
        per_step = _plane_energy_steps(tel)
        if per_step is not None and self.image_step != t and self.mode == MODES[0]:
            self._update_images()
        self._set_caption(t)
        for p, (plot, z) in enumerate(zip(self.plane_plots, tel.plane_z)):
            # When the cells were counted (step t, or the end) is in the caption below.
            reached = float(np.mean((tel.plane_reached[p] if per_step is None else per_step[t, p]) > 0))
            per_sample = float(tel.aggregates.coverage[t, p])
            set_title(plot, f"z={_signed(z)}: {reached:.0%} of cells<br>{per_sample:.0%} per sample")
        set_title(self.step_plot, f"cells reached so far, mean per sample (step {t})")


def _plane_energy_steps(tel: BatchTelemetry) -> np.ndarray | None:
    """Per-step cumulative deposits [T+1, P, H, W], or None when the batch was recorded without
    them (version-1 recordings, recorders that do not measure them)."""
    return tel.plane_energy_steps
