"""The lattice around the flows: its box, the start and output planes, their labels, and the
energy deposited on the output planes (coverage). Box, planes and labels are built once per
batch; the deposits follow the propagation step (what landed up to the shown step, as the
Coverage panel shows it), on a scale fixed by the end of the batch so colours compare across
steps.
"""

from __future__ import annotations

import numpy as np
from vispy import scene
from vispy.visuals.text.text import FontManager

from app.colormaps import COVERAGE_LUT, deposit_level, map_values
from app.view.flat_mesh import FlatMesh
from app.view.style import BOX_COLOR, COVERAGE_ALPHA, OUTPUT_PLANE_COLOR, START_PLANE_COLOR, TEXT_COLOR
from energy_flow.trace.telemetry import BatchTelemetry

_CORNERS = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], np.float32)
_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7],
                   [0, 4], [1, 5], [2, 6], [3, 7]])


def deposits_at(telemetry: BatchTelemetry, step: int) -> np.ndarray:
    """Energy deposited per output-plane cell up to ``step`` [P, H, W]; the end of the batch when
    the batch was recorded without per-step deposits (older recordings)."""
    per_step = telemetry.plane_energy_steps
    if per_step is None:
        return telemetry.plane_energy
    return per_step[int(np.clip(step, 0, per_step.shape[0] - 1))]


def coverage_mesh(telemetry: BatchTelemetry, energy: np.ndarray | None = None,
                  top: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [4n, 3], faces [2n, 3], face colours [2n, 4]) of every covered output-plane cell.

    ``energy`` [P, H, W]: the deposits to draw (default: the end of the batch); ``top``: the
    deposit level (ln(1 + energy)) at the top of the colour scale (default: ``energy``'s largest).
    Each cell reached by a deposit becomes a quad centred on its lattice coordinate (cell
    centres sit on linspace(-1, 1, W)), coloured by ln(1 + its energy) over ``top`` — the scale
    of the Coverage panel — shared by all planes, with fainter alpha for smaller deposits. All
    planes' cells are one mesh, i.e. one draw call; cells that received nothing are left out so
    what lies behind shows.
    """
    energy = telemetry.plane_energy if energy is None else energy
    w, h = telemetry.lattice_shape[0], telemetry.lattice_shape[1]
    plane, iy, ix = np.nonzero(energy > 0)
    levels = deposit_level(energy[plane, iy, ix])
    if top is None:
        top = float(levels.max()) if levels.size else 0.0
    level = np.clip(levels / top, 0.0, 1.0) if top > 0 else np.zeros_like(levels)
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


def signed(z: float) -> str:
    """Plane coordinate as written on screen: "0", "+1", "−1"."""
    return "0" if z == 0 else f"{z:+g}".replace("-", "−")


class LatticeFrame:
    """Box, planes, coverage and labels under ``parent`` (the scaled lattice node).

    ``layers`` maps the layer names "box", "planes" and "coverage" to their visuals; the labels
    of the box and the planes follow those layers through :meth:`show_labels`.
    """

    def __init__(self, parent: scene.Node, fonts: FontManager) -> None:
        self.box = scene.visuals.Line(parent=parent, connect="segments", color=BOX_COLOR, method="gl")
        self.planes = FlatMesh(parent=parent)
        self.coverage = FlatMesh(parent=parent)
        self.labels = scene.visuals.Text("", parent=parent, color=TEXT_COLOR, font_size=8, anchor_x="left",
                                         anchor_y="center", font_manager=fonts)
        # Draw order with the flows (app.view.flow_layers): opaque box and points first, with depth
        # writes (GL state leaks from one visual to the next); translucent lines (5), then these
        # translucent planes and coverage (10, 11) without depth writes; labels over everything.
        self.box.update_gl_state(depth_mask=True)
        for order, node in ((10, self.planes), (11, self.coverage)):
            node.set_gl_state("translucent", depth_test=True, depth_mask=False)
            node.order = order
        self.labels.order = 20
        self.labels.update_gl_state(depth_test=False, depth_mask=True)
        self.layers: dict[str, list[scene.Node]] = {"box": [self.box], "planes": [self.planes],
                                                    "coverage": [self.coverage]}
        self.has_coverage = False        # the shown step has deposits to draw
        self.deposit_cells = 0
        self.coverage_max = 0.0          # the end of the batch's largest deposit, ln(1 + energy)
        self._tel: BatchTelemetry | None = None
        self._deposit_step: int | None = None
        self._label_items: dict[str, tuple[list[str], np.ndarray]] = {}
        self._labels_shown: list[str] = []

    def build(self, tel: BatchTelemetry) -> None:
        """Box, plane quads, labels and the coverage mesh of a new batch."""
        self.box.set_data(pos=_CORNERS[_EDGES.reshape(-1)], connect="segments")
        start_z = 0.0 if tel.start_mode == "center" else -1.0
        zs = [start_z, *tel.plane_z]
        colors = [START_PLANE_COLOR] + [OUTPUT_PLANE_COLOR] * len(tel.plane_z)
        quad = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
        verts = np.concatenate([np.column_stack([quad, np.full(4, z, np.float32)]) for z in zs])
        faces = np.concatenate([np.array([[0, 1, 2], [0, 2, 3]]) + 4 * i for i in range(len(zs))])
        self.planes.set_data(verts, faces, np.repeat(np.array(colors, np.float32), 2, axis=0))

        w, h, d = tel.lattice_shape
        self._label_items = {
            "box": ([f"W = {w}", f"H = {h}", f"D = {d}"],
                    np.array([[-0.1, -1.15, -1], [1.08, 0, -1], [1.06, -1.06, 0]], np.float32)),
            "planes": ([f"start z={signed(start_z)}"] + [f"output z={signed(z)}" for z in tel.plane_z],
                       np.array([[-1.0, 1.06, z] for z in zs], np.float32)),
        }
        self._labels_shown = []
        self._tel = tel
        self._deposit_step = None
        self.coverage_max = float(deposit_level(tel.plane_energy).max()) if tel.plane_energy.size else 0.0

    def show_deposits(self, step: int) -> None:
        """The deposits up to ``step`` (rebuilt only when the step changed)."""
        if self._tel is None or step == self._deposit_step:
            return
        self._deposit_step = step
        vertices, faces, face_colors = coverage_mesh(self._tel, deposits_at(self._tel, step), self.coverage_max)
        self.has_coverage = faces.shape[0] > 0
        self.deposit_cells = faces.shape[0] // 2       # two triangles per cell
        if self.has_coverage:
            self.coverage.set_data(vertices, faces, face_colors)

    def show_labels(self, shown: dict[str, bool]) -> None:
        """Labels of the shown layers; glyphs are laid out again only when the strings change."""
        texts, positions = [], []
        for name, (strings, pos) in self._label_items.items():
            if shown[name]:
                texts += strings
                positions.append(pos)
        self.labels.visible = bool(texts)
        if texts and texts != self._labels_shown:
            self._labels_shown = texts
            self.labels.text = texts
            self.labels.pos = np.concatenate(positions)
