"""How the 3D view looks: its colours, point sizes and symbols, and the names of its layers.

One module so the scene, the overlay's legend and the selection marker agree (the legend
draws each kind with the colour and symbol the scene uses), and a change of look is made in
one place.
"""

from __future__ import annotations

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
#: The selected flow's ring: white (no colour map or palette of the view uses it), drawn over
#: everything at three head sizes, so it stays visible inside a dense cloud of heads.
MARKER_COLOR = (1.0, 1.0, 1.0, 1.0)
MARKER_SIZE = 3.2 * HEAD_SIZE
#: Symbol codes of the points visual (names as in app.colormaps, plus the selection ring).
SYMBOL_CODES = {"disc": 0, "square": 1, "triangle_up": 2, "x": 3, "star": 4, "ring": 5}
LAYERS = ("box", "planes", "coverage", "trajectories", "heads", "spawns", "terminations")
COLOR_MODES = ("energy", "sample")
