"""Hover: the flow under the mouse, named in a tooltip (id, parent, sample, energy).

It picks exactly as a click does (:meth:`~app.view.flow_selection.FlowSelection.pick_row`:
the nearest head within a few pixels, else the nearest drawn trajectory point), so the flow a
tooltip names is the flow a click would select. Mouse moves arrive far faster than frames;
picking projects every drawn point, so moves are coalesced: the latest position is picked at
most once per ``HOVER_INTERVAL_MS``. Nothing is picked while a button is held (the camera is
turning) and nothing is drawn: the tooltip is Qt's, so hovering never redraws the scene.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PyQt6.QtCore import QObject, QPoint, QTimer
from PyQt6.QtWidgets import QToolTip
from vispy import scene

from app.view.geometry import FlowGeometry
from energy_flow.trace.telemetry import FlowSample

#: Picking runs at most this often while the mouse moves (ms).
HOVER_INTERVAL_MS = 40


def describe_flow(flows: FlowSample, row: int, step: int, reason_names: Sequence[str]) -> str:
    """One line about traced flow ``row`` at ``step``: id, parent, sample, energy or its end."""
    parent = int(flows.parent_id[row])
    energy = float(flows.energy[row, step]) if step < flows.energy.shape[1] else float("nan")
    end = int(flows.end_step[row])
    if np.isfinite(energy) and step < end:
        state = f"energy {energy:.3g} at step {step}"
    elif step >= end:
        code = int(flows.reason[row])
        reason = reason_names[code].replace("_", " ") if 0 <= code < len(reason_names) else "ended"
        state = f"{reason} at step {end}"
    else:
        state = f"born at step {int(flows.birth_step[row])}"
    # Ids as the inspector writes them and "Flow id" takes them: no thousands separator.
    return (f"flow {int(flows.flow_id[row])} · parent {parent if parent >= 0 else 'none (placed)'}"
            f" · sample {int(flows.sample_index[row])} · {state}")


class FlowHover(QObject):
    """Shows :attr:`text` as a tooltip of the canvas while the mouse rests on a drawn flow.

    ``pick_row(at)`` gives the drawn flow under canvas pixel ``at`` (an index into the drawn
    sample) or None; ``context()`` gives (traced sample, drawn geometry, step, reason names).
    """

    def __init__(self, canvas: scene.SceneCanvas, pick_row: Callable[[tuple[float, float]], int | None],
                 context: Callable[[], tuple[FlowSample | None, FlowGeometry | None, int, Sequence[str]]],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._canvas = canvas
        self._pick_row = pick_row
        self._context = context
        self._at: tuple[float, float] | None = None
        self.text = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(HOVER_INTERVAL_MS)
        self._timer.timeout.connect(self.update_now)
        canvas.events.mouse_move.connect(self._on_move)

    def _on_move(self, event) -> None:
        if event.buttons:                 # dragging: the camera turns, nothing is named
            self._at = None
            self._show("")
            return
        self._at = (float(event.pos[0]), float(event.pos[1]))
        if not self._timer.isActive():
            self._timer.start()

    def update_now(self) -> None:
        """Pick at the last mouse position and show (or hide) the tooltip."""
        flows, geo, step, reasons = self._context()
        row = self._pick_row(self._at) if self._at is not None and geo is not None else None
        self._show("" if row is None or flows is None else describe_flow(flows, int(geo.rows[row]), step, reasons))

    def _show(self, text: str) -> None:
        self.text = text
        native = self._canvas.native
        if not text:
            QToolTip.hideText()
            return
        x, y = self._at
        QToolTip.showText(native.mapToGlobal(QPoint(int(x), int(y))), text, native)
