"""The selected flow of the 3D view: click picking, its lineage, and the dimming of the rest.

Owned by :class:`app.view.lattice_view.LatticeView`, which calls three hooks: ``include_rows``
when it rebuilds the drawn sample (the lineage is always drawn, even beyond the display
budget), ``apply`` after every step change or recolouring (the lineage keeps its colours,
every other flow is dimmed — an alpha change, see :mod:`app.view.highlight`), and nothing
else. The selection is a flow *id*: it survives new batches (the same id is the same start
cell of the same sample) and follows the step slider; a batch whose traced sample lacks the
id shows nothing highlighted and says so through :attr:`message`.

A click is a press and release of the left button less than ``CLICK_SLOP_PX`` apart (a drag
turns the camera and picks nothing); picking runs on the click only (:mod:`app.view.picking`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from vispy.color import Color

from app.view.highlight import dimmed, dimmed_opaque
from app.view.picking import pick_row, project
from energy_flow.trace.lineage import FlowNotFound, lineage_mask
from energy_flow.trace.telemetry import FlowSample

if TYPE_CHECKING:
    from app.view.lattice_view import LatticeView

#: A press and release farther apart than this is a drag (camera), not a click.
CLICK_SLOP_PX = 4.0


class FlowSelection(QObject):
    """Signals: ``picked(flow_id)`` on a click that hit a drawn flow (the view does not select
    by itself: whoever listens calls :meth:`select`, so a typed id and a click take one path)."""

    picked = pyqtSignal(int)

    def __init__(self, view: "LatticeView") -> None:
        super().__init__(view)
        self._view = view
        self.flow_id: int | None = None
        self.message = ""
        self._flows: FlowSample | None = None   # the sample ``_lineage`` was computed for
        self._lineage: np.ndarray | None = None  # [F] bool over the sample, None: nothing to show
        self._dimmed = False
        self.vertex_keep = np.zeros(0, bool)      # [V] drawn vertices of the lineage
        self.head_keep = np.zeros(0, bool)        # [h] drawn heads of the lineage
        self._press: tuple[float, float] | None = None
        self._background = tuple(Color(view.canvas.bgcolor).rgb)
        view.canvas.events.mouse_press.connect(self._on_press)
        view.canvas.events.mouse_release.connect(self._on_release)

    # ------------------------------------------------------------------ public
    def select(self, flow_id: int | None) -> None:
        """Select ``flow_id`` (None clears); the view redraws at once (rebuilt only when the
        lineage holds flows outside the drawn sample)."""
        self.flow_id = None if flow_id is None else int(flow_id)
        self._flows = None
        view = self._view
        flows = self._current_flows()
        if flows is None:
            self._lineage = None
            return
        self._compute(flows)
        geo = view._geometry
        if self._lineage is not None and geo is not None and not np.all(np.isin(np.flatnonzero(self._lineage), geo.rows)):
            view._rebuild_flows()    # calls include_rows, then apply through _update_step
        else:
            view._update_step()      # fresh head colours, then apply

    @property
    def lineage_rows(self) -> np.ndarray:
        """Rows of the traced sample that are highlighted (empty: no selection shown)."""
        return np.zeros(0, np.intp) if self._lineage is None else np.flatnonzero(self._lineage)

    def screen_positions(self, points: np.ndarray) -> np.ndarray:
        """[n, 2] canvas pixels (x right, y down) of lattice points [n, 3], as the view draws them."""
        return project(points, self._transform())

    def pick(self, at: tuple[float, float]) -> int | None:
        """Flow id drawn nearest to canvas pixel ``at`` (heads first), None if nothing is near."""
        view, geo = self._view, self._view._geometry
        flows = self._current_flows()
        if geo is None or flows is None:
            return None
        t = view.step
        empty3, empty = np.zeros((0, 3), np.float32), np.zeros(0, np.intp)
        if view._layer_on["heads"]:
            alive = geo.alive_at(t)
            head_pos, head_rows = geo.positions[alive, t], np.flatnonzero(alive)
        else:
            head_pos, head_rows = empty3, empty
        if view._layer_on["trajectories"]:
            shown = geo.vertex_step <= t
            vertex_pos, vertex_rows = geo.vertices[shown], geo.vertex_flow[shown]
        else:
            vertex_pos, vertex_rows = empty3, empty
        hit = pick_row(at, self._transform(), head_pos=head_pos, head_rows=head_rows,
                       vertex_pos=vertex_pos, vertex_rows=vertex_rows)
        return None if hit is None else int(flows.flow_id[geo.rows[hit]])

    # ------------------------------------------------------------------ hooks of the view
    def include_rows(self, flows: FlowSample | None) -> np.ndarray | None:
        """Rows the drawn sample must hold (the lineage), recomputed for a new batch."""
        if flows is None:
            self._lineage = None
            return None
        if flows is not self._flows:
            self._compute(flows)
        return None if self._lineage is None else np.flatnonzero(self._lineage)

    def apply(self) -> None:
        """Dim every drawn flow outside the lineage (or undo the dimming); colours only."""
        view, geo = self._view, self._view._geometry
        active = self._lineage is not None and geo is not None
        if not active:
            self.vertex_keep = np.zeros(0, bool)
            self.head_keep = np.zeros(0, bool)
            if self._dimmed and geo is not None and geo.vertices.shape[0]:
                view._trajectories.set_data(color=geo.vertex_colors[view._color_mode])
            self._dimmed = False
            return
        keep_flow = self._lineage[geo.rows]
        self.vertex_keep = keep_flow[geo.vertex_flow]
        if geo.vertices.shape[0]:
            view._trajectories.set_data(color=dimmed(geo.vertex_colors[view._color_mode], self.vertex_keep))
        self.head_keep = keep_flow[geo.alive_at(view.step)]
        for points, keep in ((view._heads, self.head_keep), (view._spawns, keep_flow[geo.spawn_flow[:view._spawns.count]]),
                             (view._ends, keep_flow[geo.end_flow[:view._ends.count]])):
            if keep.shape[0] == points.count:
                points.set_colors(dimmed_opaque(points.colors, keep, self._background))
        self._dimmed = True

    # ------------------------------------------------------------------ internals
    def _current_flows(self) -> FlowSample | None:
        snap = self._view._snapshot
        return None if snap is None else snap.telemetry.flows

    def _compute(self, flows: FlowSample) -> None:
        self._flows = flows
        self._lineage = None
        if self.flow_id is None:
            self.message = ""
            return
        try:
            self._lineage = lineage_mask(flows, self.flow_id)
            self.message = ""
        except FlowNotFound as exc:
            self.message = str(exc)

    def _transform(self):
        return self._view._heads.get_transform("visual", "canvas")

    def _on_press(self, event) -> None:
        self._press = (float(event.pos[0]), float(event.pos[1])) if event.button == 1 else None

    def _on_release(self, event) -> None:
        press, self._press = self._press, None
        if press is None or event.button != 1:
            return
        at = (float(event.pos[0]), float(event.pos[1]))
        if np.hypot(at[0] - press[0], at[1] - press[1]) > CLICK_SLOP_PX:
            return
        flow_id = self.pick(at)
        if flow_id is not None:
            self.picked.emit(flow_id)
