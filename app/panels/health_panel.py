"""HealthPanel: the health strip — every verdict of energy_flow.diagnostics, worst first.

Fourteen checks must stay readable on a 1280-pixel-wide window, so the strip has two parts:
a grid of compact chips (mark + title, coloured by level, the detail and advice in the
tooltip), ordered worst first, and beside it the one-line details of the checks that are not
ok, so a failure's numbers are readable without hovering. Colour is never the only message:
every chip carries its level's mark (✖ ⚠ ? ✔) and the summary line counts the levels.

The verdicts are computed where the snapshot is made (worker thread or replay source); the
panel only draws them. They are batch-level: the step slider does not change them.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFontMetrics
from PyQt6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.snapshot import Snapshot
from energy_flow.diagnostics import HealthReport, Level, Verdict

#: Background / border colours by level.
_STYLE = {
    Level.OK: ("#16361f", "#3ddc84"),
    Level.UNKNOWN: ("#2a2a2e", "#8a8a90"),
    Level.WARNING: ("#4a3a10", "#ffc640"),
    Level.FAILURE: ("#4a1414", "#ff5a5a"),
}
#: Chips per row at most; fewer where the strip is narrower (it shares the width with the side column).
CHIP_COLUMNS = 7
MAX_DETAIL_LINES = 3
#: Width kept beside the chips for the summary and the detail lines (px).
DETAIL_MIN_WIDTH = 230


class HealthChip(QFrame):
    """One check: its level's mark and its title; detail and advice in the tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("—")
        self.label.setStyleSheet("font-weight: bold;")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 1, 6, 1)
        layout.addWidget(self.label)
        self.verdict: Verdict | None = None
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def show_verdict(self, verdict: Verdict) -> None:
        restyle = self.verdict is None or self.verdict.level is not verdict.level
        self.verdict = verdict
        self.label.setText(f"{verdict.level.mark} {verdict.title}")
        tip = f"<b>{verdict.title}: {verdict.level.label}</b><br>{verdict.detail}"
        if verdict.advice:
            tip += "<br><br>" + verdict.advice.replace("\n", "<br>")
        self.setToolTip(tip)
        if not restyle:   # a style sheet re-polishes the widget: only when the level changed
            return
        bg, border = _STYLE[verdict.level]
        self.setStyleSheet(f"HealthChip {{ background: {bg}; border: 1px solid {border}; border-radius: 3px; }}"
                           f" QLabel {{ color: #f0f0f0; background: transparent; border: none; }}")


