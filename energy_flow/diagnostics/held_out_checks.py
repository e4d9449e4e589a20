"""Memorising: the held-out figures stop improving while the training loss still falls.

The loss says how well the model fits the batches it is trained on; only the held-out figures
say whether that fit generalises. When the loss keeps falling and no held-out figure has set a
new best for several evaluations, the model is learning its training pairs by heart (on WordNet
3,000 the debug preset's held-out cosine peaks near batch 750 and then falls while the train
cosine rises: docs/BENCHMARKS.md, issue 19). Held-out points come every N batches, not every
batch, so this check reads them as (batch, value) pairs rather than from the per-batch history.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from energy_flow.diagnostics.thresholds import (LOSS_WINDOW, MEMORISING_LOSS_FALL, MEMORISING_POINTS,
                                                THRESHOLDS)
from energy_flow.diagnostics.verdict import Level, Verdict

TITLE = "Memorising"
ADVICE = ("The training loss still falls but the held-out figures have not improved for several "
          "evaluations: the model fits its training pairs, not the task. Stop here (keep the best "
          "checkpoint), or regularise (readout_dropout, weight_decay), or give it more data.")


def memorising(batches: Sequence[int], held_out: Mapping[str, Sequence[float]], losses: Sequence[float]) -> Verdict:
    """Judge held-out points taken after ``batches`` (1-based batch counts, increasing), one
    series per figure in ``held_out`` (higher is better), against the per-batch training
    ``losses`` (``losses[i]`` is batch i + 1's).

    Value: the largest gain of any held-out figure in the last ``MEMORISING_POINTS`` points over
    its best before them. Judged only while the loss falls (windowed mean down by at least
    ``MEMORISING_LOSS_FALL`` over those points); a flat loss with flat held-out figures is a
    plateau, which the loss-trend check reports.
    """
    b = np.asarray(batches, dtype=np.int64)
    series = {k: np.asarray(v, dtype=np.float64) for k, v in held_out.items()}
    loss = np.asarray(losses, dtype=np.float64)
    if not series or any(v.shape != b.shape for v in series.values()):
        raise ValueError("memorising: every held-out series needs one value per batch in `batches`")
    if b.size < MEMORISING_POINTS + 1:
        return Verdict("memorising", TITLE, Level.UNKNOWN,
                       f"{b.size} held-out point(s); the check needs {MEMORISING_POINTS + 1}", ADVICE)
    first = int(b[-MEMORISING_POINTS])
    if first - LOSS_WINDOW < 0 or int(b[-1]) > loss.size:
        return Verdict("memorising", TITLE, Level.UNKNOWN,
                       f"the training loss is not recorded from batch {max(first - LOSS_WINDOW, 0) + 1} "
                       f"to {int(b[-1])}", ADVICE)
    before = float(np.nanmean(loss[first - LOSS_WINDOW:first]))
    after = float(np.nanmean(loss[int(b[-1]) - LOSS_WINDOW:int(b[-1])]))
    fall = (before - after) / abs(before) if before else float("nan")
    gains = {k: float(v[-MEMORISING_POINTS:].max() - v[:-MEMORISING_POINTS].max()) for k, v in series.items()}
    gain = max(gains.values())
    span = f"batches {first}–{int(b[-1])}"
    shown = ", ".join(f"{k} {g:+.3f}" for k, g in gains.items())
    if not np.isfinite(fall) or not np.isfinite(gain):
        return Verdict("memorising", TITLE, Level.UNKNOWN, f"non-finite loss or held-out values over {span}",
                       ADVICE)
    if fall < MEMORISING_LOSS_FALL:
        return Verdict("memorising", TITLE, Level.OK, f"training loss not falling over {span} ({fall:+.1%}); "
                       f"held-out best gains {shown}", ADVICE, gain)
    level = THRESHOLDS["memorising"].level(gain)
    return Verdict("memorising", TITLE, level, f"over {span} the training loss fell {fall:.1%}; held-out "
                   f"gains over the earlier best: {shown}", ADVICE, gain)
