"""Comparison panel: the open reference runs, their verdicts and config beside the shown run's.

Top: one row per reference — its colour (the colour of its curves in the Training panel), a
checkbox to hide or show it, its batch count and last loss, and Close. Below, two tables with
one column per run ("this run" first, the shown snapshot — live or replayed): every health
verdict side by side (the shown run's for the shown batch, a reference's for its last batch),
and the config keys whose values differ. Nothing here stops or pauses anything.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QBrush, QColor
from PyQt6.QtWidgets import (QCheckBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableWidget,
                             QTableWidgetItem, QVBoxLayout, QWidget)

from app.panels.reference_curves import ComparisonSet
from app.snapshot import Snapshot
from app.sources.references import MISSING, config_differences
from energy_flow.diagnostics import CHECK_KEYS, HealthReport, Level

LEVEL_COLORS = {Level.OK: "#16361f", Level.UNKNOWN: "#2a2a2e", Level.WARNING: "#4a3a10", Level.FAILURE: "#4a1414"}
THIS_RUN = "this run"


class ComparisonPanel(QWidget):
    """``config_provider()`` gives the shown run's config dict (live: the worker's; replay: the file's)."""

    def __init__(self, references: ComparisonSet, config_provider: Callable[[], Mapping[str, Any]],
                 open_requested: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.references = references
        self._config_provider = config_provider
        self._health: HealthReport | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        top = QHBoxLayout()
        self.open_button = QPushButton("Open reference…")
        self.open_button.setToolTip("Open a recording beside the run on screen; training and replay go on.")
        self.open_button.clicked.connect(open_requested)
        top.addWidget(self.open_button)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        top.addWidget(self.hint, 1)
        layout.addLayout(top)
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(1)
        layout.addLayout(self.rows_box)
        self.row_widgets: dict[str, tuple[QCheckBox, QPushButton]] = {}
        health_label, config_label = QLabel("Health verdicts (a reference: its last batch):"), QLabel("Config differences:")
        self.health_table = self._table()
        self.config_table = self._table()
        for widget, stretch in ((health_label, 0), (self.health_table, 3), (config_label, 0), (self.config_table, 2)):
            layout.addWidget(widget, stretch)
        #: Shown only beside a reference: alone, "this run" over empty tables looked broken.
        self._tables = (health_label, self.health_table, config_label, self.config_table)
        layout.addStretch(0)
        references.changed.connect(self.refresh)
        self.setMinimumSize(300, 300)
        self.refresh()

    @staticmethod
    def _table() -> QTableWidget:
        table = QTableWidget()
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.verticalHeader().setDefaultSectionSize(18)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        return table

    # ------------------------------------------------------------------ views contract
    def set_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.health is not self._health:
            self._health = snapshot.health
            if self.references.names:
                self._fill_health()
                self._fill_config()

    def set_step(self, step: int) -> None:
        """Verdicts and configs are per batch and per run: the step slider changes nothing here."""

    def clear(self) -> None:
        """The model was rebuilt: no verdicts of "this run" until its first batch."""
        self._health = None
        self.refresh()

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        names = self.references.names
        self.hint.setText("No reference open. Open a recording to compare its loss curves (Training panel), "
                          "health verdicts and config with this run's." if not names else
                          f"{len(names)} reference(s); curves in the Training panel, in these colours.")
        for widget in self._tables:
            widget.setVisible(bool(names))
        while self.rows_box.count():
            item = self.rows_box.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.row_widgets.clear()
        for name in names:
            self.rows_box.addWidget(self._row(name))
        self._fill_health()
        self._fill_config()

    def _row(self, name: str) -> QWidget:
        run = self.references.run(name)
        r, g, b = self.references.color(name)
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        swatch = QLabel("■")
        swatch.setStyleSheet(f"color: rgb({r},{g},{b}); font-size: 14pt;")
        check = QCheckBox(name)
        check.setChecked(self.references.is_visible(name))
        check.setToolTip(str(run.path))
        check.toggled.connect(lambda on, n=name: self.references.set_visible(n, on))
        last = run.loss[-1] if run.num_batches else float("nan")
        info = QLabel(f"{run.num_batches} batches · last loss {finite_or_dash(float(last))}")
        close = QPushButton("Close")
        close.clicked.connect(lambda _c=False, n=name: self.references.close(n))
        for w in (swatch, check):
            box.addWidget(w)
        box.addWidget(info, 1)
        box.addWidget(close)
        self.row_widgets[name] = (check, close)
        return row

    def _columns(self) -> list[str]:
        return [THIS_RUN, *self.references.names]

    def _fill_health(self) -> None:
        reports = [self._health] + [self.references.run(n).health for n in self.references.names]
        titles = {}
        for report in reports:
            for verdict in report or ():
                titles.setdefault(verdict.key, verdict.title)
        keys = [k for k in CHECK_KEYS if k in titles]
        table = self.health_table
        table.setColumnCount(len(reports))
        table.setHorizontalHeaderLabels(self._columns())
        table.setRowCount(len(keys))
        table.setVerticalHeaderLabels([titles[k] for k in keys])
        for i, key in enumerate(keys):
            for j, report in enumerate(reports):
                text, level = level_text(report, key)
                item = QTableWidgetItem(text)
                if level is not None:
                    item.setBackground(QBrush(QColor(LEVEL_COLORS[level])))
                    item.setToolTip(report[key].detail)
                table.setItem(i, j, item)

    def _fill_config(self) -> None:
        configs = {THIS_RUN: dict(self._config_provider() or {})}
        for name in self.references.names:
            configs[name] = self.references.run(name).config
        diffs = config_differences(configs) if len(configs) > 1 else []
        table = self.config_table
        table.setColumnCount(len(configs))
        table.setHorizontalHeaderLabels(list(configs))
        table.setRowCount(len(diffs))
        table.setVerticalHeaderLabels([key for key, _ in diffs])
        for i, (_, values) in enumerate(diffs):
            for j, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(i, j, item)

    def health_cell(self, check_key: str, column: str) -> str:
        """Text of the health table's cell (for tests and accessibility)."""
        cols = self._columns()
        for i in range(self.health_table.rowCount()):
            if self.health_table.verticalHeaderItem(i).text() == self._title(check_key):
                return self.health_table.item(i, cols.index(column)).text()
        raise KeyError(check_key)

    def _title(self, key: str) -> str:
        for report in [self._health] + [self.references.run(n).health for n in self.references.names]:
            for verdict in report or ():
                if verdict.key == key:
                    return verdict.title
        raise KeyError(key)

    def config_rows(self) -> dict[str, list[str]]:
        """The config differences shown: key → one value per column."""
        return {self.config_table.verticalHeaderItem(i).text():
                [self.config_table.item(i, j).text() for j in range(self.config_table.columnCount())]
                for i in range(self.config_table.rowCount())}


def level_text(report: HealthReport | None, key: str) -> tuple[str, Any]:
    """(cell text, level or None) of check ``key`` in ``report`` for the side-by-side table."""
    if report is None:
        return "not judged", None
    try:
        verdict = report[key]
    except KeyError:
        return "not judged", None
    return f"{verdict.level.mark} {verdict.level.label}", verdict.level


def finite_or_dash(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else MISSING
