"""The open reference runs and their curves in the training panel.

Each reference's total loss (smoothed as the panel smooths its own) and landed fraction are
drawn into the training panel's plots, dashed, each run in its own colour with its name in
the loss plot's legend; the comparison panel lists the references through this set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QObject, pyqtSignal

from app.panels.series import legend_below
from energy_flow.trace.figures import BATCH
from app.panels.training_panel import TrainingPanel, debiased_ema
from app.sources.references import ReferenceRun, load_reference

#: Colours of references, in opening order (the live run keeps the panel's own colours).
#: None of them is the live curves' white, blue or orange; references are also dashed.
REFERENCE_COLORS = ((255, 90, 255), (0, 230, 200), (170, 255, 60), (255, 225, 40), (180, 140, 255),
                    (255, 120, 120))


class _Reference:
    """A reference and its curves in the training panel."""

    def __init__(self, run: ReferenceRun, color: tuple[int, int, int]) -> None:
        self.run = run
        self.color = color
        self.visible = True
        pen = pg.mkPen(color, width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
        self.loss_curve = pg.PlotDataItem(pen=pen, name=run.name)   # total loss, smoothed
        self.landed_curve = pg.PlotDataItem(pen=pen)


class ComparisonSet(QObject):
    """The open references. Signals: ``changed()`` after any add, hide/show or close;
    ``error(message)`` when a file cannot be opened (nothing else changes)."""

    changed = pyqtSignal()
    error = pyqtSignal(str)

    def __init__(self, training_panel: TrainingPanel | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._panel = training_panel
        self._refs: dict[str, _Reference] = {}
        self._opened = 0
        if training_panel is not None:
            training_panel.smoothing_spin.valueChanged.connect(lambda _v: self._redraw())
            training_panel.log_check.toggled.connect(lambda _on: self._redraw())

    @property
    def names(self) -> list[str]:
        return list(self._refs)

    def run(self, name: str) -> ReferenceRun:
        return self._refs[name].run

    def color(self, name: str) -> tuple[int, int, int]:
        return self._refs[name].color

    def is_visible(self, name: str) -> bool:
        return self._refs[name].visible

    def curves(self, name: str) -> tuple[pg.PlotDataItem, pg.PlotDataItem]:
        """(loss curve, landed-fraction curve) drawn for the reference in the training panel."""
        ref = self._refs[name]
        return ref.loss_curve, ref.landed_curve

    def add(self, path: str | Path) -> str | None:
        """Open ``path`` as a reference; returns its name, or None (``error`` says why)."""
        try:
            run = load_reference(path)
        except (OSError, ValueError, KeyError) as exc:   # RecordingError is a ValueError
            self.error.emit(f"cannot open {path} as a reference: {exc}")
            return None
        name, k = run.name, 2
        while name in self._refs:
            name, k = f"{run.name} ({k})", k + 1
        ref = _Reference(run, REFERENCE_COLORS[self._opened % len(REFERENCE_COLORS)])
        self._opened += 1
        self._refs[name] = ref
        if self._panel is not None:
            ref.loss_curve.opts["name"] = name
            self._legend()                   # first: a named item added to the plot joins it
            self._panel.loss_plot.addItem(ref.loss_curve)
            self._panel.landed_plot.addItem(ref.landed_curve)
        self._redraw()
        self.changed.emit()
        return name

    def set_visible(self, name: str, visible: bool) -> None:
        ref = self._refs[name]
        if ref.visible == bool(visible):
            return
        ref.visible = bool(visible)
        for curve in (ref.loss_curve, ref.landed_curve):
            curve.setVisible(ref.visible)
        legend = self._panel.loss_plot.legend if self._panel is not None else None
        if legend is not None:      # a hidden run leaves the legend too
            if ref.visible:
                legend.addItem(ref.loss_curve, ref.loss_curve.opts["name"])
            else:
                legend.removeItem(ref.loss_curve)
        self.changed.emit()

    def close(self, name: str) -> None:
        ref = self._refs.pop(name)
        if self._panel is not None:
            plot = self._panel.loss_plot
            plot.removeItem(ref.loss_curve)
            self._panel.landed_plot.removeItem(ref.landed_curve)
            if plot.legend is not None:
                plot.legend.removeItem(ref.loss_curve)
                if not self._refs:          # no reference left: the plot goes back to no legend
                    plot.legend.scene().removeItem(plot.legend)
                    plot.legend = None
        self.changed.emit()

    def _legend(self) -> pg.LegendItem:
        """The loss plot's legend of runs, made with the first reference: "this run" (the
        panel's smoothed total) and one entry per reference. Small, in the lower right corner,
        where falling loss curves leave room."""
        plot = self._panel.loss_plot
        if plot.legend is None:
            legend = legend_below(plot)
            legend.addItem(self._panel.smooth_curves[BATCH.loss.key], "this run")
        return plot.legend

    def close_all(self) -> None:
        for name in list(self._refs):
            self.close(name)

    def _redraw(self) -> None:
        """Give every reference's curves their data, smoothed as the panel smooths its own."""
        if self._panel is None:
            return
        weight = self._panel.smoothing
        log_y = self._panel.log_check.isChecked()
        for ref in self._refs.values():
            run = ref.run
            keep = np.isfinite(run.loss) & np.isfinite(run.x) & ((run.loss > 0) if log_y else True)
            ref.loss_curve.setData(run.x[keep], debiased_ema(run.loss[keep], weight))
            keep = np.isfinite(run.landed_fraction) & np.isfinite(run.x)
            ref.landed_curve.setData(run.x[keep], run.landed_fraction[keep])
