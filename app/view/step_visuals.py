"""Points and line segments that show themselves by propagation step, chosen by one uniform.

Every item (a point, or a segment's two end points) carries its *step window* ``[from,
until)``; the vertex shader compares it with the uniform ``u_step`` and moves an item outside
its window out of the clip volume, where OpenGL drops it before rasterising. So moving through
the steps — the step slider, Play steps, a new batch shown at its last step — sets one float
per visual: no array is sliced, recoloured or uploaded (napari's tracks layer shows tracks by
time the same way). A batch is uploaded once, by :meth:`set_data`. Items are uploaded sorted by
window start, so each step also narrows the draw call to the items whose window can hold it (a
range of the uploaded buffers: attribute offsets, no data): hidden items cost no vertex work.

Both visuals are minimal GL programs rather than VisPy's ``Markers`` and ``Line``: on software
OpenGL (Mesa llvmpipe, the build machines) ``Markers`` evaluates every symbol, an outline and
antialiasing per fragment, several times the cost of these points (docs/architecture.md: 4–5× measured).
The points visual draws six cheap shapes; segments are plain 1-pixel GL lines.
"""

from __future__ import annotations

import numpy as np
from vispy import gloo, scene
from vispy.visuals import Visual

from app.view.style import SYMBOL_CODES

#: ``until`` of an item shown from its step to the end of the batch.
NEVER = 1e9

#: Shared by both vertex shaders: the window test and where hidden items go.
_STEP_WINDOW = """
uniform float u_step;
bool outside_window(vec2 window) {
    return u_step < window.x || u_step >= window.y;
}
const vec4 DROPPED = vec4(2.0, 2.0, 2.0, 1.0);   // outside the clip volume
"""

_POINTS_VERT = _STEP_WINDOW + """
attribute vec3 a_position;
attribute vec4 a_color;
attribute float a_symbol;
attribute vec2 a_window;
varying vec4 v_color;
varying float v_symbol;
void main() {
    v_color = a_color;
    v_symbol = a_symbol;
    if (outside_window(a_window)) {
        gl_Position = DROPPED;
        gl_PointSize = 0.0;
        return;
    }
    gl_Position = $transform(vec4(a_position, 1.0));
    gl_PointSize = $size;
}
"""

# Signed "outside" distance of each symbol in point coordinates p in [-1, 1] (y down).
_SYMBOL_DISTANCE = {
    "disc": "dot(p, p) - 1.0",
    "square": "max(abs(p.x), abs(p.y)) - 0.8",
    "triangle_up": "max(p.y - 0.75, 1.7 * abs(p.x) - (p.y + 0.95))",
    "x": "max(min(abs(p.x - p.y), abs(p.x + p.y)) - 0.45, max(abs(p.x), abs(p.y)) - 0.85)",
    "star": "length(p) - (0.35 + 0.65 * pow(abs(cos(2.5 * (atan(p.y, p.x) + 1.5707963))), 3.0))",
    "ring": "abs(length(p) - 0.78) - 0.2",
}


def points_fragment_shader(symbols: tuple[str, ...]) -> str:
    """The points' fragment shader for exactly ``symbols``.

    Software OpenGL runs a fragment shader on blocks of pixels in SIMD lanes, so an if/else
    chain over the symbols costs every branch for every pixel of every point: a visual that
    draws one symbol (the heads: discs) gets a shader without the others.
    """
    tests = [f"if (s == {SYMBOL_CODES[name]}) {{ d = {_SYMBOL_DISTANCE[name]}; }}" for name in symbols[:-1]]
    last = f"d = {_SYMBOL_DISTANCE[symbols[-1]]};"
    chain = " else ".join(tests + ([f"{{ {last} }}"] if tests else [last]))
    return f"""
varying vec4 v_color;
varying float v_symbol;
void main() {{
    vec2 p = 2.0 * gl_PointCoord - 1.0;
    int s = int(v_symbol + 0.5);
    float d;
    {chain}
    if (d > 0.0) discard;
    gl_FragColor = v_color;
}}
"""


