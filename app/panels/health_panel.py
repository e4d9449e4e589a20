"""HealthPanel: a strip of green/red badges, one per check of :func:`app.health.compute_health`.

The checks are batch-level, so the panel changes with each snapshot; the step slider does not
affect it. Colour alone is not the message: each badge also says in one line what it found.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.health import HealthCheck, compute_health
from app.snapshot import Snapshot

#: Background / border colours by verdict (True healthy, False problem, None unknown).
_STYLE = {
    True: ("#16361f", "#3ddc84"),
    False: ("#4a1414", "#ff5a5a"),
    None: ("#2a2a2e", "#8a8a90"),
}


class HealthBadge(QFrame):
    """One check: title (bold, with a mark) over its one-line explanation."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("—")
        self.detail = QLabel("waiting for the first batch")
        self.detail.setWordWrap(True)
        self.title.setStyleSheet("font-weight: bold;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(1)
        layout.addWidget(self.title)
        layout.addWidget(self.detail)
        self.check: HealthCheck | None = None
        self._paint(None)

    def show_check(self, check: HealthCheck) -> None:
        self.check = check
        mark = {True: "✔", False: "✖", None: "?"}[check.ok]
        self.title.setText(f"{mark} {check.title}")
        self.detail.setText(check.detail)
        self.setToolTip(check.tooltip or check.detail)
        self._paint(check.ok)

    def _paint(self, ok: bool | None) -> None:
        bg, border = _STYLE[ok]
        self.setStyleSheet(f"HealthBadge {{ background: {bg}; border: 1px solid {border}; border-radius: 4px; }}"
                           f" QLabel {{ color: #f0f0f0; background: transparent; border: none; }}")


class HealthPanel(QWidget):
    """Badges for: finite values, flows landed, flows moving, spawn budget, gradients."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(4, 2, 4, 2)
        self._layout.setSpacing(6)
        self.badges: dict[str, HealthBadge] = {}
        self.snapshot: Snapshot | None = None
        waiting = HealthBadge()  # the empty state, until the first batch can be checked
        waiting.title.setText("Health")
        self._waiting = waiting
        self._layout.addWidget(waiting)
        self.setMinimumHeight(56)
        self._layout.setAlignment(Qt.AlignmentFlag.AlignTop)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        checks = compute_health(snapshot)
        if self._waiting is not None:
            self._layout.removeWidget(self._waiting)
            self._waiting.deleteLater()
            self._waiting = None
        for check in checks:
            badge = self.badges.get(check.key)
            if badge is None:
                badge = self.badges[check.key] = HealthBadge(self)
                self._layout.addWidget(badge, 1)
            badge.show_check(check)

    def set_step(self, step: int) -> None:
        """Health is judged per batch, not per propagation step: nothing to re-highlight."""
