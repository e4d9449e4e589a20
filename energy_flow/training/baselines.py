"""Ridge least squares with its strength picked on an inner hold-out of the train rows.

Used where a linear read-out of *any* features is the question (the deposit probe of
``energy_flow.evaluate --probe``, benchmarks/linear_frontier.py). The baselines a model must
beat — mean target, identity, ridge toward zero and toward the identity, λ cross-validated per
figure — are in :mod:`energy_flow.training.simple_predictors`.

The ridge strength is chosen on an inner hold-out of the *train* split (never on the evaluation
split), then the map is refitted on the whole train split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)


def _solve(inputs: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    x = _with_bias(inputs)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    eye[-1, -1] = 0.0  # the bias is not shrunk
    return torch.linalg.solve(x.T @ x + ridge * eye, x.T @ targets.double())


@dataclass(frozen=True)
class RidgeFit:
    predict: Predictor
    ridge: float                 # the chosen regularisation strength
    inner_cosine: dict[float, float]  # mean cosine on the inner hold-out, per strength


def least_squares(inputs: torch.Tensor, targets: torch.Tensor, grid: tuple[float, ...] = RIDGE_GRID,
                  seed: int = 0) -> RidgeFit:
    """Ridge regression ``inputs`` → ``targets`` (any input width) with the strength picked on a
    seeded 10 % hold-out of these train rows, then refitted on all of them."""
    n = inputs.shape[0]
    if n < 10 or targets.shape[0] != n:
        raise ValueError(f"least_squares needs ≥ 10 rows of inputs and targets alike, got {n} and "
                         f"{targets.shape[0]}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    hold, fit_rows = perm[: n // 10], perm[n // 10:]
    scores = {}
    for ridge in grid:
        w = _solve(inputs[fit_rows], targets[fit_rows], ridge)
        pred = (_with_bias(inputs[hold]) @ w).float()
        scores[ridge] = float(F.cosine_similarity(pred, targets[hold], dim=1).mean())
    best = max(scores, key=scores.__getitem__)
    w = _solve(inputs, targets, best)
    return RidgeFit(lambda x: (_with_bias(x) @ w).float(), best, scores)