class ElidedLabel(QLabel):
    """A one-line label that elides its text to its width (the full text is its tooltip)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        metrics = QFontMetrics(self.font())
        self.setText(metrics.elidedText(self._full, Qt.TextElideMode.ElideRight, max(self.width(), 40)))


class HealthPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.snapshot: Snapshot | None = None
        self.report: HealthReport | None = None
        self.chips: dict[str, HealthChip] = {}
        self._order: list[str] = []
        outer = QHBoxLayout(self)
        outer.setContentsMargins(4, 2, 4, 2)
        outer.setSpacing(8)
        chips = QWidget()
        self._grid = QGridLayout(chips)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(3)
        # The chips re-flow into fewer columns on a narrower strip (see resizeEvent): at 7 columns
        # their grid held the 3D view at ~1150 px wide.
        self._chips_box = chips
        self._columns = CHIP_COLUMNS
        outer.addWidget(chips, 0, Qt.AlignmentFlag.AlignTop)
        right = QVBoxLayout()
        right.setSpacing(0)
        self.summary = QLabel("Health: waiting for the first batch")
        self.summary.setStyleSheet("font-weight: bold;")
        self.summary.setWordWrap(True)      # two lines rather than a strip that holds the window wide
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        right.addWidget(self.summary)
        self.detail_lines = [ElidedLabel() for _ in range(MAX_DETAIL_LINES)]
        for label in self.detail_lines:
            right.addWidget(label)
        right.addStretch(1)
        outer.addLayout(right, 1)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        report = snapshot.health
        if report is None:
            self.summary.setText("Health: not judged for this batch")
            return
        self.report = report
        ordered = report.worst_first()
        for verdict in ordered:
            if verdict.key not in self.chips:
                self.chips[verdict.key] = HealthChip(self)
            self.chips[verdict.key].show_verdict(verdict)
        order = [v.key for v in ordered]
        if order != self._order:   # re-place worst first (only when the order changed)
            self._order = order
            self._columns = self._fitting_columns()
            self._place()
        counts = report.counts()
        parts = [f"{level.mark} {counts[level]} {level.label}" for level in
                 (Level.FAILURE, Level.WARNING, Level.UNKNOWN, Level.OK) if counts[level]]
        self.summary.setText("Health: " + " · ".join(parts))
        problems = [v for v in ordered if v.level in (Level.FAILURE, Level.WARNING)]
        lines = [f"{v.level.mark} {v.title}: {v.detail}" for v in problems]
        if len(lines) > MAX_DETAIL_LINES:
            lines = lines[:MAX_DETAIL_LINES - 1] + [f"… and {len(problems) - MAX_DETAIL_LINES + 1} more: "
                                                    "hover the chips for their numbers"]
        if not problems:
            unknown = [v.title for v in ordered if v.level is Level.UNKNOWN]
            lines = ["No check failed or warned."
                     + (f" Cannot judge: {', '.join(unknown)} (hover for why)." if unknown else "")]
        for label, text in zip(self.detail_lines, lines + [""] * MAX_DETAIL_LINES):
            label.set_full_text(text)
        self._fit_height()      # the summary's length changes with the counts

    def _fitting_columns(self) -> int:
        """As many chip columns as fit beside the detail lines (at least 2, at most CHIP_COLUMNS)."""
        if not self.chips:
            return CHIP_COLUMNS
        chip = max(c.sizeHint().width() for c in self.chips.values()) + self._grid.horizontalSpacing()
        return int(max(2, min(CHIP_COLUMNS, (self.width() - DETAIL_MIN_WIDTH) // max(chip, 1))))

    def _place(self) -> None:
        """Chips worst first in ``self._columns`` columns. The box's minimum is two columns (set
        explicitly, so the grid's own minimum — all its columns — does not hold the window wide);
        a narrower strip re-flows on its next resize."""
        for chip in self.chips.values():
            self._grid.removeWidget(chip)
        for i, key in enumerate(self._order):
            self._grid.addWidget(self.chips[key], i // self._columns, i % self._columns)
        chip = max(c.sizeHint().width() for c in self.chips.values())
        gap = self._grid.horizontalSpacing()
        self._chips_box.setMinimumWidth(2 * chip + gap)
        self._chips_box.setMaximumWidth(self._columns * (chip + gap))
        self._fit_height()

    def _fit_height(self) -> None:
        """As tall as the chip rows or the text beside them, whichever is taller (the strip's
        dock would otherwise keep the height of a narrower past). The summary wraps: a long one
        ("⚠ 1 warning · ? 3 cannot judge · ✓ 11 ok") takes two lines at 1280 px, and its height
        is taken at its width, or its first line was cut off at the top."""
        if not self._order:
            return
        rows = -(-len(self._order) // self._columns)
        chips_height = rows * max(c.sizeHint().height() for c in self.chips.values()) \
            + (rows - 1) * self._grid.verticalSpacing()
        margins = self.layout().contentsMargins()
        summary = max(self.summary.sizeHint().height(), self.summary.heightForWidth(self.summary.width()))
        lines = summary + sum(l.sizeHint().height() for l in self.detail_lines)
        # Fixed, not only a maximum: the top dock keeps the height it was first laid out with, so
        # a summary that grew to two lines needs the minimum to get its room.
        self.setFixedHeight(max(chips_height, lines) + margins.top() + margins.bottom())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        columns = self._fitting_columns()
        if self._order and columns != self._columns:
            self._columns = columns
            self._place()
        else:
            self._fit_height()  # a new width wraps the summary differently

    def clear(self) -> None:
        """Back to the empty state (a reset or rebuilt model has no batch yet)."""
        for chip in self.chips.values():
            self._grid.removeWidget(chip)
            chip.deleteLater()
        self.chips.clear()
        self._order = []
        self.snapshot = self.report = None
        self.summary.setText("Health: waiting for the first batch")
        for label in self.detail_lines:
            label.set_full_text("")

    def set_step(self, step: int) -> None:
        """Health is judged per batch, not per propagation step: nothing to re-highlight."""
