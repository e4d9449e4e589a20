"""Flat-coloured triangles whose data is replaced per batch without rebuilding a shader program.

The start and output planes and the coverage quads change with every batch. VisPy's ``Mesh``
binds a new colour buffer and colour function on every ``set_data``, so its shader program is
parsed, compiled and linked again on the next draw: measured here, about half of the cost of
showing a new batch at the default budget (software OpenGL). This visual keeps one vertex
buffer per attribute and refills it, so a new batch uploads data and nothing else; its shader
is also the minimum (no colour map, no shading filters), which the planes and coverage need.
"""

from __future__ import annotations

import numpy as np
from vispy import gloo, scene
from vispy.visuals import Visual

_VERT = """
attribute vec3 a_position;
attribute vec4 a_color;
varying vec4 v_color;
void main() {
    v_color = a_color;
    gl_Position = $transform(vec4(a_position, 1.0));
}
"""

_FRAG = """
varying vec4 v_color;
void main() {
    gl_FragColor = v_color;
}
"""


class FlatMeshVisual(Visual):
    """Triangles ``vertices[faces]``, each face one colour (``face_colors``, RGBA)."""

    def __init__(self) -> None:
        super().__init__(vcode=_VERT, fcode=_FRAG)
        self._positions = gloo.VertexBuffer(np.zeros((1, 3), np.float32))
        self._colors = gloo.VertexBuffer(np.zeros((1, 4), np.float32))
        self.shared_program["a_position"] = self._positions
        self.shared_program["a_color"] = self._colors
        self._draw_mode = "triangles"
        self.positions = np.zeros((0, 3), np.float32)     # [3F, 3] as uploaded: three per face
        self.freeze()

    def set_data(self, vertices: np.ndarray, faces: np.ndarray, face_colors: np.ndarray) -> None:
        """Upload the triangles: their corners [F, 3] index ``vertices`` [V, 3]; ``face_colors`` [F, 4]."""
        corners = np.asarray(vertices, np.float32)[np.asarray(faces).reshape(-1)]
        self.positions = np.ascontiguousarray(corners)
        if corners.shape[0]:
            self._positions.set_data(self.positions)
            self._colors.set_data(np.ascontiguousarray(np.repeat(np.asarray(face_colors, np.float32), 3, axis=0)))
        self.update()

    def _prepare_transforms(self, view) -> None:
        view.view_program.vert["transform"] = view.get_transform()

    def _prepare_draw(self, view) -> bool | None:
        return False if self.positions.shape[0] == 0 else None

    def _compute_bounds(self, axis: int, view):
        if self.positions.shape[0] == 0:
            return None
        return self.positions[:, axis].min(), self.positions[:, axis].max()


FlatMesh = scene.visuals.create_visual_node(FlatMeshVisual)
