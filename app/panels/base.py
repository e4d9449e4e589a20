"""SnapshotPanel: what every pyqtgraph panel shares — an empty state and the step contract.

A panel shows "no batch yet" until its first snapshot, then its content page. ``set_step``
remembers the step the user selected (None until then: a new batch is shown at its last
step) and redraws the step-dependent part through ``_show_step`` once there is a snapshot.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QLabel, QStackedLayout, QWidget

from app.panels.series import legible_axes
from app.snapshot import Snapshot


class SnapshotPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._snapshot: Snapshot | None = None
        self._step: int | None = None  # last requested step; None shows the batch's last step
        self._stack = QStackedLayout(self)
        self.empty_label = QLabel("no batch yet")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._stack.addWidget(self.empty_label)

    def _add_page(self, page: QWidget) -> QWidget:
        """The content shown once a snapshot arrived."""
        self._stack.addWidget(page)
        self._page = page
        return page

    def _show_page(self, num_steps: int) -> None:
        """Switch from the empty state to the content, at the selected (or last) step."""
        self._stack.setCurrentWidget(self._page)
        pages = [self._page, *self._page.findChildren(pg.GraphicsLayoutWidget)]
        for graphics in pages:
            if isinstance(graphics, pg.GraphicsLayoutWidget):
                legible_axes(graphics)    # once per axis; plots rebuilt for a new batch get it too
        self._show_step(num_steps if self._step is None else self._step)

    def clear(self) -> None:
        """Back to "no batch yet": the model was rebuilt, so the batch shown belongs to no run."""
        self._snapshot = None
        self._step = None
        self._stack.setCurrentWidget(self.empty_label)

    def set_step(self, step: int) -> None:
        self._step = int(step)
        if self._snapshot is not None:
            self._show_step(self._step)

    def _show_step(self, step: int) -> None:
        """Redraw what depends on the selected step (panels that follow the step override it)."""


@runtime_checkable
class SnapshotView(Protocol):
    """What the window calls on everything that draws snapshots (the 3D view and the panels).

    ``set_snapshot``: a new batch to show; ``set_step``: the propagation step every view shows;
    ``clear``: back to "no batch yet" (the model was rebuilt). The window registers a view only
    if it satisfies this protocol, and then calls these three methods and nothing else.
    """

    def set_snapshot(self, snapshot: Snapshot) -> None: ...

    def set_step(self, step: int) -> None: ...

    def clear(self) -> None: ...
