"""Merging the parts of one batch — micro-batches and DDP ranks — one declared rule per figure.

Each part is a step table ``{key: [T_i + 1, *trailing]}`` of one forward pass. Parts may run a
different number of propagation steps; each is first padded to the longest by its figures'
:class:`~energy_flow.trace.figures.declarations.Pad`, then merged by their
:class:`~energy_flow.trace.figures.declarations.Merge`. Every figure of the merged table is
the whole batch's: none is taken from one part while another comes from all of them.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from energy_flow.trace.figures.declarations import STEP, Merge, Pad, StepFigure


def step_weights(active: np.ndarray) -> np.ndarray:
    """[T+1] flows stepped at each step, from the ``active`` series: every flow alive after step
    t − 1 is stepped at step t (row 0: the flows placed, which the placement row describes)."""
    active = np.asarray(active, dtype=np.float64)
    return np.concatenate([active[:1], active[:-1]])


def _pad(values: np.ndarray, rows: int, pad: Pad) -> np.ndarray:
    have = values.shape[0]
    if have >= rows:
        return values
    if pad is Pad.HOLD:
        tail = np.repeat(values[-1:], rows - have, axis=0)
    elif pad is Pad.NAN:
        tail = np.full((rows - have, *values.shape[1:]), np.nan, dtype=np.float64)
    else:
        tail = np.zeros((rows - have, *values.shape[1:]), dtype=values.dtype)
    return np.concatenate([values.astype(np.float64) if pad is Pad.NAN else values, tail])


def _weighted(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ w·x / Σ w over the parts axis, ignoring NaN values (and their weights)."""
    w = np.broadcast_to(weights.reshape(weights.shape + (1,) * (stack.ndim - weights.ndim)), stack.shape)
    finite = np.isfinite(stack)
    num = np.where(finite, stack * w, 0.0).sum(axis=0)
    den = np.where(finite, w, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def merge_figure(figure: StepFigure, parts: Sequence[np.ndarray], samples: Sequence[int],
                 stepped: np.ndarray) -> np.ndarray:
    """One figure of the batch from its padded parts (``stepped``: [parts, T+1] flow weights)."""
    dtype = np.dtype(figure.dtype)
    if len(parts) == 1:
        return np.asarray(parts[0]).astype(dtype)
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in parts])
    rule = figure.merge
    if rule is Merge.SUM:
        out = stack.sum(axis=0)
    elif rule in (Merge.MIN, Merge.MAX):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows stay NaN
            out = np.nanmin(stack, axis=0) if rule is Merge.MIN else np.nanmax(stack, axis=0)
    elif rule is Merge.SAMPLE_MEAN:
        out = _weighted(stack, np.broadcast_to(np.asarray(samples, np.float64)[:, None], stepped.shape))
    elif rule is Merge.FLOW_MEAN:
        out = _weighted(stack, stepped)
    elif rule is Merge.WHOLE:
        out = stack[0]
    elif rule is Merge.POOLED:
        raise ValueError(f"figure {figure.key!r} is recomputed from the parts' pooled values "
                         "(merge_traces), not merged from their figures")
    else:  # pragma: no cover - every Merge member is handled above
        raise ValueError(f"figure {figure.key!r}: unknown merge rule {rule}")
    return np.rint(out).astype(dtype) if dtype.kind in "iu" else out.astype(dtype)


def merge_tables(parts: Sequence[Mapping[str, np.ndarray]], samples: Sequence[int],
                 figures: Iterable[StepFigure] | None = None) -> dict[str, np.ndarray]:
    """The batch's step table from its parts' (``samples``: each part's sample count).

    ``figures`` defaults to every declared figure present in the first part but the pooled
    ones (recomputed from values by ``merge_traces``); a figure missing
    from some part (not measured there) is an error, never silently one part's value.
    """
    if not parts:
        raise ValueError("merge_tables: no parts")
    if len(parts) != len(samples):
        raise ValueError(f"merge_tables: {len(parts)} parts but {len(samples)} sample counts")
    figures = tuple(figures) if figures is not None else tuple(
        f for f in STEP if f.key in parts[0] and f.merge is not Merge.POOLED)
    rows = max(int(np.asarray(p[STEP.active.key]).shape[0]) for p in parts)
    padded_active = [_pad(np.asarray(p[STEP.active.key]), rows, STEP.active.pad) for p in parts]
    stepped = np.stack([step_weights(a) for a in padded_active])
    out = {}
    for f in figures:
        missing = [i for i, p in enumerate(parts) if p.get(f.key) is None]
        if missing and len(missing) < len(parts):
            raise ValueError(f"figure {f.key!r} is missing from part(s) {missing} of the batch")
        if missing:
            out[f.key] = None
            continue
        out[f.key] = merge_figure(f, [_pad(np.asarray(p[f.key]), rows, f.pad) for p in parts], samples, stepped)
    return out
