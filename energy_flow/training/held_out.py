"""A cheap held-out evaluation to run every N batches while training: is the model still learning
what generalises, and where does it stand against the best simple predictor?

The sample is small and fixed (the same pairs every time, so two points differ only by the
model), scored in eval mode with no random draws (the run trains exactly as it would without
it). The best simple predictor per figure is fitted once, on the train pairs only
(:mod:`energy_flow.training.simple_predictors`), and scored on the same sample: the reference
lines a curve of held-out figures is read against. Qt-free: the app's worker, the headless
trainer and a benchmark call it alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from energy_flow.training.data import PairDataset
from energy_flow.training.metrics import bridge_for, score
from energy_flow.training.simple_predictors import Predictor, best_simple, fit_simple_predictors, score_simple

#: Held-out pairs scored per point: 16 forward batches of the debug preset (a sixth of the 100
#: training batches between two points, forward only), and retrieval among 256 targets still
#: separates a top-1 of 0.38 from 0.44 by 15 pairs.
DEFAULT_SAMPLE = 256


@dataclass(frozen=True)
class HeldOutPoint:
    """The model's held-out figures after ``batch`` batches, on the fixed sample."""

    batch: int
    mean_cosine: float
    top1: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class HeldOutEvaluator:
    """Scores a predictor on a fixed held-out sample; holds the best simple references.

    Construct it once per run, off the GUI thread: fitting the simple predictors cross-validates
    150 ridge fits on the train split (5.3 s of CPU at 2,700 pairs of D = 384, one thread,
    measured 2026-12-07 on the shared build machine).
    """

    def __init__(self, train: PairDataset, held_out: PairDataset, sample: int = DEFAULT_SAMPLE,
                 seed: int = 0) -> None:
        if len(held_out) < 2:
            raise ValueError(f"HeldOutEvaluator: the held-out split has {len(held_out)} pair(s); "
                             "retrieval needs at least 2")
        perm = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed + 3))
        self.sample = held_out.subset(perm[: min(sample, len(held_out))].sort().values,
                                      f"held-out sample of {min(sample, len(held_out))}")
        self._bridge = bridge_for(self.sample)
        simple, _ = fit_simple_predictors(train, seed)
        best = best_simple({p.label(): score_simple(p, self.sample, self._bridge) for p in simple})
        #: figure → (value on the sample, the simple predictor that reached it)
        self.references = {f: (best.values[f], best.names[f]) for f in ("mean_cosine", "top1")}

    def __call__(self, predict: Predictor, batch: int) -> HeldOutPoint:
        scores = score(predict(self.sample.inputs), self.sample, self._bridge)
        return HeldOutPoint(batch, scores.mean_cosine, scores.top1)
