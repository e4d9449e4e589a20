"""Lineage highlighting: the selected flow's family drawn as is, every other flow dimmed.

An appearance change, not a data rebuild: the drawn vertices and heads keep their positions
and colours; only the alpha of the flows outside the lineage is scaled down, in a copy of the
colour array that is uploaded in place of the original (one buffer upload, no geometry work).
"""

from __future__ import annotations

import numpy as np

#: Alpha of flows outside the selected lineage, as a share of their normal alpha: faint enough
#: that a family of a few flows stands out among a thousand, visible enough to keep the context.
DIM_ALPHA = 0.12


def dimmed_opaque(colors: np.ndarray, keep: np.ndarray, background: tuple[float, float, float],
                  factor: float = DIM_ALPHA) -> np.ndarray:
    """Copy of ``colors`` with rows not in ``keep`` mixed toward ``background`` (alpha kept).

    For the point sprites: they write depth, so a translucent point would punch a dark hole
    in the planes drawn after it; an opaque colour close to the background dims without that.
    """
    out = np.array(colors, dtype=np.float32, copy=True)
    if out.shape[0]:
        off = ~np.asarray(keep, bool)
        out[off, :3] = factor * out[off, :3] + (1.0 - factor) * np.asarray(background, np.float32)
    return out


def dimmed(colors: np.ndarray, keep: np.ndarray, factor: float = DIM_ALPHA) -> np.ndarray:
    """Copy of ``colors`` [n, 4] with the alpha of rows not in ``keep`` [n] scaled by ``factor``."""
    out = np.array(colors, dtype=np.float32, copy=True)
    if out.shape[0]:
        out[~np.asarray(keep, bool), 3] *= factor
    return out
