"""The selected flow of the 3D view: click picking, its lineage, the dimming of the rest, and the
ring that marks the flow itself.

The selection is a flow *id*: it survives new batches (the same id is the same start cell of
the same sample) and follows the step slider; a batch whose traced sample lacks the id shows
nothing highlighted and says so through :attr:`FlowSelection.message`. The lineage (ancestors
and descendants) keeps its colours, every other drawn flow is dimmed (colour buffers, see
:mod:`app.view.highlight`), and the flow itself gets a ring of its own at its head: one point
per step of its life, each with that step as its window, so the ring follows the step slider
by the same uniform as everything else and nothing is uploaded while scrubbing. After its end
step the ring stays where the flow ended.

A click is a press and release of the left button less than ``CLICK_SLOP_PX`` apart (a drag
turns the camera and picks nothing); picking runs on the click only (:mod:`app.view.picking`).

The view is reached through :class:`SelectionHost` (what this module needs of it), so the view
can own a selection without this module importing the view.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal
from vispy import scene

from app.view.geometry import FlowGeometry
from app.view.picking import Transform, pick_row, project
from app.view.step_visuals import NEVER, step_windows
from energy_flow.trace.lineage import FlowNotFound, lineage_mask
from energy_flow.trace.telemetry import FlowSample

#: A press and release farther apart than this is a drag (camera), not a click.
CLICK_SLOP_PX = 4.0


class SelectionHost(Protocol):
    """What a selection needs of the view that draws it."""

    canvas: scene.SceneCanvas

    @property
    def flows(self) -> FlowSample | None: ...          # the traced sample of the shown batch

    @property
    def geometry(self) -> FlowGeometry | None: ...     # what is drawn of it

    @property
    def step(self) -> int: ...

    def layer_shown(self, name: str) -> bool: ...

    def scene_transform(self) -> Transform: ...        # lattice coordinates → canvas pixels

    def show_selection(self) -> None: ...              # draw the lineage (rebuild if it is not drawn)


class FlowSelection(QObject):
    """Signals: ``picked(flow_id)`` on a click that hit a drawn flow (the view does not select
    by itself: whoever listens calls :meth:`select`, so a typed id and a click take one path)."""

    picked = pyqtSignal(int)

    def __init__(self, host: SelectionHost, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._host = host
        self.flow_id: int | None = None
        self.message = ""
        self._flows: FlowSample | None = None   # the sample ``_lineage`` was computed for
        self._lineage: np.ndarray | None = None  # [F] bool over the sample, None: nothing to show
        self._press: tuple[float, float] | None = None
        host.canvas.events.mouse_press.connect(self._on_press)
        host.canvas.events.mouse_release.connect(self._on_release)

    # ------------------------------------------------------------------ public
    def select(self, flow_id: int | None) -> None:
        """Select ``flow_id`` (None clears); the view redraws at once."""
        self.flow_id = None if flow_id is None else int(flow_id)
        self._flows = None
        flows = self._host.flows
        if flows is None:
            self._lineage = None
            return
        self._compute(flows)
        self._host.show_selection()

    @property
    def lineage_rows(self) -> np.ndarray:
        """Rows of the traced sample that are highlighted (empty: no selection shown)."""
        return np.zeros(0, np.intp) if self._lineage is None else np.flatnonzero(self._lineage)

    def lineage_drawn(self, geo: FlowGeometry) -> bool:
        """True when every flow of the lineage is in the drawn sample (else it must be rebuilt)."""
        return self._lineage is None or bool(np.all(np.isin(np.flatnonzero(self._lineage), geo.rows)))

    def keep(self, geo: FlowGeometry | None) -> np.ndarray | None:
        """[N] drawn flows that keep their colours, None when nothing is selected (none dimmed)."""
        if self._lineage is None or geo is None:
            return None
        return self._lineage[geo.rows]

    def marker(self, geo: FlowGeometry | None) -> tuple[np.ndarray, np.ndarray]:
        """(points [n, 3], step windows [n, 2]) of the selected flow's ring: its position after
        each step from its birth, the last one shown from then on."""
        flows = self._host.flows
        empty = (np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32))
        if self._lineage is None or geo is None or flows is None:
            return empty
        drawn = np.flatnonzero(flows.flow_id[geo.rows] == self.flow_id)
        if not drawn.shape[0]:
            return empty
        pos = geo.positions[drawn[0]]
        steps = np.flatnonzero(np.isfinite(pos[:, 0]))
        windows = step_windows(steps, steps + 1)
        windows[-1, 1] = NEVER
        return pos[steps].astype(np.float32), windows

    def include_rows(self, flows: FlowSample | None) -> np.ndarray | None:
        """Rows the drawn sample must hold (the lineage), recomputed for a new batch."""
        if flows is None:
            self._lineage = None
            return None
        if flows is not self._flows:
            self._compute(flows)
        return None if self._lineage is None else np.flatnonzero(self._lineage)

    def pick(self, at: tuple[float, float]) -> int | None:
        """Flow id drawn nearest to canvas pixel ``at`` (heads first), None if nothing is near."""
        row = self.pick_row(at)
        return None if row is None else int(self._host.flows.flow_id[self._host.geometry.rows[row]])

    def pick_row(self, at: tuple[float, float]) -> int | None:
        """Index into the drawn flows of the flow nearest to ``at`` (heads first), or None."""
        host = self._host
        geo, t = host.geometry, host.step
        if geo is None or host.flows is None:
            return None
        empty3, empty = np.zeros((0, 3), np.float32), np.zeros(0, np.intp)
        heads = geo.heads_at(t)
        head_pos, head_rows = ((geo.head_pos[heads], geo.head_flow[heads]) if host.layer_shown("heads")
                               else (empty3, empty))
        if host.layer_shown("trajectories"):
            shown = geo.vertex_step <= t
            vertex_pos, vertex_rows = geo.vertices[shown], geo.vertex_flow[shown]
        else:
            vertex_pos, vertex_rows = empty3, empty
        return pick_row(at, host.scene_transform(), head_pos=head_pos, head_rows=head_rows,
                        vertex_pos=vertex_pos, vertex_rows=vertex_rows)

    def screen_positions(self, points: np.ndarray) -> np.ndarray:
        """[n, 2] canvas pixels (x right, y down) of lattice points [n, 3], as the view draws them."""
        return project(points, self._host.scene_transform())

    # ------------------------------------------------------------------ internals
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
