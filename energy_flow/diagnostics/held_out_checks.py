"""Memorising: the held-out figures stop improving while the training loss still falls.

The loss says how well the model fits the batches it is trained on; only the held-out figures
say whether that fit generalises. When the loss keeps falling and no held-out figure has set a
new best for a while, the model is learning its training pairs by heart (on WordNet 3,000 the
debug preset's held-out cosine peaks near batch 750 and then falls while the train cosine
rises: docs/BENCHMARKS.md, issue 19).

Held-out points come every ``held_out_every`` batches, not every batch: the history carries the
held-out figures as per-batch series that are NaN on the batches in between
(``BATCH.held_out_cosine``, ``BATCH.held_out_top1``), so the check reads the points and the
loss from the same per-batch history as every other trend check, live, headless and from a
recording alike.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from energy_flow.diagnostics.evidence import Evidence
from energy_flow.diagnostics.thresholds import (LOSS_WINDOW, MEMORISING_LOSS_FALL, MEMORISING_POINTS,
                                                MEMORISING_WINDOW, THRESHOLDS)
from energy_flow.diagnostics.verdict import Level, Verdict
from energy_flow.trace.figures import BATCH

TITLE = "Memorising"
ADVICE = ("The training loss still falls but the held-out figures have set no new best for a while: "
          "the model fits its training pairs, not the task. Stop here (keep the best checkpoint), or "
          "regularise (readout_dropout, weight_decay), or give it more data.")
#: The held-out figures judged, each higher-is-better.
FIGURES = (BATCH.held_out_cosine, BATCH.held_out_top1)
NAMES = {BATCH.held_out_cosine.key: "cosine", BATCH.held_out_top1.key: "top-1"}


def memorising(ev: Evidence) -> Verdict:
    """The check as the health strip runs it, from the batch's history."""
    loss = ev.window(BATCH.loss, len(ev.history.get(BATCH.loss.key, ())))
    held_out = {}
    for f in FIGURES:
        values = ev.window(f, loss.size)
        # a history without the series (a caller that keeps only some) holds no evaluation
        held_out[f.key] = values if values.size == loss.size else np.full(loss.size, np.nan)
    return judge_memorising(loss, held_out)


def _unknown(why: str) -> Verdict:
    return Verdict("memorising", TITLE, Level.UNKNOWN, why, ADVICE)


def judge_memorising(losses: Sequence[float], held_out: Mapping[str, Sequence[float]]) -> Verdict:
    """Judge per-batch series of one run, oldest first, all of one length: the training
    ``losses`` and, per held-out figure (higher is better), its value on the batches it was
    evaluated at and NaN elsewhere.

    Value: the largest gain of any held-out figure over the last ``MEMORISING_WINDOW`` batches
    (its best there minus its best before them). Judged only while the loss falls (the mean of
    the last ``LOSS_WINDOW`` batches at least ``MEMORISING_LOSS_FALL`` below the mean of the
    ``LOSS_WINDOW`` batches before the window); a flat loss with flat held-out figures is a
    plateau, which the loss-trend check reports. Cannot judge with fewer than
    ``MEMORISING_POINTS`` points in the window or none before it.
    """
    loss = np.asarray(losses, dtype=np.float64)
    series = {k: np.asarray(v, dtype=np.float64) for k, v in held_out.items()}
    if not series or any(v.shape != loss.shape for v in series.values()):
        raise ValueError("memorising: every held-out series needs one value per batch of the loss")
    evaluated = np.zeros(loss.shape, dtype=bool)
    for v in series.values():
        evaluated |= np.isfinite(v)
    if not evaluated.any():
        return _unknown("no held-out evaluation in this history (held_out_every = 0, data too small to "
                        "hold pairs out, or a recording from before held-out figures)")
    n = loss.size
    recent = evaluated[max(0, n - MEMORISING_WINDOW):].sum()
    earlier = evaluated[:max(0, n - MEMORISING_WINDOW)].sum()
    if n < MEMORISING_WINDOW + LOSS_WINDOW or recent < MEMORISING_POINTS or earlier < 1:
        return _unknown(f"{int(recent)} held-out point(s) in the last {min(n, MEMORISING_WINDOW)} batches and "
                        f"{int(earlier)} before; the check needs {MEMORISING_POINTS} in the last "
                        f"{MEMORISING_WINDOW} and one before")
    start = n - MEMORISING_WINDOW
    before = loss[start - LOSS_WINDOW:start]
    after = loss[n - LOSS_WINDOW:]
    if not (np.isfinite(before).any() and np.isfinite(after).any()):
        return _unknown(f"the training loss is not recorded around the last {MEMORISING_WINDOW} batches")
    b, a = float(np.nanmean(before)), float(np.nanmean(after))
    fall = (b - a) / abs(b) if b else float("nan")
    gains = {}
    for key, v in series.items():
        old, new = v[:start][np.isfinite(v[:start])], v[start:][np.isfinite(v[start:])]
        if old.size and new.size:
            gains[key] = float(new.max() - old.max())
    if not gains or not np.isfinite(fall):
        return _unknown(f"non-finite loss or held-out values over the last {MEMORISING_WINDOW} batches")
    gain = max(gains.values())
    shown = ", ".join(f"{NAMES.get(k, k)} {g:+.3f}" for k, g in gains.items())
    span = f"the last {MEMORISING_WINDOW} batches"
    if fall < MEMORISING_LOSS_FALL:
        return Verdict("memorising", TITLE, Level.OK, f"training loss not falling over {span} ({fall:+.1%}); "
                       f"held-out best gains {shown}", ADVICE, gain)
    level = THRESHOLDS["memorising"].level(gain)
    return Verdict("memorising", TITLE, level, f"over {span} the training loss fell {fall:.1%}; held-out "
                   f"gains over the earlier best: {shown}", ADVICE, gain)
