"""Picking: which drawn flow is under a point of the canvas.

Why numpy and not GL picking (a colour-id render pass): on the build machines OpenGL is
software (llvmpipe), and an extra full-scene pass per click would cost as much as a frame. The
drawn points are few (the display budget: ~1,000 flows, their heads and trajectory vertices),
so projecting all of them with the scene's 4×4 transform and taking the nearest on screen is
one matrix product and one argmin — no Python per flow — and it runs only on a click.

Heads are preferred to trajectory vertices: a click within the radius of a head picks that
head even if a trajectory passes closer, because the head is what the user sees as the flow.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: A click picks the nearest drawn point within this many logical pixels, or nothing.
PICK_RADIUS_PX = 8.0


class Transform(Protocol):
    """What is needed of a VisPy transform: ``map`` of [n, 3] points to [n, 4] homogeneous."""

    def map(self, coords: np.ndarray) -> np.ndarray: ...


def project(points: np.ndarray, transform: Transform) -> np.ndarray:
    """[n, 2] canvas pixel positions (x right, y down) of [n, 3] scene points."""
    points = np.asarray(points, np.float32)
    if points.shape[0] == 0:
        return np.zeros((0, 2), np.float64)
    mapped = np.asarray(transform.map(points), np.float64)
    return mapped[:, :2] / mapped[:, 3:4]


def nearest(screen: np.ndarray, at: tuple[float, float], radius: float = PICK_RADIUS_PX) -> int:
    """Index of the point of ``screen`` [n, 2] nearest to ``at`` within ``radius``, else -1."""
    if screen.shape[0] == 0:
        return -1
    d2 = np.sum((screen - np.asarray(at, np.float64)) ** 2, axis=1)
    d2 = np.where(np.isfinite(d2), d2, np.inf)
    best = int(np.argmin(d2))
    return best if d2[best] <= radius * radius else -1


def pick_row(at: tuple[float, float], transform: Transform, *, head_pos: np.ndarray, head_rows: np.ndarray,
             vertex_pos: np.ndarray, vertex_rows: np.ndarray, radius: float = PICK_RADIUS_PX) -> int | None:
    """The flow row under ``at``: the nearest head within ``radius``, else the nearest vertex.

    ``head_pos`` [h, 3] / ``head_rows`` [h] are the drawn heads and the flow row of each;
    ``vertex_pos`` [v, 3] / ``vertex_rows`` [v] the drawn trajectory vertices. Empty arrays
    skip a kind (a hidden layer). None when nothing drawn is within ``radius``.
    """
    hit = nearest(project(head_pos, transform), at, radius)
    if hit >= 0:
        return int(head_rows[hit])
    hit = nearest(project(vertex_pos, transform), at, radius)
    return int(vertex_rows[hit]) if hit >= 0 else None