_LINES_VERT = _STEP_WINDOW + """
attribute vec3 a_position;
attribute vec4 a_color;
attribute vec2 a_window;
varying vec4 v_color;
void main() {
    v_color = a_color;
    gl_Position = outside_window(a_window) ? DROPPED : $transform(vec4(a_position, 1.0));
}
"""

_LINES_FRAG = """
varying vec4 v_color;
void main() {
    gl_FragColor = v_color;
}
"""


def step_windows(start: np.ndarray, stop: np.ndarray | None = None) -> np.ndarray:
    """[n, 2] float32 windows ``[start, stop)``; ``stop`` None: shown from ``start`` on."""
    start = np.asarray(start, np.float32)
    out = np.empty((start.shape[0], 2), np.float32)
    out[:, 0] = start
    out[:, 1] = NEVER if stop is None else np.asarray(stop, np.float32)
    return out


class _StepVisual(Visual):
    """What both visuals share: vertex buffers by attribute name, the step uniform, bounds."""

    _WIDTHS: dict[str, int] = {}

    def __init__(self, vcode: str, fcode: str, draw_mode: str) -> None:
        super().__init__(vcode=vcode, fcode=fcode)
        self._positions = np.zeros((0, 3), np.float32)
        self._buffers = {name: gloo.VertexBuffer(np.zeros((1, width), np.float32))
                         for name, width in self._WIDTHS.items()}
        for name, buffer in self._buffers.items():
            self.shared_program[name] = buffer
        self.shared_program["u_step"] = 0.0
        self.colors = np.zeros((0, 4), np.float32)       # as uploaded (read back by the view and tests)
        self.windows = np.zeros((0, 2), np.float32)
        self._starts_sorted = self._ends_sorted = True
        self._step = 0.0
        self._drawn = (0, 0)                              # the range of items given to the draw call
        self._draw_mode = draw_mode

    @property
    def count(self) -> int:
        """Vertices uploaded (points, or twice the segments)."""
        return int(self._positions.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """[n, 3] float32 vertices as uploaded."""
        return self._positions

    @property
    def drawn_range(self) -> tuple[int, int]:
        """[first, last) of the items the draw call processes at the current step."""
        return self._drawn

    def set_step(self, step: float) -> None:
        """Show the items whose window holds ``step``: one uniform, nothing uploaded."""
        self._step = float(step)
        self.shared_program["u_step"] = self._step
        self._narrow()
        self.update()

    def _narrow(self) -> None:
        """Give the draw call only the items whose window can hold the step.

        The uniform decides what is shown; this only spares the vertex shader the items it would
        drop anyway (at 20k flows, hundreds of thousands of hidden heads and segments per frame).
        Items come sorted by window start, so those starting after the step are a suffix; where
        the ends are sorted too (heads: one step each), those ended before it are a prefix. The
        range is a view into the uploaded buffers: attribute offsets change, no data moves.
        """
        n = self.count
        starts, ends = self.windows[:, 0], self.windows[:, 1]
        last = int(np.searchsorted(starts, self._step, side="right")) if self._starts_sorted else n
        first = int(np.searchsorted(ends, self._step, side="right")) if self._ends_sorted else 0
        drawn = (min(first, last), last)
        if drawn != self._drawn and drawn[1] > drawn[0]:
            for name, buffer in self._buffers.items():
                self.shared_program[name] = buffer[drawn[0]:drawn[1]]
        self._drawn = drawn

    def set_colors(self, colors: np.ndarray) -> None:
        """Recolour the uploaded items ([n, 4]); only the colour buffer is uploaded."""
        if self.count:
            self.colors = np.ascontiguousarray(colors, np.float32)
            self._buffers["a_color"].set_data(self.colors)
            self.update()

    def _upload(self, pos: np.ndarray, color, windows: np.ndarray | None, **more: np.ndarray) -> None:
        pos = np.asarray(pos, np.float32)
        n = pos.shape[0]
        self._positions = np.zeros((n, 3), np.float32)
        self._positions[:, : pos.shape[1]] = pos
        self.colors = np.ascontiguousarray(np.broadcast_to(np.asarray(color, np.float32), (n, 4)))
        self.windows = step_windows(np.full(n, -NEVER)) if windows is None else np.asarray(windows, np.float32)
        self._starts_sorted = bool(np.all(np.diff(self.windows[:, 0]) >= 0))
        self._ends_sorted = bool(np.all(np.diff(self.windows[:, 1]) >= 0))
        self._drawn = (0, 0)
        if n:
            arrays = {"a_position": self._positions, "a_color": self.colors, "a_window": self.windows, **more}
            for name, data in arrays.items():
                self._buffers[name].set_data(np.ascontiguousarray(data, np.float32).reshape(n, -1))
        self._narrow()
        self.update()

    def _prepare_transforms(self, view) -> None:
        view.view_program.vert["transform"] = view.get_transform()

    def _compute_bounds(self, axis: int, view):
        if self.count == 0:
            return None
        return self._positions[:, axis].min(), self._positions[:, axis].max()


class StepPointsVisual(_StepVisual):
    """GL_POINTS sprites: position, colour, symbol and step window per point, one size per visual.

    ``symbols`` are the names (:data:`~app.view.style.SYMBOL_CODES`) it can draw; its fragment
    shader holds only those (see :func:`points_fragment_shader`).
    """

    _WIDTHS = {"a_position": 3, "a_color": 4, "a_symbol": 1, "a_window": 2}

    def __init__(self, size: float = 5.0, symbols: tuple[str, ...] = tuple(SYMBOL_CODES)) -> None:
        unknown = set(symbols) - set(SYMBOL_CODES)
        if not symbols or unknown:
            raise ValueError(f"symbols must be some of {tuple(SYMBOL_CODES)}, not {symbols}")
        super().__init__(_POINTS_VERT, points_fragment_shader(tuple(symbols)), "points")
        self.symbols = tuple(symbols)
        self._drawable = np.isin(np.arange(max(SYMBOL_CODES.values()) + 1), [SYMBOL_CODES[n] for n in symbols])
        self._size = float(size)
        self.set_gl_state(depth_test=True, depth_mask=True, blend=True,
                          blend_func=("src_alpha", "one_minus_src_alpha"))
        self.freeze()

    def set_data(self, pos: np.ndarray, color, symbol: str | np.ndarray = "disc",
                 windows: np.ndarray | None = None, size: float | None = None) -> None:
        """Points at ``pos`` [n, 2|3]; ``color`` one RGBA or [n, 4]; ``symbol`` a name or codes;
        ``windows`` [n, 2] their step windows (None: always shown)."""
        if size is not None:
            self._size = float(size)
        n = np.asarray(pos).shape[0]
        codes = (np.full(n, SYMBOL_CODES[symbol], np.float32) if isinstance(symbol, str)
                 else np.asarray(symbol, np.float32))
        if codes.shape[0] and not self._drawable[codes.astype(np.intp)].all():   # a lookup: no sort per batch
            raise ValueError(f"this points visual draws only {self.symbols}")
        self._upload(pos, color, windows, a_symbol=codes)

    def _prepare_draw(self, view) -> bool | None:
        if self._drawn[1] == self._drawn[0]:
            return False
        view.view_program.vert["size"] = self._size * view.transforms.pixel_scale
        return None


class StepLinesVisual(_StepVisual):
    """GL_LINES: every segment its own two vertices (colour per vertex), both with the
    segment's step window, so a segment is shown or dropped whole."""

    _WIDTHS = {"a_position": 3, "a_color": 4, "a_window": 2}

    def __init__(self) -> None:
        super().__init__(_LINES_VERT, _LINES_FRAG, "lines")
        self.freeze()

    def set_data(self, pos: np.ndarray, colors: np.ndarray, windows: np.ndarray) -> None:
        """Segments from ``pos[2k]`` to ``pos[2k + 1]``; ``colors`` and ``windows`` per vertex."""
        self._upload(pos, colors, windows)

    def _prepare_draw(self, view) -> bool | None:
        return False if self._drawn[1] == self._drawn[0] else None


StepPoints = scene.visuals.create_visual_node(StepPointsVisual)
StepLines = scene.visuals.create_visual_node(StepLinesVisual)
