"""The drawn flows in the scene: trajectories, heads, spawn and termination points, and the
selected flow's marker — five visuals, each one draw call.

Three kinds of change, three costs, kept apart (the napari rule: cheap appearance changes
never rebuild data):

* :meth:`FlowLayers.show` — a new batch, budget or selection beyond the drawn sample: every
  array of the :class:`~app.view.geometry.FlowGeometry` is uploaded once;
* :meth:`FlowLayers.set_step` — the step slider, Play steps: one uniform (and the vertex range
  it can show) per visual;
* :meth:`FlowLayers.recolor` — colour mode or lineage dimming: colour buffers only.
"""

from __future__ import annotations

import numpy as np
from vispy import scene
from vispy.color import Color

from app.colormaps import REASON_STYLE, SPAWN_COLOR, SPAWN_SYMBOL
from app.view.geometry import FlowGeometry
from app.view.highlight import dimmed, dimmed_opaque
from app.view.step_visuals import StepLines, StepPoints, step_windows
from app.view.style import BACKGROUND, END_SIZE, HEAD_SIZE, MARKER_COLOR, MARKER_SIZE, SPAWN_SIZE

#: Layer name → the attribute of the visual that draws it.
FLOW_LAYERS = {"trajectories": "trajectories", "heads": "heads", "spawns": "spawns", "terminations": "ends"}


class FlowLayers:
    """The flow visuals under ``parent`` (the scaled lattice node)."""

    def __init__(self, parent: scene.Node) -> None:
        self.trajectories = StepLines(parent=parent)
        # Each points visual compiles only the symbols it draws (see points_fragment_shader).
        self.heads = StepPoints(HEAD_SIZE, ("disc",), parent=parent)
        self.spawns = StepPoints(SPAWN_SIZE, (SPAWN_SYMBOL,), parent=parent)
        self.ends = StepPoints(END_SIZE, tuple(symbol for _, _, symbol in REASON_STYLE.values()),
                               parent=parent)                # every termination reason, symbol per point
        self.marker = StepPoints(MARKER_SIZE, ("ring",), parent=parent)
        # Opaque points write depth; the translucent lines do not (GL state leaks from one visual
        # to the next, so every opaque visual re-enables depth writes: with them off, the next
        # frame's clear would leave the depth buffer as it was). The marker is drawn over
        # everything, after the translucent planes and coverage (orders 10, 11).
        for node in (self.heads, self.spawns, self.ends):
            node.update_gl_state(depth_mask=True)
        self.trajectories.set_gl_state("translucent", depth_test=True, depth_mask=False)
        self.trajectories.order = 5
        self.marker.update_gl_state(depth_test=False, depth_mask=True)
        self.marker.order = 15
        self.layers: dict[str, list[scene.Node]] = {name: [getattr(self, attr)]
                                                    for name, attr in FLOW_LAYERS.items()}
        self.geometry: FlowGeometry | None = None
        self.step = 0
        self._background = tuple(Color(BACKGROUND).rgb)

    def show(self, geo: FlowGeometry | None, color_mode: str, keep: np.ndarray | None = None) -> None:
        """Upload a new drawn sample (None: draw no flows), coloured by ``color_mode``, with the
        flows outside ``keep`` ([N] over the drawn flows) dimmed."""
        self.geometry = geo
        empty = np.zeros((0, 3), np.float32)
        if geo is None:
            for points in (self.heads, self.spawns, self.ends):
                points.set_data(empty, SPAWN_COLOR)
            self.trajectories.set_data(empty, np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32))
            self.set_marker(empty, np.zeros((0, 2), np.float32))
            return
        self.trajectories.set_data(geo.segment_pos, geo.segment_colors[color_mode],
                                   step_windows(np.repeat(geo.segment_step, 2)))
        self.heads.set_data(geo.head_pos, geo.head_colors[color_mode], "disc",
                            step_windows(geo.head_step, geo.head_step + 1))
        self.spawns.set_data(geo.spawn_pos, SPAWN_COLOR, SPAWN_SYMBOL, step_windows(geo.spawn_step))
        self.ends.set_data(geo.end_pos, geo.end_color, geo.end_symbol, step_windows(geo.end_at))
        if keep is not None:
            self.recolor(color_mode, keep)
        self.set_step(self.step)

    def set_step(self, step: int) -> None:
        """Show the flows as they are after ``step``: a uniform per visual, nothing uploaded."""
        self.step = int(step)
        for visual in (self.trajectories, self.heads, self.spawns, self.ends, self.marker):
            visual.set_step(self.step)

    def recolor(self, color_mode: str, keep: np.ndarray | None) -> None:
        """Colours for ``color_mode``; flows outside ``keep`` ([N] bool over the drawn flows,
        None: all kept) dimmed — translucent lines lose alpha, opaque points fade toward the
        background (see :mod:`app.view.highlight`). Only colour buffers are uploaded."""
        geo = self.geometry
        if geo is None:
            return
        lines = geo.segment_colors[color_mode]
        heads = geo.head_colors[color_mode]
        spawns = np.broadcast_to(np.asarray(SPAWN_COLOR, np.float32), (geo.spawn_flow.shape[0], 4))
        ends = geo.end_color
        if keep is not None:
            lines = dimmed(lines, np.repeat(keep[geo.segment_flow], 2))
            heads = dimmed_opaque(heads, keep[geo.head_flow], self._background)
            spawns = dimmed_opaque(spawns, keep[geo.spawn_flow], self._background)
            ends = dimmed_opaque(ends, keep[geo.end_flow], self._background)
        self.trajectories.set_colors(lines)
        self.heads.set_colors(heads)
        self.spawns.set_colors(spawns)
        self.ends.set_colors(ends)

    def set_marker(self, points: np.ndarray, windows: np.ndarray) -> None:
        """The selected flow's ring: one point per step window (see FlowSelection)."""
        self.marker.set_data(points, MARKER_COLOR, "ring", windows)
        self.marker.set_step(self.step)

    # ------------------------------------------------------------------ what is drawn now
    @property
    def segment_count(self) -> int:
        """Trajectory segments drawn at the current step."""
        return int(self.geometry.segments_until[self.step]) if self.geometry is not None else 0

    @property
    def head_count(self) -> int:
        geo = self.geometry
        return 0 if geo is None else int(geo.heads_start[self.step + 1] - geo.heads_start[self.step])

    @property
    def head_colors(self) -> np.ndarray:
        """[h, 4] colours of the heads drawn at the current step, as uploaded."""
        if self.geometry is None or not self.heads.count:
            return np.zeros((0, 4), np.float32)
        return self.heads.colors[self.geometry.heads_at(self.step)]

    @property
    def trajectory_colors(self) -> np.ndarray:
        """[2S, 4] colours of every segment's two vertices, as uploaded."""
        return self.trajectories.colors

    @property
    def marker_position(self) -> np.ndarray | None:
        """Where the ring is drawn at the current step (lattice coordinates), None if nowhere."""
        windows = self.marker.windows
        shown = np.flatnonzero((windows[:, 0] <= self.step) & (self.step < windows[:, 1]))
        return self.marker.positions[shown[0]].copy() if shown.shape[0] else None
