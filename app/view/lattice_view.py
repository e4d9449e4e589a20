"""The 3D lattice view: where the flows of the newest batch went, step by step.

A VisPy SceneCanvas inside a QWidget, with the layer toggles, colour mode, display budget and
an FPS readout beside it. Rendering is software OpenGL on the build machines (DESIGN.md,
"Rendering budget"), so the view is built for few draw calls and cheap updates:

* every trajectory of the drawn flows is ONE ``Line`` visual (vertex array + connect index
  array; segments are sorted by the step they end at, so "segments up to step t" is a prefix
  of the index array and moving the step slider only uploads a shorter index buffer);
* the flow heads are ONE points visual, spawns one, terminations one (symbol per point); the
  points visual is a minimal GL_POINTS shader, several times cheaper per point than VisPy's
  ``Markers`` on software GL; all covered output-plane cells are ONE mesh;
* the on-screen overlay (texts, colour bars, legend) is four visuals: on software GL every
  visual costs about half a millisecond of Python per frame;
* ``set_snapshot`` rebuilds geometry (numpy, vectorised, no per-flow Python loop); ``set_step``
  and the toggles only slice prepared arrays or flip ``visible``.

Lattice coordinates are normalised to [-1, 1] on every axis. For display the whole 3D scene
sits under one scale transform ``(W, H, D) / max(W, H)`` so the box has the lattice's
proportions; the data itself stays in lattice coordinates.

The display budget samples whole flow families (a placed flow and all its descendants) evenly
over flow ids, then trims the youngest children if the last family overshoots, so exactly
``min(budget, F)`` flows are drawn and the count is written on screen as "showing N of M
flows" (M = every flow of the batch).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import vispy
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QMenu, QPushButton, QSpinBox,
                             QToolButton, QVBoxLayout, QWidget, QWidgetAction)

vispy.use("pyqt6")

from vispy import gloo, scene  # noqa: E402  (the backend must be chosen before scene is used)
from vispy.visuals import Visual  # noqa: E402
from vispy.visuals.text.text import FontManager  # noqa: E402
from vispy.visuals.transforms import STTransform  # noqa: E402

from app.colormaps import (COVERAGE_LUT, ENERGY_LUT, ENERGY_RANGE, REASON_STYLE, SAMPLE_PALETTE,  # noqa: E402
                           SPAWN_COLOR, SPAWN_SYMBOL, energy_colors, energy_range_of, log_normalise, map_values,
                           sample_colors)
from app.snapshot import Snapshot  # noqa: E402
from app.view.flow_selection import FlowSelection  # noqa: E402
from energy_flow.trace.telemetry import BatchTelemetry, FlowSample  # noqa: E402

#: Flows drawn by default. Chosen with benchmarks/bench_view.py: the largest measured budget that
#: kept a ~900×530 canvas above 20 fps (median of repeated runs) in every run while debug-preset
#: training ran in a background thread, on the shared 2-core Mesa llvmpipe build machines; 1,500
#: and 2,000 fell to ~16 fps at the last step (every trajectory segment drawn) in some runs.
#: Trajectory lines dominate the frame on software GL; on a real GPU raise it freely.
DEFAULT_DISPLAY_BUDGET = 1_000

BACKGROUND = "#16181d"
TEXT_COLOR = (0.88, 0.9, 0.94, 1.0)
BOX_COLOR = (0.75, 0.78, 0.85, 0.7)
START_PLANE_COLOR = (0.35, 0.6, 1.0, 0.16)
OUTPUT_PLANE_COLOR = (0.45, 1.0, 0.65, 0.08)
TRAJECTORY_ALPHA = 0.7
COVERAGE_ALPHA = (0.2, 0.75)   # alpha of the faintest and the strongest covered cell
HEAD_SIZE = 5.0
SPAWN_SIZE = 6.0
END_SIZE = 4.5
#: Symbol codes of the points visual (names as in app.colormaps).
SYMBOL_CODES = {"disc": 0, "square": 1, "triangle_up": 2, "x": 3, "star": 4}
LAYERS = ("box", "planes", "coverage", "trajectories", "heads", "spawns", "terminations")
COLOR_MODES = ("energy", "sample")
FPS_WINDOW_S = 1.0
#: Points of the energy colour range whose colours the legend shows for the heads (low, middle, high).
LEGEND_ENERGIES = (0.1, 0.5, 0.9)
#: Camera framing: the box's corners stay this far inside the canvas, and below the info lines.
FIT_MARGIN_PX = 8.0
FIT_TOP_PX = 44.0
FIT_ZOOM_STEP = 1.05
FIT_MAX_TRIES = 60


# ---------------------------------------------------------------------------- flow sampling
def family_roots(flow_id: np.ndarray, parent_id: np.ndarray) -> np.ndarray:
    """Row of each flow's family root (its placed ancestor), by pointer jumping.

    A flow whose parent is not in the sample (the sample was capped) is its own root. The loop
    runs once per generation of the family tree, never once per flow.
    """
    n = flow_id.shape[0]
    order = np.argsort(flow_id, kind="stable")
    sorted_ids = flow_id[order]
    at = np.clip(np.searchsorted(sorted_ids, parent_id), 0, max(n - 1, 0))
    found = (parent_id >= 0) & (sorted_ids[at] == parent_id) if n else np.zeros(0, bool)
    parent_row = np.where(found, order[at], np.arange(n))
    root = parent_row
    while True:
        nxt = parent_row[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def sample_flows(flows: FlowSample, budget: int, include: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows of the ``min(budget, F)`` flows to draw, chosen deterministically.

    Families are picked evenly over flow-id order (ids run sample-major over the start plane,
    so the pick covers every traced sample and the whole plane); just enough families are
    taken to reach the budget, then the youngest children overall are trimmed to hit it
    exactly, so parents are kept before their late descendants. ``include`` (rows) are drawn
    on top of the budget: the selected flow's lineage is always shown.
    """
    if include is not None and include.shape[0]:
        return np.union1d(sample_flows(flows, budget), include).astype(np.intp)
    n = flows.num_flows
    if budget >= n:
        return np.arange(n)
    if budget <= 0:
        return np.zeros(0, dtype=np.intp)
    root = family_roots(flows.flow_id, flows.parent_id)
    roots, inverse, counts = np.unique(root, return_inverse=True, return_counts=True)
    k = max(1, int(np.ceil(budget * roots.shape[0] / n)))
    while True:
        picked = np.unique(np.linspace(0, roots.shape[0] - 1, k).round().astype(np.intp))
        total = int(counts[picked].sum())
        if total >= budget or k >= roots.shape[0]:
            break
        k = min(roots.shape[0], max(k + 1, int(np.ceil(k * budget / max(total, 1)))))
    chosen = np.flatnonzero(np.isin(inverse, picked))
    keep = np.lexsort((flows.flow_id[chosen], flows.birth_step[chosen]))[:budget]
    return np.sort(chosen[keep])


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class FlowGeometry:
    """Everything drawn for the sampled flows of one batch, prepared once per snapshot."""

    rows: np.ndarray               # [N] rows of FlowSample drawn
    positions: np.ndarray          # [N, T+1, 3] their positions (NaN where absent)
    energy: np.ndarray             # [N, T+1] their energies
    birth_step: np.ndarray         # [N]
    end_step: np.ndarray           # [N]
    vertices: np.ndarray           # [V, 3] float32: every existing (flow, step) point
    vertex_flow: np.ndarray        # [V] index into ``rows`` of each vertex's flow (for picking)
    vertex_step: np.ndarray        # [V] step of each vertex
    vertex_colors: dict[str, np.ndarray]  # colour mode → [V, 4] float32
    segments: np.ndarray           # [S, 2] uint32, sorted by the step each segment ends at
    segments_until: np.ndarray     # [T+1]: segments ending at or before step t
    spawn_pos: np.ndarray          # [K, 3] birth points of children, sorted by birth step
    spawn_flow: np.ndarray         # [K] index into ``rows`` of each spawn point's child
    spawns_until: np.ndarray       # [T+1]
    end_pos: np.ndarray            # [E, 3] end points of terminated flows, sorted by end step
    end_flow: np.ndarray           # [E] index into ``rows`` of each end point's flow
    end_reason: np.ndarray         # [E] REASON_* of each
    end_color: np.ndarray          # [E, 4] float32 colour of its reason
    end_symbol: np.ndarray         # [E] float32 symbol code of its reason
    ends_until: np.ndarray         # [T+1]: terminations at or before step t

    @property
    def num_flows(self) -> int:
        return int(self.rows.shape[0])

    def alive_at(self, step: int) -> np.ndarray:
        """Mask of drawn flows alive after ``step`` (born at or before it, not yet ended).

        A flow that ends at step t is drawn as a termination at t, not as a head; this matches
        ``aggregates.active`` when the sample covers the whole batch.
        """
        return (self.birth_step <= step) & (step < self.end_step) & np.isfinite(self.positions[:, step, 0])


