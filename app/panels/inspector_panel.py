"""Flow inspector: one flow of the shown batch — who it is, where it went, and its family.

A flow is selected by a click in the 3D view (the view emits the id it hit) or by typing its id
here; both take the same path, :meth:`InspectorPanel.select_flow`, which emits
``selection_changed`` so the view highlights the lineage. Everything shown is read from the
batch's traced :class:`~energy_flow.trace.telemetry.FlowSample` through
:mod:`energy_flow.trace.lineage` — live, replayed, or recorded with ``FlowRecorder`` alike.

The selection is an id, kept across batches (the same id is the same start cell of the same
sample); a batch whose traced sample lacks it says so instead of showing stale values. The
step slider moves a marker over the small plots and the "at step t" line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                             QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.colormaps import ENERGY_LUT, TITLE_SIZE, qcolor
from app.panels.base import SnapshotPanel
from app.snapshot import Snapshot
from app.panels.series import integer_ticks, legend_below
from energy_flow.files.atomic import atomic_write
from energy_flow.trace.lineage import FlowNotFound, FlowRecord, flow_record, lineage_csv, lineage_json_text

STEP_LINE_PEN = pg.mkPen((255, 255, 255, 140), width=1)
ENERGY_COLOR = qcolor(tuple(ENERGY_LUT[190]))
AXIS_COLORS = {"x": (255, 110, 110), "y": (110, 230, 120), "z": (110, 160, 255)}
HINT = "Click a flow head or trajectory in the 3D view, or type a flow id."


def _int(value: int) -> str:
    """A flow id as it is typed in "Flow id" (no thousands separator: "6 495" read as a count)."""
    return str(int(value))


def children_text(children) -> str:
    """The children's count, then their ids (the first eight): "1: flow 6495", "3: flows 7, 8, 9"."""
    if not len(children):
        return "none"
    shown = ", ".join(_int(c) for c in children[:8])
    more = ", …" if len(children) > 8 else ""
    return f"{len(children)}: flow{'s' if len(children) > 1 else ''} {shown}{more}"


ID_TIP = ("Flow ids are unique within a batch; placed flows run sample-major over the start plane, "
          "children get the next free ids.")


