"""Colours shared by the 3D lattice view and the pyqtgraph panels.

One place decides which colour means what, so the energy colour of a trajectory in the 3D view
matches the energy colour bar, the coverage texture drawn on an output plane matches the
coverage panel's heatmap, and a termination reason has the same colour in the 3D legend and in
any panel. Lookup tables are plain numpy (float32 RGBA in [0, 1]) so both VisPy and pyqtgraph
can use them; the few converters build each library's colormap object from the same table.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from energy_flow.trace.telemetry import REASON_FADED, REASON_LANDED, REASON_TIMED_OUT

#: Our model's energies live in (0, 1]: the default colour range. A batch whose histogram spans
#: more (another model's signed energies or energies above 1) is coloured over its own range,
#: see :func:`energy_range_of`.
ENERGY_RANGE = (0.0, 1.0)
ENERGY_CMAP_NAME = "plasma"
COVERAGE_CMAP_NAME = "inferno"
LUT_SIZE = 256

#: Colour (RGBA, 0–1) and VisPy marker symbol per termination reason, plus spawn points.
REASON_STYLE: dict[int, tuple[str, tuple[float, float, float, float], str]] = {
    REASON_LANDED: ("landed", (0.24, 0.86, 0.52, 1.0), "square"),
    REASON_FADED: ("faded", (0.72, 0.72, 0.76, 1.0), "x"),
    REASON_TIMED_OUT: ("timed out", (1.0, 0.33, 0.33, 1.0), "triangle_up"),
}
SPAWN_COLOR = (0.2, 0.82, 1.0, 1.0)
SPAWN_SYMBOL = "star"

#: Font size of plot titles and legends: panels live in docks a few hundred pixels wide.
TITLE_SIZE = "8pt"

#: Step-line colours of the spawn panel: requested / granted / denied by budget.
SPAWN_SERIES_COLORS = {"requested": (120, 170, 255), "granted": (61, 220, 132), "denied": (255, 90, 90)}

#: Categorical colours for "colour by sample" (cycled when a batch has more samples).
SAMPLE_PALETTE = np.array([
    (0.12, 0.47, 0.71, 1.0), (1.0, 0.5, 0.05, 1.0), (0.17, 0.63, 0.17, 1.0), (0.84, 0.15, 0.16, 1.0),
    (0.58, 0.4, 0.74, 1.0), (0.55, 0.34, 0.29, 1.0), (0.89, 0.47, 0.76, 1.0), (0.5, 0.5, 0.5, 1.0),
    (0.74, 0.74, 0.13, 1.0), (0.09, 0.75, 0.81, 1.0),
], dtype=np.float32)


def lut(name: str, size: int = LUT_SIZE) -> np.ndarray:
    """[size, 4] float32 RGBA lookup table of a named (matplotlib-derived) colormap."""
    table = pg.colormap.get(name).getLookupTable(0.0, 1.0, size, alpha=True)
    return (np.asarray(table, dtype=np.float32) / 255.0).astype(np.float32)


ENERGY_LUT = lut(ENERGY_CMAP_NAME)
COVERAGE_LUT = lut(COVERAGE_CMAP_NAME)


def map_values(values: np.ndarray, table: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Colours of ``values`` (any shape) through ``table`` over the fixed range [lo, hi].

    Values outside the range clamp to the ends; NaN maps to the lowest colour (callers drop
    NaN geometry before colouring, so this only keeps the function total).
    """
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=lo)
    scale = (table.shape[0] - 1) / (hi - lo) if hi > lo else 0.0
    idx = np.clip(((v - lo) * scale).round(), 0, table.shape[0] - 1).astype(np.intp)
    return table[idx]


def energy_range_of(telemetry) -> tuple[float, float]:
    """The colour range of a batch's energies: its histogram's edges (fixed [0, 1] for our
    model; the data's range, widened to [0, 1], for a FlowRecorder batch), so no energy is
    drawn at a clamped colour."""
    edges = telemetry.aggregates.energy_bin_edges
    return (min(float(edges[0]), ENERGY_RANGE[0]), max(float(edges[-1]), ENERGY_RANGE[1]))


def energy_colors(energy: np.ndarray, lo: float = ENERGY_RANGE[0], hi: float = ENERGY_RANGE[1]) -> np.ndarray:
    """RGBA float32 colours of energies over [lo, hi] (default: the fixed energy range)."""
    return map_values(energy, ENERGY_LUT, lo, hi)


def sample_colors(sample_index: np.ndarray) -> np.ndarray:
    """RGBA float32 categorical colour of each flow's batch sample."""
    return SAMPLE_PALETTE[np.asarray(sample_index, dtype=np.intp) % SAMPLE_PALETTE.shape[0]]


#: The unit deposits are coloured in, in the 3D view and the Coverage panel alike: one scale,
#: one label, so the two colour bars read the same numbers for the same cell.
DEPOSIT_LOG_LABEL = "ln(1 + deposit)"


def deposit_level(energy: np.ndarray | float) -> np.ndarray:
    """Deposited energy in :data:`DEPOSIT_LOG_LABEL` units: ln(1 + energy), negatives as 0."""
    return np.log1p(np.maximum(np.asarray(energy, dtype=np.float32), 0.0)).astype(np.float32)


def pg_colormap(table: np.ndarray) -> pg.ColorMap:
    """pyqtgraph ColorMap from one of the lookup tables above."""
    return pg.ColorMap(np.linspace(0.0, 1.0, table.shape[0]), (table * 255).astype(np.ubyte))


def qcolor(rgba: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """0–1 RGBA → 0–255 tuple, the form pyqtgraph pens and brushes accept."""
    return tuple(int(round(c * 255)) for c in rgba)  # type: ignore[return-value]