def build_geometry(flows: FlowSample, budget: int, energy_range: tuple[float, float] = ENERGY_RANGE,
                   include: np.ndarray | None = None) -> FlowGeometry:
    """Vertices, step-sorted segments and event points of the sampled flows (vectorised)."""
    rows = sample_flows(flows, budget, include)
    pos = flows.positions[rows]
    energy = flows.energy[rows]
    steps = pos.shape[1]
    valid = np.isfinite(pos[..., 0])
    vertex_index = np.full(valid.shape, -1, dtype=np.int64)
    vertex_index[valid] = np.arange(int(valid.sum()))
    vertices = np.ascontiguousarray(pos[valid], dtype=np.float32)
    vertex_flow, vertex_step = np.nonzero(valid)    # row-major, the order of pos[valid]
    per_flow = valid.sum(axis=1)
    colors = {
        "energy": _with_alpha(energy_colors(energy[valid], *energy_range), TRAJECTORY_ALPHA),
        "sample": _with_alpha(np.repeat(sample_colors(flows.sample_index[rows]), per_flow, axis=0),
                              TRAJECTORY_ALPHA),
    }
    seg_step, seg_flow = np.nonzero((valid[:, :-1] & valid[:, 1:]).T)   # step-major: sorted by step
    segments = np.stack([vertex_index[seg_flow, seg_step], vertex_index[seg_flow, seg_step + 1]],
                        axis=1).astype(np.uint32)
    all_steps = np.arange(steps)
    birth, end, reason = flows.birth_step[rows], flows.end_step[rows], flows.reason[rows]
    flow_idx = np.arange(rows.shape[0])

    spawned = np.flatnonzero(flows.parent_id[rows] >= 0)
    spawned = spawned[np.argsort(birth[spawned], kind="stable")]
    ended = np.flatnonzero(np.isin(reason, list(REASON_STYLE)))
    ended = ended[np.argsort(end[ended], kind="stable")]
    end_reason = reason[ended]
    codes = np.array(list(REASON_STYLE))              # the three reason codes, not flows
    style_row = np.zeros(int(codes.max()) + 1, np.intp)
    style_row[codes] = np.arange(codes.shape[0])
    style_row = style_row[end_reason]
    palette = np.array([color for _, color, _ in REASON_STYLE.values()], np.float32)
    symbols = np.array([SYMBOL_CODES[sym] for _, _, sym in REASON_STYLE.values()], np.float32)
    return FlowGeometry(
        rows=rows, positions=pos, energy=energy, birth_step=birth, end_step=end,
        vertices=vertices, vertex_flow=vertex_flow, vertex_step=vertex_step, vertex_colors=colors, segments=segments,
        segments_until=np.searchsorted(seg_step + 1, all_steps, side="right"),
        spawn_pos=_finite_rows(pos[flow_idx[spawned], birth[spawned]]), spawn_flow=spawned,
        spawns_until=np.searchsorted(birth[spawned], all_steps, side="right"),
        end_pos=_finite_rows(pos[ended, end[ended]]), end_flow=ended, end_reason=end_reason,
        end_color=palette[style_row], end_symbol=symbols[style_row],
        ends_until=np.searchsorted(end[ended], all_steps, side="right"),
    )