class InspectorPanel(SnapshotPanel):
    """Signals: ``selection_changed(flow_id or None)`` — the view highlights this lineage."""

    selection_changed = pyqtSignal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.flow_id: int | None = None
        self.record: FlowRecord | None = None
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(3)

        row = QHBoxLayout()
        row.addWidget(QLabel("Flow id:"))
        self.id_spin = QSpinBox()
        self.id_spin.setRange(0, 2**31 - 1)
        self.id_spin.setKeyboardTracking(False)
        self.id_spin.setToolTip(ID_TIP)
        self.select_button = QPushButton("Select")
        self.select_button.clicked.connect(lambda: self.select_flow(self.id_spin.value()))
        self.id_spin.lineEdit().returnPressed.connect(self._select_typed)     # Enter selects, as Select does
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(lambda: self.select_flow(None))
        for w in (self.id_spin, self.select_button, self.clear_button):
            row.addWidget(w)
        row.addStretch(1)
        layout.addLayout(row)

        self.message = QLabel(HINT)
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(1)
        self.fields: dict[str, QLabel] = {}
        for key, label in (("flow", "flow"), ("sample", "sample"), ("parent", "parent"),
                           ("children", "children"), ("life", "born → ended"), ("reason", "end reason"),
                           ("at_step", "at step")):
            value = QLabel("–")
            value.setWordWrap(True)
            self.fields[key] = value
            form.addRow(label + ":", value)
        layout.addLayout(form)

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(180)
        self.energy_plot = self.graphics.addPlot(row=0, col=0)
        self.energy_plot.setTitle("energy over steps", size=TITLE_SIZE)
        self.energy_plot.setLabel("left", "energy")
        self.energy_curve = self.energy_plot.plot(pen=pg.mkPen(ENERGY_COLOR, width=1), symbol="o", symbolSize=3,
                                                  symbolPen=None, symbolBrush=ENERGY_COLOR)
        self.position_plot = self.graphics.addPlot(row=1, col=0)
        self.position_plot.setTitle("position over steps (lattice units, −1…1)", size=TITLE_SIZE)
        self.position_plot.setLabel("bottom", "propagation step")
        integer_ticks(self.position_plot)
        integer_ticks(self.energy_plot)
        self.position_plot.setXLink(self.energy_plot)
        self.position_plot.setYRange(-1.05, 1.05, padding=0)
        legend_below(self.position_plot)
        self.position_curves = {axis: self.position_plot.plot(pen=pg.mkPen(color, width=1), name=axis)
                                for axis, color in AXIS_COLORS.items()}
        self.step_lines = [pg.InfiniteLine(angle=90, pen=STEP_LINE_PEN, movable=False)
                           for _ in (self.energy_plot, self.position_plot)]
        for plot, line in zip((self.energy_plot, self.position_plot), self.step_lines):
            plot.addItem(line)
            plot.getAxis("left").setWidth(44)
            plot.getAxis("left").enableAutoSIPrefix(False)
            # No wheel zoom or drag: a zoom carried over to the next flow's curves (issue 28).
            plot.setMouseEnabled(x=False, y=False)
        # The wheel over the plots scrolls the panel (its dock's scroll area), as over the rest of it.
        self.graphics.wheelEvent = lambda event: event.ignore()
        self.graphics.setToolTip("The selected flow's energy (what it carries after each step) and its x, y, z "
                                 "over the steps it existed; the vertical line is the step slider.")
        layout.addWidget(self.graphics, 3)

        layout.addWidget(QLabel("Lineage (click to select):"))
        self.lineage_list = QListWidget()
        self.lineage_list.setMaximumHeight(110)
        self.lineage_list.itemActivated.connect(self._lineage_clicked)
        self.lineage_list.itemClicked.connect(self._lineage_clicked)
        layout.addWidget(self.lineage_list, 1)

        export = QHBoxLayout()
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip("The selected flow and its lineage, one row per (flow, step).")
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.json_button = QPushButton("Export JSON…")
        self.json_button.setToolTip("The selected flow and its lineage: summary and per-step values of each.")
        self.json_button.clicked.connect(lambda: self._ask_export("json"))
        export.addWidget(self.csv_button)
        export.addWidget(self.json_button)
        export.addStretch(1)
        layout.addLayout(export)
        self._add_page(page)
        self.setMinimumSize(300, 520)    # form, both plots and the lineage list whole; the dock scrolls
        self._refresh()

    # ------------------------------------------------------------------ selection
    def _select_typed(self) -> None:
        self.id_spin.interpretText()
        self.select_flow(self.id_spin.value())

    def select_flow(self, flow_id: int | None) -> None:
        """Select ``flow_id`` (None clears) and tell the view; shows its values if traced."""
        self.flow_id = None if flow_id is None else int(flow_id)
        if self.flow_id is not None and self.id_spin.value() != self.flow_id:
            self.id_spin.blockSignals(True)
            self.id_spin.setValue(self.flow_id)
            self.id_spin.blockSignals(False)
        self._refresh()
        self.selection_changed.emit(self.flow_id)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        flows = snapshot.telemetry.flows
        if flows is not None and flows.num_flows:
            # the range stays wide: a lower maximum would clamp (change) the typed id by itself;
            # an id this batch does not hold says so when selected
            self.id_spin.setToolTip(f"{ID_TIP} This batch's traced ids run up to {int(flows.flow_id.max()):,}.")
        self._refresh()
        self._show_page(snapshot.telemetry.num_steps)

    def _show_step(self, step: int) -> None:
        for line in self.step_lines:
            line.setValue(step)
        rec = self.record
        if rec is None:
            self.fields["at_step"].setText("–")
            return
        t = int(np.clip(step, 0, rec.energy.shape[0] - 1))
        if math.isfinite(rec.energy[t]):
            x, y, z = rec.positions[t]
            self.fields["at_step"].setText(f"{t}: energy {rec.energy[t]:.4g} at ({x:+.3f}, {y:+.3f}, {z:+.3f})")
        else:
            state = "not born yet" if t < rec.birth_step else "ended"
            self.fields["at_step"].setText(f"{t}: {state}")

    # ------------------------------------------------------------------ export
    def export_csv(self, path: str | Path) -> Path:
        """Write the selection's lineage as CSV (atomically); ValueError when nothing is shown."""
        flows, rec = self._require_record()
        return self._write(path, lineage_csv(flows, rec), "lineage CSV")

    def export_json(self, path: str | Path) -> Path:
        """Write the selection's lineage as JSON (atomically); ValueError when nothing is shown."""
        flows, rec = self._require_record()
        return self._write(path, lineage_json_text(flows, rec, self._snapshot.telemetry.reason_names),
                           "lineage JSON")

    @staticmethod
    def _write(path: str | Path, text: str, what: str) -> Path:
        path = Path(path)
        with atomic_write(path, what) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    def _require_record(self):
        if self.record is None or self._snapshot is None or self._snapshot.telemetry.flows is None:
            raise ValueError("no flow is selected in this batch: nothing to export")
        return self._snapshot.telemetry.flows, self.record

    def _ask_export(self, kind: str) -> None:
        if self.record is None:
            self.message.setText("Select a flow first: there is nothing to export.")
            return
        default = f"flow-{self.record.flow_id}-lineage.{kind}"
        path, _ = QFileDialog.getSaveFileName(self, f"Export lineage as {kind.upper()}", default,
                                              f"{kind.upper()} (*.{kind})")
        if not path:
            return
        try:
            written = self.export_csv(path) if kind == "csv" else self.export_json(path)
            self.message.setText(f"Wrote {written}")
        except (OSError, ValueError) as exc:
            self.message.setText(f"⚠ {exc}")

    # ------------------------------------------------------------------ drawing
    def _lineage_clicked(self, item: QListWidgetItem) -> None:
        flow_id = item.data(Qt.ItemDataRole.UserRole)
        if flow_id is not None and flow_id != self.flow_id:
            self.select_flow(int(flow_id))

    def _refresh(self) -> None:
        """Recompute the record of the selected id in the shown batch and redraw everything."""
        self.record = None
        flows = self._snapshot.telemetry.flows if self._snapshot is not None else None
        if self.flow_id is None:
            self.message.setText(HINT)
        elif self._snapshot is None:
            self.message.setText(f"flow {self.flow_id}: no batch yet")
        elif flows is None:
            self.message.setText("This batch has no traced trajectories (tracing is off): nothing to inspect.")
        else:
            try:
                self.record = flow_record(flows, self.flow_id, self._snapshot.telemetry.reason_names)
                self.message.setText(f"Flow {self.flow_id} of {self._snapshot.batch_label or 'this batch'}")
            except FlowNotFound as exc:
                self.message.setText(f"⚠ {exc}")
        self._fill(self.record)
        self._show_step(self._step if self._step is not None else
                        (self._snapshot.telemetry.num_steps if self._snapshot is not None else 0))

    def _fill(self, rec: FlowRecord | None) -> None:
        for button in (self.csv_button, self.json_button):
            button.setEnabled(rec is not None)
        self.lineage_list.clear()
        if rec is None:
            for key, label in self.fields.items():
                label.setText("–")
            self.energy_curve.setData([], [])
            for curve in self.position_curves.values():
                curve.setData([], [])
            return
        f = self.fields
        f["flow"].setText(_int(rec.flow_id))
        f["sample"].setText(str(rec.sample))
        if rec.parent_id < 0:
            f["parent"].setText("none (placed on the start plane)")
        else:
            f["parent"].setText(_int(rec.parent_id) + ("" if rec.parent_in_sample else " (not traced)"))
        f["children"].setText(children_text(rec.children))
        f["life"].setText(f"step {rec.birth_step} → step {rec.end_step}")
        f["reason"].setText(rec.reason.replace("_", " "))   # "timed out", as the 3D view's legend
        steps = rec.steps
        self.energy_curve.setData(steps, rec.energy[steps])
        for k, (axis, curve) in enumerate(self.position_curves.items()):
            curve.setData(steps, rec.positions[steps, k])
        for generation, flow_id in enumerate(rec.ancestors, start=1):
            self._add_item(f"ancestor (generation −{generation}): flow {_int(flow_id)}", flow_id)
        self._add_item(f"selected: flow {_int(rec.flow_id)}", None)
        for flow_id in rec.descendants:
            self._add_item(f"descendant: flow {_int(flow_id)}", flow_id)

    def _add_item(self, text: str, flow_id: int | None) -> None:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, flow_id)
        self.lineage_list.addItem(item)