def _finite_rows(points: np.ndarray) -> np.ndarray:
    """float32 copy; telemetry guarantees these points exist, NaN would break bounds."""
    return np.nan_to_num(np.ascontiguousarray(points, dtype=np.float32))


def _with_alpha(colors: np.ndarray, alpha: float) -> np.ndarray:
    out = colors.astype(np.float32, copy=True)
    out[:, 3] = alpha
    return out


def _signed(z: float) -> str:
    """Plane coordinate as written on screen: "0", "+1", "−1"."""
    return "0" if z == 0 else f"{z:+g}".replace("-", "−")


# ---------------------------------------------------------------------------- points visual

_POINTS_VERT = """
attribute vec3 a_position;
attribute vec4 a_color;
attribute float a_symbol;
varying vec4 v_color;
varying float v_symbol;
void main() {
    gl_Position = $transform(vec4(a_position, 1.0));
    gl_PointSize = $size;
    v_color = a_color;
    v_symbol = a_symbol;
}
"""

# Signed "outside" distance of each symbol in point coordinates p in [-1, 1] (y down).
_POINTS_FRAG = """
varying vec4 v_color;
varying float v_symbol;
void main() {
    vec2 p = 2.0 * gl_PointCoord - 1.0;
    int s = int(v_symbol + 0.5);
    float d;
    if (s == 0) {
        d = dot(p, p) - 1.0;
    } else if (s == 1) {
        d = max(abs(p.x), abs(p.y)) - 0.8;
    } else if (s == 2) {
        d = max(p.y - 0.75, 1.7 * abs(p.x) - (p.y + 0.95));
    } else if (s == 3) {
        d = max(min(abs(p.x - p.y), abs(p.x + p.y)) - 0.45, max(abs(p.x), abs(p.y)) - 0.85);
    } else {
        float a = atan(p.y, p.x) + 1.5707963;
        d = length(p) - (0.35 + 0.65 * pow(abs(cos(2.5 * a)), 3.0));
    }
    if (d > 0.0) discard;
    gl_FragColor = v_color;
}
"""


class PointsVisual(Visual):
    """Minimal GL_POINTS sprites: a position, colour and symbol per point, one size per visual.

    VisPy's Markers evaluates every symbol, an outline and antialiasing per fragment; on
    software OpenGL that costs several times more than drawing the points (DESIGN.md measured
    4–5×), and the flow heads, spawns and terminations are many points. Five cheap shapes
    cover what this view marks.
    """

    def __init__(self, size: float = 5.0) -> None:
        super().__init__(vcode=_POINTS_VERT, fcode=_POINTS_FRAG)
        self._positions = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 4), np.float32)
        self._buffers = {name: gloo.VertexBuffer(np.zeros((1, width), np.float32))
                         for name, width in (("a_position", 3), ("a_color", 4), ("a_symbol", 1))}
        for name, buffer in self._buffers.items():
            self.shared_program[name] = buffer
        self._size = float(size)
        self._draw_mode = "points"
        self.set_gl_state(depth_test=True, depth_mask=True, blend=True,
                          blend_func=("src_alpha", "one_minus_src_alpha"))
        self.freeze()

    @property
    def count(self) -> int:
        return int(self._positions.shape[0])

    def set_data(self, pos: np.ndarray, color, symbol: str | np.ndarray = "disc",
                 size: float | None = None) -> None:
        """Points at ``pos`` [n, 2|3]; ``color`` one RGBA or [n, 4]; ``symbol`` a name or codes."""
        pos = np.asarray(pos, np.float32)
        n = pos.shape[0]
        if size is not None:
            self._size = float(size)
        self._positions = np.zeros((n, 3), np.float32)
        self._positions[:, : pos.shape[1]] = pos
        self.colors = np.zeros((0, 4), np.float32)
        if n:
            colors = np.broadcast_to(np.asarray(color, np.float32), (n, 4))
            codes = (np.full(n, SYMBOL_CODES[symbol], np.float32) if isinstance(symbol, str)
                     else np.asarray(symbol, np.float32))
            self._buffers["a_position"].set_data(self._positions)
            self.colors = np.ascontiguousarray(colors)
            self._buffers["a_color"].set_data(self.colors)
            self._buffers["a_symbol"].set_data(np.ascontiguousarray(codes.reshape(n, 1)))
        self.update()

    def set_colors(self, colors: np.ndarray) -> None:
        """Recolour the points drawn now ([n, 4]); only the colour buffer is uploaded."""
        if self.count:
            self._buffers["a_color"].set_data(np.ascontiguousarray(colors, np.float32))
            self.update()

    def _prepare_transforms(self, view) -> None:
        view.view_program.vert["transform"] = view.get_transform()

    def _prepare_draw(self, view) -> bool | None:
        if self.count == 0:
            return False
        view.view_program.vert["size"] = self._size * view.transforms.pixel_scale
        return None

    def _compute_bounds(self, axis: int, view):
        if self.count == 0:
            return None
        return self._positions[:, axis].min(), self._positions[:, axis].max()


Points = scene.visuals.create_visual_node(PointsVisual)


def coverage_mesh(telemetry: BatchTelemetry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [4n, 3], faces [2n, 3], face colours [2n, 4]) of every covered output-plane cell.

    Each cell reached by any deposit becomes a quad centred on its lattice coordinate (cell
    centres sit on linspace(-1, 1, W)), coloured by its deposited energy on a log scale shared
    by all planes, with fainter alpha for smaller deposits. All planes' cells are one mesh,
    i.e. one draw call; cells that received nothing are left out so what lies behind shows.
    """
    energy = telemetry.plane_energy
    w, h = telemetry.lattice_shape[0], telemetry.lattice_shape[1]
    plane, iy, ix = np.nonzero(energy > 0)
    reference = float(energy.max()) if energy.size else 0.0
    level = log_normalise(energy[plane, iy, ix], reference)
    colors = map_values(level, COVERAGE_LUT)
    lo, hi = COVERAGE_ALPHA
    colors[:, 3] = lo + (hi - lo) * level
    dx, dy = 2.0 / (w - 1), 2.0 / (h - 1)
    centre = np.column_stack([-1.0 + ix * dx, -1.0 + iy * dy,
                              np.asarray(telemetry.plane_z, np.float64)[plane]]).astype(np.float32)
    corners = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], np.float32)
    corners *= np.array([dx, dy, 0], np.float32)
    vertices = (centre[:, None, :] + corners[None, :, :]).reshape(-1, 3)
    base = 4 * np.arange(centre.shape[0], dtype=np.uint32)[:, None]
    faces = np.concatenate([base + np.array([0, 1, 2], np.uint32), base + np.array([0, 2, 3], np.uint32)],
                           axis=1).reshape(-1, 3)
    return vertices, faces, np.repeat(colors, 2, axis=0).astype(np.float32)


class _Overlay:
    """Screen-space information drawn over the scene: text, colour bars, legend.

    Everything is parented to the canvas scene (pixels, y down) and deliberately made of four
    visuals — one Text holding every string, one Image holding both colour bars, one Line for
    their frames, one points visual for the legend symbols — because on software OpenGL every
    extra visual costs about half a millisecond of Python per frame. ``layout`` is cheap (a few
    hundred bytes of data) and runs only when the text or the canvas size changes.
    """

    BAR_WIDTH = 12
    BAR_GAP_COLUMNS = 6        # transparent image columns between the two bars

    def __init__(self, root: scene.Node, fonts: FontManager) -> None:
        self.text = scene.visuals.Text("", parent=root, color=TEXT_COLOR, font_size=8,
                                       anchor_x="left", anchor_y="center", font_manager=fonts)
        self.bars = scene.visuals.Image(parent=root, interpolation="nearest", clim=(0, 255))
        self.frames = scene.visuals.Line(parent=root, connect="segments", color=TEXT_COLOR, method="gl")
        self.legend = Points(parent=root)
        self.empty = scene.visuals.Text("no batch yet", parent=root, color=TEXT_COLOR, font_size=14,
                                        anchor_x="center", anchor_y="center", font_manager=fonts)
        self.nodes = [self.text, self.bars, self.frames, self.legend]
        for node in self.nodes + [self.empty]:
            node.order = 100
            node.update_gl_state(depth_test=False, depth_mask=True)
        self.color_mode = COLOR_MODES[0]
        self.samples_shown = 0     # traced samples of the batch ("colour by sample" legend)
        self.info_lines: tuple[str, ...] = ()
        self.bar_titles: list[str] = []
        self.coverage_max = 0.0
        self.energy_range = ENERGY_RANGE   # the shown batch's (energy_range_of)
        self.show_coverage_bar = True

    def entries(self) -> list[tuple[str, list[tuple[float, ...]], str]]:
        """Legend rows: (label, the colours drawn for it, symbol) — the colours heads really get."""
        if self.color_mode == "energy":
            lo, hi = self.energy_range
            heads = ("head (alive): colour = flow energy (bar)",
                     [tuple(float(c) for c in energy_colors(np.array([lo + f * (hi - lo)]), lo, hi)[0])
                      for f in LEGEND_ENERGIES])
        else:
            shown = max(1, min(self.samples_shown, SAMPLE_PALETTE.shape[0]))
            repeat = f", repeating after {SAMPLE_PALETTE.shape[0]}" if self.samples_shown > shown else ""
            heads = (f"head and trajectory: colour = batch sample 1–{shown}{repeat}",
                     [tuple(float(c) for c in SAMPLE_PALETTE[k]) for k in range(shown)])
        rows = [(heads[0], heads[1], "disc"), ("spawn point", [SPAWN_COLOR], SPAWN_SYMBOL)]
        rows += [(name, [color], symbol) for name, color, symbol in REASON_STYLE.values()]
        return rows

    def set_visible(self, has_data: bool) -> None:
        self.empty.visible = not has_data
        for node in self.nodes:
            node.visible = has_data

    def layout(self, size: tuple[float, float]) -> None:
        """Place every item for a canvas of ``size`` pixels; called on resize and on changes."""
        w, h = float(size[0]), float(size[1])
        self.empty.pos = (w / 2, h / 2)
        strings: list[str] = []
        pos: list[tuple[float, float]] = []
        for i, line in enumerate(self.info_lines):
            strings.append(line)
            pos.append((10.0, 14.0 + 16.0 * i))

        bar_h = float(np.clip(h * 0.3, 60.0, 150.0))
        top = 56.0
        # The energy bar explains the colours only when flows are coloured by energy.
        bars = [("flow energy", ENERGY_LUT, self.energy_range)] if self.color_mode == "energy" else []
        if self.show_coverage_bar:
            bars.append(("deposited (log)", COVERAGE_LUT, (0.0, self.coverage_max)))
        step = self.BAR_WIDTH * (self.BAR_GAP_COLUMNS + 1)
        self.bars.visible = self.frames.visible = bool(bars)
        self.bar_titles = [title for title, _, _ in bars]
        x0 = w - 60.0 - step * (len(bars) - 1)
        columns: list[np.ndarray] = []
        segments = []
        for i, (title, table, (lo, hi)) in enumerate(bars):
            x = x0 + step * i
            strings += [title, _tick(hi), _tick(lo)]
            pos += [(x - 24.0, top - 14.0), (x + self.BAR_WIDTH + 4, top), (x + self.BAR_WIDTH + 4, top + bar_h)]
            columns.append(table[::-1])    # row 0 is the top of the bar: the high end
            if i < len(bars) - 1:
                columns += [np.zeros_like(table)] * self.BAR_GAP_COLUMNS
            r = (x, top, x + self.BAR_WIDTH, top + bar_h)
            segments += [(r[0], r[1]), (r[2], r[1]), (r[2], r[1]), (r[2], r[3]),
                         (r[2], r[3]), (r[0], r[3]), (r[0], r[3]), (r[0], r[1])]
        if bars:
            image = (np.stack(columns, axis=1) * 255).round().astype(np.uint8)
            self.bars.set_data(image)
            self.bars.transform = STTransform(scale=(self.BAR_WIDTH, bar_h / image.shape[0]), translate=(x0, top))
            self.frames.set_data(pos=np.array(segments, np.float32), connect="segments")

        entries = self.entries()
        n = len(entries)
        ys = h - 14.0 - 16.0 * np.arange(n - 1, -1, -1, dtype=np.float32)
        points, colors, symbols = [], [], []
        for (label, swatches, symbol), y in zip(entries, ys):
            for k, color in enumerate(swatches):        # several swatches side by side
                points.append((12.0 + 9.0 * k, float(y)))
                colors.append(color)
                symbols.append(SYMBOL_CODES[symbol])
            strings.append(label)
            pos.append((20.0 + 9.0 * len(swatches), float(y)))
        self.legend.set_data(np.array(points, np.float32), np.array(colors, np.float32),
                             np.array(symbols, np.float32), size=9.0)
        self.text.text = strings
        self.text.pos = np.array(pos, np.float32)


def _tick(value: float) -> str:
    return f"{value:.3g}"


# ---------------------------------------------------------------------------- the widget
class LatticeView(QWidget):
    """3D view of the newest batch: lattice box, planes, coverage, trajectories, heads, events.

    Public: ``set_snapshot``, ``set_step``, ``set_layer_visible``, ``set_color_mode``,
    ``set_display_budget``, ``reset_view``, ``render_image``, and the read-only ``fps``,
    ``shown_flows``, ``total_flows``, ``head_count``, ``segment_count``, ``step``, ``info_text``,
    ``is_empty``, ``empty_message``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._snapshot: Snapshot | None = None
        self._geometry: FlowGeometry | None = None
        self._requested_step: int | None = None
        self._step = 0
        self._color_mode = COLOR_MODES[0]
        self._budget = DEFAULT_DISPLAY_BUDGET
        self._energy_range = ENERGY_RANGE
        self._layer_on = {name: True for name in LAYERS}
        self._draw_times: deque[float] = deque(maxlen=240)
        self._head_count = 0
        self._segments_shown = 0
        self._has_coverage = False
        self._shape: tuple[int, int, int] | None = None
        self._label_items: dict[str, tuple[list[str], np.ndarray]] = {}
        self._labels_shown: list[str] = []

        # One glyph atlas for every text of this canvas: VisPy gives each Text its own by
        # default, and rasterising the same glyphs a dozen times costs seconds on first draw.
        self._fonts = FontManager()
        self.canvas = scene.SceneCanvas(keys=None, bgcolor=BACKGROUND, show=False, parent=self)
        self.canvas.events.draw.connect(self._on_draw)
        self.canvas.events.resize.connect(lambda _e: self._overlay.layout(self.canvas.size))
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=40.0, elevation=24.0, azimuth=-55.0)
        self._world = scene.Node(parent=self.view.scene)
        self._build_visuals()
        self._overlay = _Overlay(self.canvas.scene, self._fonts)
        self._overlay.layout(self.canvas.size)
        self._build_controls()
        self.selection = FlowSelection(self)   # click picking and lineage highlighting
        self._fps_timer = QTimer(self)
        self._fps_timer.setInterval(500)
        self._fps_timer.timeout.connect(self._refresh_fps_label)
        self._fps_timer.start()
        self._apply_visibility()

    # ------------------------------------------------------------------ construction
    def _build_visuals(self) -> None:
        w = self._world
        self._box = scene.visuals.Line(parent=w, connect="segments", color=BOX_COLOR, method="gl")
        self._planes = scene.visuals.Mesh(parent=w)
        self._coverage = scene.visuals.Mesh(parent=w)
        self._trajectories = scene.visuals.Line(parent=w, method="gl", antialias=False, width=1)
        self._heads = Points(HEAD_SIZE, parent=w)
        self._spawns = Points(SPAWN_SIZE, parent=w)
        self._ends = Points(END_SIZE, parent=w)      # every termination reason, symbol per point
        self._labels = scene.visuals.Text("", parent=w, color=TEXT_COLOR, font_size=8, anchor_x="left",
                                          anchor_y="center", font_manager=self._fonts)
        # Opaque visuals first (depth writes on), then the translucent ones without depth writes
        # (lines, planes, coverage), labels last. GL state leaks from one visual to the next, so
        # every opaque visual re-enables depth writes: with them off, the next frame's clear
        # would leave the depth buffer as it was.
        for node in [self._box, self._heads, self._spawns, self._ends]:
            node.update_gl_state(depth_mask=True)
        for order, node in ((5, self._trajectories), (10, self._planes), (11, self._coverage)):
            node.set_gl_state("translucent", depth_test=True, depth_mask=False)
            node.order = order
        self._labels.order = 20
        self._labels.update_gl_state(depth_test=False, depth_mask=True)
        self.layers: dict[str, list[scene.Node]] = {
            "box": [self._box], "planes": [self._planes], "coverage": [self._coverage],
            "trajectories": [self._trajectories], "heads": [self._heads], "spawns": [self._spawns],
            "terminations": [self._ends],
        }

    def _build_controls(self) -> None:
        """One row of controls, narrow enough for a 1280 px window: the seven layer toggles
        live in a "Layers" drop-down instead of a row of their own."""
        self.checkboxes: dict[str, QCheckBox] = {}
        toggles = QWidget()
        toggle_layout = QVBoxLayout(toggles)
        toggle_layout.setContentsMargins(8, 4, 8, 4)
        for name in LAYERS:
            box = QCheckBox(name)
            box.setChecked(True)
            box.toggled.connect(lambda on, n=name: self.set_layer_visible(n, on))
            self.checkboxes[name] = box
            toggle_layout.addWidget(box)
        menu = QMenu(self)
        holder = QWidgetAction(menu)
        holder.setDefaultWidget(toggles)
        menu.addAction(holder)
        self.layers_button = QToolButton()
        self.layers_button.setText("Layers")
        self.layers_button.setToolTip("Show or hide the box, planes, coverage, trajectories, heads, spawns "
                                      "and terminations")
        self.layers_button.setMenu(menu)
        self.layers_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)

        self.reset_button = QPushButton("Reset view")
        self.reset_button.clicked.connect(self.reset_view)
        self.color_combo = QComboBox()
        self.color_combo.addItems([f"colour by {m}" for m in COLOR_MODES])
        self.color_combo.currentIndexChanged.connect(lambda i: self.set_color_mode(COLOR_MODES[i]))
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(100, 1_000_000)
        self.budget_spin.setSingleStep(500)
        self.budget_spin.setValue(self._budget)
        self.budget_spin.setKeyboardTracking(False)
        self.budget_spin.setToolTip("Most flows drawn; whole families are sampled evenly over flow ids.")
        self.budget_spin.valueChanged.connect(self.set_display_budget)
        self.fps_label = QLabel("fps: –")
        self.fps_label.setMinimumWidth(110)
        self.fps_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        view_row = QHBoxLayout()
        view_row.setContentsMargins(4, 0, 6, 0)
        view_row.addWidget(self.layers_button)
        view_row.addWidget(self.reset_button)
        view_row.addWidget(self.color_combo)
        view_row.addWidget(QLabel("Flows drawn:"))
        view_row.addWidget(self.budget_spin)
        view_row.addStretch(1)
        view_row.addWidget(self.fps_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(view_row)
        layout.addWidget(self.canvas.native, 1)

    # ------------------------------------------------------------------ public contract
    def set_snapshot(self, snapshot: Snapshot) -> None:
        """A new batch: rebuild the scene's geometry (box, planes, coverage, flows)."""
        self._snapshot = snapshot
        tel = snapshot.telemetry
        self._world.transform = STTransform(scale=self._display_scale(tel))
        self._build_static(tel)
        self._rebuild_flows()
        if tel.lattice_shape != self._shape:   # first batch, or a new lattice: frame it
            self._shape = tel.lattice_shape
            self.reset_view()

    def clear(self) -> None:
        """Back to "no batch yet": the model was rebuilt, so the batch drawn belongs to no run."""
        self._snapshot = None
        self._geometry = None
        self._shape = None            # the next batch is framed afresh (the lattice may differ)
        self._head_count = self._segments_shown = 0
        self._overlay.info_lines = ()
        self._apply_visibility()

    def set_step(self, step: int) -> None:
        """Show the state after ``step`` propagation steps (clamped to the batch's steps)."""
        self._requested_step = int(step)
        if self._snapshot is None:
            return
        self._step = int(np.clip(step, 0, self._snapshot.telemetry.num_steps))
        self._update_step()

    def set_layer_visible(self, name: str, visible: bool) -> None:
        """Show or hide one layer (only ``visible`` flags change; no data is touched)."""
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; layers are {', '.join(LAYERS)}")
        self._layer_on[name] = bool(visible)
        if self.checkboxes[name].isChecked() != bool(visible):
            self.checkboxes[name].setChecked(bool(visible))
        self._apply_visibility()
        if name == "coverage":
            self._refresh_overlay()

    def set_color_mode(self, mode: str) -> None:
        """Colour trajectories by energy or by batch sample (only the colour buffer changes)."""
        if mode not in COLOR_MODES:
            raise ValueError(f"unknown colour mode {mode!r}; choose one of {COLOR_MODES}")
        self._color_mode = mode
        self._overlay.color_mode = mode
        self.color_combo.setCurrentIndex(COLOR_MODES.index(mode))
        if self._geometry is not None and self._geometry.vertices.shape[0]:
            self._trajectories.set_data(color=self._geometry.vertex_colors[mode])
        geo = self._geometry
        if geo is not None:              # heads take the mode's colours too (geometry untouched)
            alive = geo.alive_at(self._step)
            self._heads.set_data(geo.positions[alive, self._step], self._head_colors(alive, self._step), "disc")
        self.selection.apply()
        if self._snapshot is not None:
            self._overlay.info_lines = self._info_lines(self._snapshot.telemetry)
        self._refresh_overlay()

    def set_display_budget(self, budget: int) -> None:
        """Draw at most ``budget`` flows (a data change: the drawn sample is rebuilt)."""
        self._budget = int(budget)
        if self.budget_spin.value() != self._budget:
            self.budget_spin.setValue(self._budget)
        if self._snapshot is not None:
            self._rebuild_flows()

    def reset_view(self) -> None:
        """Turntable back to the default angle, framing the whole lattice box."""
        cam = self.view.camera
        cam.elevation, cam.azimuth = 24.0, -55.0
        sx, sy, sz = self._world.transform.scale[:3] if self._snapshot else (1.0, 1.0, 1.0)
        cam.set_range(x=(-sx, sx), y=(-sy, sy), z=(-sz, sz), margin=0.08)
        self._fit_camera(tuple(self.canvas.size))
        self.canvas.update()

    def box_corners_on_screen(self) -> np.ndarray:
        """[8, 2] canvas pixel positions (x right, y down) of the corners of what the scene draws:
        the lattice box widened by half a cell in x and y, where the edge cells' coverage quads end."""
        hx, hy = 1.0, 1.0
        if self._snapshot is not None:
            w, h, _ = self._snapshot.telemetry.lattice_shape
            hx, hy = 1.0 + 1.0 / max(w - 1, 1), 1.0 + 1.0 / max(h - 1, 1)
        corners = np.array([[x * hx, y * hy, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], np.float32)
        mapped = self._box.get_transform("visual", "canvas").map(corners)
        return mapped[:, :2] / mapped[:, 3:4]

    def _fit_camera(self, size: tuple[float, float]) -> None:
        """Zoom out until the whole box lies inside the canvas, below the two info lines.

        ``set_range`` fits the unrotated box; tilted by the default elevation and azimuth its
        bottom corners fell off the canvas (and off exported images of another aspect ratio).
        Projecting the eight corners is exact for any aspect, lattice shape and field of view.
        """
        w, h = float(size[0]), float(size[1])
        cam = self.view.camera
        for _ in range(FIT_MAX_TRIES):
            p = self.box_corners_on_screen()
            if (p[:, 0].min() >= FIT_MARGIN_PX and p[:, 0].max() <= w - FIT_MARGIN_PX
                    and p[:, 1].min() >= FIT_TOP_PX and p[:, 1].max() <= h - FIT_MARGIN_PX):
                return
            cam.scale_factor *= FIT_ZOOM_STEP

    def render_image(self, size: tuple[int, int] = (1280, 800)) -> np.ndarray:
        """[h, w, 4] uint8 RGBA render of the view at ``size``, drawn offscreen (not a grab).

        The scene and the overlay are laid out for the requested size before the offscreen
        draw, so an export is not a stretched copy of the window.
        """
        w, h = int(size[0]), int(size[1])
        scale = self.canvas.pixel_scale
        logical = (w / scale, h / scale)
        old = tuple(self.canvas.size)
        # ``region`` is in the canvas framebuffer's y-up pixels: anchor the region's top edge to
        # the canvas's top edge so the overlay (laid out y-down from the top) lands in the image.
        region = (0, int(self.canvas.physical_size[1]) - h, w, h)
        cam = self.view.camera
        scale_factor = cam.scale_factor
        try:
            self.canvas.central_widget.size = logical
            self._overlay.layout(logical)
            if self._snapshot is not None:
                self._fit_camera(logical)      # another aspect ratio may need more room
            return self.canvas.render(region=region, size=(w, h), alpha=True)
        finally:
            self.canvas.central_widget.size = old
            cam.scale_factor = scale_factor
            self._overlay.layout(old)

    @property
    def fps(self) -> float:
        """Frames per second over the last second of real draw events (0 before any)."""
        times = np.fromiter(self._draw_times, dtype=np.float64)
        if times.shape[0] < 2:
            return 0.0
        recent = times[times >= times[-1] - FPS_WINDOW_S]
        span = recent[-1] - recent[0]
        return (recent.shape[0] - 1) / span if span > 0 else 0.0

    @property
    def shown_flows(self) -> int:
        return self._geometry.num_flows if self._geometry is not None else 0

    @property
    def total_flows(self) -> int:
        """Flows of the whole batch (the M of "showing N of M")."""
        if self._snapshot is None:
            return 0
        tel = self._snapshot.telemetry
        return tel.flows.total_flows if tel.flows is not None else tel.total_flows

    @property
    def head_count(self) -> int:
        """Heads drawn at the selected step."""
        return self._head_count

    @property
    def segment_count(self) -> int:
        """Trajectory line segments drawn at the selected step."""
        return self._segments_shown

    @property
    def step(self) -> int:
        return self._step

    @property
    def info_text(self) -> str:
        return "\n".join(self._overlay.info_lines)

    @property
    def is_empty(self) -> bool:
        """True until the first snapshot; the canvas then says "no batch yet"."""
        return self._snapshot is None

    @property
    def empty_message(self) -> str | None:
        """The empty-state text while it is shown, else None."""
        return self._overlay.empty.text if self._overlay.empty.visible else None

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _display_scale(tel: BatchTelemetry) -> tuple[float, float, float]:
        w, h, d = tel.lattice_shape
        m = float(max(w, h))
        return (w / m, h / m, d / m)

    def _build_static(self, tel: BatchTelemetry) -> None:
        """Box, plane quads, labels and the coverage mesh: once per snapshot."""
        corners = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], np.float32)
        edges = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7],
                          [0, 4], [1, 5], [2, 6], [3, 7]])
        self._box.set_data(pos=corners[edges.reshape(-1)], connect="segments")

        start_z = 0.0 if tel.start_mode == "center" else -1.0
        zs = [start_z, *tel.plane_z]
        colors = [START_PLANE_COLOR] + [OUTPUT_PLANE_COLOR] * len(tel.plane_z)
        quad = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
        verts = np.concatenate([np.column_stack([quad, np.full(4, z, np.float32)]) for z in zs])
        faces = np.concatenate([np.array([[0, 1, 2], [0, 2, 3]]) + 4 * i for i in range(len(zs))])
        self._planes.set_data(vertices=verts, faces=faces,
                              face_colors=np.repeat(np.array(colors, np.float32), 2, axis=0))

        w, h, d = tel.lattice_shape
        self._label_items = {
            "box": ([f"W = {w}", f"H = {h}", f"D = {d}"],
                    np.array([[-0.1, -1.15, -1], [1.08, 0, -1], [1.06, -1.06, 0]], np.float32)),
            "planes": ([f"start z={_signed(start_z)}"] + [f"output z={_signed(z)}" for z in tel.plane_z],
                       np.array([[-1.0, 1.06, z] for z in zs], np.float32)),
        }

        self._labels_shown = []
        vertices, faces, face_colors = coverage_mesh(tel)
        self._has_coverage = faces.shape[0] > 0
        if self._has_coverage:
            self._coverage.set_data(vertices=vertices, faces=faces, face_colors=face_colors)
        self._overlay.coverage_max = float(tel.plane_energy.max()) if tel.plane_energy.size else 0.0

    def _rebuild_flows(self) -> None:
        tel = self._snapshot.telemetry
        flows = tel.flows
        self._energy_range = energy_range_of(tel)
        self._overlay.energy_range = self._energy_range
        include = self.selection.include_rows(flows)
        self._geometry = (build_geometry(flows, self._budget, self._energy_range, include)
                          if flows is not None else None)
        geo = self._geometry
        if geo is not None and geo.vertices.shape[0]:
            self._trajectories.set_data(pos=geo.vertices, color=geo.vertex_colors[self._color_mode],
                                        connect=geo.segments[:1])
        self._step = int(np.clip(tel.num_steps if self._requested_step is None else self._requested_step,
                                 0, tel.num_steps))
        self._update_step()

    def _update_step(self) -> None:
        """Slice the prepared arrays for the selected step; nothing is recomputed."""
        geo, t = self._geometry, self._step
        if geo is None:
            self._head_count = self._segments_shown = 0
            for points in (self._heads, self._spawns, self._ends):
                points.set_data(np.zeros((0, 3), np.float32), SPAWN_COLOR)
        else:
            n_seg = int(geo.segments_until[t])
            self._segments_shown = n_seg
            if n_seg:
                self._trajectories.set_data(connect=geo.segments[:n_seg])
            alive = geo.alive_at(t)
            self._head_count = int(alive.sum())
            self._heads.set_data(geo.positions[alive, t], self._head_colors(alive, t), "disc")
            self._spawns.set_data(geo.spawn_pos[: geo.spawns_until[t]], SPAWN_COLOR, SPAWN_SYMBOL)
            n_end = int(geo.ends_until[t])
            self._ends.set_data(geo.end_pos[:n_end], geo.end_color[:n_end], geo.end_symbol[:n_end])
        self.selection.apply()
        self._overlay.info_lines = self._info_lines(self._snapshot.telemetry)
        self._apply_visibility()
        self._refresh_overlay()

    def _head_colors(self, alive: np.ndarray, t: int) -> np.ndarray:
        """[n, 4] colours of the heads alive at ``t``: by energy, or by batch sample (as the legend says)."""
        geo = self._geometry
        if self._color_mode == "energy":
            return energy_colors(geo.energy[alive, t], *self._energy_range)
        return sample_colors(self._snapshot.telemetry.flows.sample_index[geo.rows[alive]])

    @property
    def head_colors(self) -> np.ndarray:
        """[n, 4] float32 colours of the heads drawn at the selected step (read back for tests)."""
        return self._heads.colors

    @property
    def legend_entries(self) -> list[tuple[str, list[tuple[float, ...]], str]]:
        return self._overlay.entries()

    @property
    def colour_bars(self) -> list[str]:
        """Titles of the colour bars on screen."""
        return list(self._overlay.bar_titles)

    def _info_lines(self, tel: BatchTelemetry) -> tuple[str, str]:
        w, h, d = tel.lattice_shape
        snap = self._snapshot
        label = snap.batch_label or (f"batch {snap.report.step}" if snap.report is not None else "batch")
        planes = ", ".join(_signed(z) for z in tel.plane_z)
        if tel.flows is None:
            flows_line = f"trajectories not traced (tracing off) · {tel.total_flows:,} flows in batch"
        else:
            flows_line = (f"showing {self.shown_flows:,} of {self.total_flows:,} flows "
                          f"(trajectories coloured by {self._color_mode})")
        return (f"{label} · lattice {w} × {h} × {d} · start: {tel.start_mode} · output planes z = {planes}",
                f"{flows_line} · step {self._step}/{tel.num_steps} · heads {self._head_count:,} · "
                f"active in batch {int(tel.aggregates.active[self._step]):,}")

    def _apply_visibility(self) -> None:
        """Visible flags from the layer toggles and the data; nothing is uploaded but labels."""
        has_data = self._snapshot is not None
        for name, nodes in self.layers.items():
            for node in nodes:
                node.visible = has_data and self._layer_on[name]
        if has_data:
            self._trajectories.visible &= self._segments_shown > 0
            self._coverage.visible &= self._has_coverage
        texts, positions = [], []
        for name, (strings, pos) in self._label_items.items():
            if has_data and self._layer_on[name]:
                texts += strings
                positions.append(pos)
        self._labels.visible = bool(texts)
        if texts and texts != self._labels_shown:      # re-layout glyphs only when they change
            self._labels_shown = texts
            self._labels.text = texts
            self._labels.pos = np.concatenate(positions)
        self._overlay.set_visible(has_data)
        self.canvas.update()

    def _refresh_overlay(self) -> None:
        """Re-lay the overlay after its content changed (info text, coverage bar shown or not)."""
        self._overlay.show_coverage_bar = self._layer_on["coverage"] and self._has_coverage
        flows = self._snapshot.telemetry.flows if self._snapshot is not None else None
        self._overlay.samples_shown = int(np.unique(flows.sample_index).shape[0]) if flows is not None else 0
        self._overlay.layout(self.canvas.size)
        self.canvas.update()

    # ------------------------------------------------------------------ fps
    def _on_draw(self, _event) -> None:
        self._draw_times.append(time.perf_counter())

    @property
    def idle(self) -> bool:
        """True when nothing was drawn in the last second (the view redraws only on changes, so
        while training it is idle between batches: a frame rate would read 0)."""
        return not self._draw_times or time.perf_counter() - self._draw_times[-1] > FPS_WINDOW_S

    def _refresh_fps_label(self) -> None:
        if not self._draw_times:
            return
        self.fps_label.setText("idle" if self.idle else f"{self.fps:5.1f} fps")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._fps_timer.stop()
        self.canvas.close()
        super().closeEvent(event)
