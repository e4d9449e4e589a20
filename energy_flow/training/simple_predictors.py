"""The best simple predictor per figure: what a learned embedding map must beat to claim it learned.

A model is only worth its lattice if it beats every predictor a researcher could write in a
line. Four are fitted on the train split alone and scored on the held-out split exactly as the
model is (:func:`energy_flow.training.metrics.score`):

- **mean target**: the mean train target for every input (what a collapsed model returns);
- **identity**: the input embedding itself (strong where inputs and targets are already close —
  on WordNet it out-retrieves least squares);
- **ridge → 0**: least squares with an unshrunk bias, ``W = argmin ‖XW − Y‖² + λ‖W‖²``;
- **ridge → identity**: least squares shrunk toward the identity instead of toward zero,
  ``W = argmin ‖XW − Y‖² + λ‖W − I‖²`` (no bias, so λ → ∞ is the identity exactly and λ → 0 is
  least squares): the identity corrected as far as the data supports.

λ is chosen by k-fold cross-validation on the train split **separately for each figure**
(cosine, top-1, top-5, MRR), because one λ does not serve them all: a strong ridge gives the
best cosine with a poor top-1, a weak one the reverse (benchmarks/linear_frontier.py). Every λ
of a grid costs one matrix product after one eigendecomposition of ``XᵀX`` per fold, so the
whole search is a few seconds at D = 384. The *best simple* figure is then the maximum over the
four predictors on the held-out split, column by column — deliberately generous to the
baselines, so a model that beats it has beaten each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from energy_flow.training.data import PairDataset
from energy_flow.training.metrics import SplitScores, bridge_for, score

Predictor = Callable[[torch.Tensor], torch.Tensor]

#: The figures a best simple predictor is chosen for (fields of :class:`SplitScores`).
FIGURES = ("mean_cosine", "top1", "top5", "mrr")
#: λ from 10⁻³ to 10⁴ in half decades. The eigenvalues of XᵀX for unit-norm 384-d embeddings
#: and a few thousand rows lie around N/D ≈ 1–100, so the grid spans from "data alone" to
#: "prior alone" for both priors.
LAMBDA_GRID = tuple(float(10.0 ** (k / 2)) for k in range(-6, 9))
PRIORS = ("zero", "identity")
ROW_NAMES = {"zero": "ridge → 0", "identity": "ridge → identity"}


class RidgePath:
    """Closed-form ridge fits ``inputs → targets`` toward a prior, for any λ, from one
    eigendecomposition: ``W(λ) = Q diag(1/(Λ+λ)) Qᵀ (XᵀY + λP)`` with ``XᵀX = QΛQᵀ``.

    ``prior="zero"``: P = 0 and an unshrunk bias (the data are centred, the bias restores the
    means). ``prior="identity"``: P = I and no bias, exactly the issue's
    ``argmin ‖XW − Y‖² + λ‖W − I‖²``. Float64 throughout.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, prior: str) -> None:
        if prior not in PRIORS:
            raise ValueError(f"RidgePath: prior must be one of {PRIORS}, got {prior!r}")
        if inputs.ndim != 2 or inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"RidgePath: inputs {tuple(inputs.shape)} and targets "
                             f"{tuple(targets.shape)} need the same number of rows")
        if prior == "identity" and inputs.shape[1] != targets.shape[1]:
            raise ValueError(f"RidgePath: ridge toward the identity needs inputs and targets of one "
                             f"width, got {inputs.shape[1]} and {targets.shape[1]}")
        x, y = inputs.double(), targets.double()
        self.prior = prior
        if prior == "zero":
            self.x_mean, self.y_mean = x.mean(0), y.mean(0)
            x, y = x - self.x_mean, y - self.y_mean
        eigvals, self.q = torch.linalg.eigh(x.T @ x)
        self.eigvals = eigvals.clamp_min(0.0)  # XᵀX is PSD; rounding may dip below zero
        self.qt_xty = self.q.T @ (x.T @ y)
        self.qt_prior = self.q.T if prior == "identity" else None

    def weights(self, lam: float) -> torch.Tensor:
        """``W(λ)``, ``[D_in, D_out]``."""
        if lam < 0:
            raise ValueError(f"RidgePath: λ must be ≥ 0, got {lam}")
        rhs = self.qt_xty if self.qt_prior is None else self.qt_xty + lam * self.qt_prior
        return self.q @ (rhs / (self.eigvals + lam).unsqueeze(1))

    def predictor(self, lam: float) -> Predictor:
        w = self.weights(lam)
        if self.prior == "identity":
            return lambda x: (x.double() @ w).float()
        bias = self.y_mean - self.x_mean @ w
        return lambda x: (x.double() @ w + bias).float()


@dataclass(frozen=True)
class CrossValidation:
    """λ per figure for one prior, from k-fold cross-validation on train rows."""

    prior: str
    grid: tuple[float, ...]
    fold_means: dict[str, tuple[float, ...]]  # figure → mean over folds, per λ of the grid
    chosen: dict[str, float]                  # figure → the λ with the best mean (ties: first)

    def to_dict(self) -> dict:
        return {"prior": self.prior, "grid": list(self.grid), "chosen": self.chosen,
                "fold_means": {k: list(v) for k, v in self.fold_means.items()}}


def cross_validate(train: PairDataset, prior: str, folds: int = 5, seed: int = 0,
                   grid: tuple[float, ...] = LAMBDA_GRID) -> CrossValidation:
    """Score every λ of ``grid`` on each of ``folds`` seeded folds of ``train`` (fitting on the
    others; retrieval among the fold's own targets) and pick, for each figure, the λ whose mean
    over folds is highest."""
    n = len(train)
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"cross_validate: {folds} folds need ≥ 2 folds and ≥ {2 * folds} train "
                         f"pairs, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 11))
    totals = {f: np.zeros(len(grid)) for f in FIGURES}
    for k in range(folds):
        held = perm[k::folds].sort().values
        fit_rows = torch.cat([perm[j::folds] for j in range(folds) if j != k]).sort().values
        path = RidgePath(train.inputs[fit_rows], train.targets[fit_rows], prior)
        fold = train.subset(held, f"fold {k + 1} of {folds}")
        bridge = bridge_for(fold)
        for i, lam in enumerate(grid):
            scores = score(path.predictor(lam)(fold.inputs), fold, bridge)
            for f in FIGURES:
                totals[f][i] += getattr(scores, f)
    means = {f: tuple(float(v) / folds for v in totals[f]) for f in FIGURES}
    chosen = {f: grid[int(np.argmax(means[f]))] for f in FIGURES}
    return CrossValidation(prior, tuple(grid), means, chosen)


@dataclass(frozen=True)
class SimplePredictor:
    """One simple predictor, possibly a different fit per figure (λ chosen for that figure)."""

    name: str
    per_figure: dict[str, Predictor]
    lambdas: dict[str, float] | None = None  # figure → λ (ridge rows only)

    def label(self) -> str:
        if self.lambdas is None:
            return self.name
        lams = "/".join(f"{self.lambdas[f]:.3g}" for f in FIGURES)
        return f"{self.name} (λ {lams} for cos/top-1/top-5/MRR, CV on train)"


def fit_simple_predictors(train: PairDataset, seed: int = 0, folds: int = 5
                          ) -> tuple[list[SimplePredictor], dict[str, CrossValidation]]:
    """The four simple predictors, fitted on ``train`` only, and their cross-validations
    (a :class:`PairDataset` has inputs and targets of one width, so the identity applies)."""
    mean = train.targets.mean(0, keepdim=True)
    constant: Predictor = lambda x: mean.expand(x.shape[0], -1).clone()  # noqa: E731
    same: Predictor = lambda x: x.clone()  # noqa: E731
    predictors = [SimplePredictor("mean target", {f: constant for f in FIGURES}),
                  SimplePredictor("identity (input as output)", {f: same for f in FIGURES})]
    cvs: dict[str, CrossValidation] = {}
    for prior in PRIORS:
        cv = cvs[prior] = cross_validate(train, prior, folds, seed)
        path = RidgePath(train.inputs, train.targets, prior)
        fits = {lam: path.predictor(lam) for lam in set(cv.chosen.values())}
        predictors.append(SimplePredictor(ROW_NAMES[prior], {f: fits[cv.chosen[f]] for f in FIGURES},
                                          dict(cv.chosen)))
    return predictors, cvs


def score_simple(predictor: SimplePredictor, split: PairDataset, bridge=None) -> SplitScores:
    """Each figure from the fit chosen for it; spread from the cosine fit (what it outputs for
    the figure the row is usually read for)."""
    bridge = bridge or bridge_for(split)
    by_fit: dict[int, SplitScores] = {}  # one scoring per distinct fit (keyed by object identity)
    for fn in predictor.per_figure.values():
        if id(fn) not in by_fit:
            by_fit[id(fn)] = score(fn(split.inputs), split, bridge)
    pick = {f: getattr(by_fit[id(predictor.per_figure[f])], f) for f in FIGURES}
    return SplitScores(**pick, spread=by_fit[id(predictor.per_figure["mean_cosine"])].spread)


@dataclass(frozen=True)
class BestSimple:
    """Per figure, the best simple predictor's value on one split and which predictor it was."""

    values: dict[str, float]
    names: dict[str, str]

    def to_dict(self) -> dict:
        return {f: {"value": self.values[f], "predictor": self.names[f]} for f in FIGURES}


def best_simple(rows: dict[str, SplitScores]) -> BestSimple:
    """The column-wise maximum of the simple predictors' scores (ties: the first row)."""
    if not rows:
        raise ValueError("best_simple needs at least one simple predictor's scores")
    values, names = {}, {}
    for f in FIGURES:
        name = max(rows, key=lambda r: getattr(rows[r], f))
        values[f], names[f] = getattr(rows[name], f), name
    return BestSimple(values, names)


def verdicts(model: SplitScores, best: BestSimple) -> dict[str, dict]:
    """For each figure: the model's value, the best simple value, the margin and whether the
    model beats it (strictly)."""
    return {f: {"model": getattr(model, f), "best_simple": best.values[f],
                "best_simple_predictor": best.names[f],
                "margin": getattr(model, f) - best.values[f],
                "beats": getattr(model, f) > best.values[f]} for f in FIGURES}


FIGURE_LABELS = {"mean_cosine": "cosine", "top1": "top-1", "top5": "top-5", "mrr": "MRR"}


def verdict_line(verdict: dict[str, dict]) -> str:
    """One line, every figure: beaten or NOT beaten, by how much, by which simple predictor."""
    parts = []
    for f in FIGURES:
        v = verdict[f]
        state = "beats it" if v["beats"] else "does NOT beat it"
        parts.append(f"{FIGURE_LABELS[f]} {v['model']:.3f} vs {v['best_simple']:.3f} "
                     f"({v['best_simple_predictor'].split(' (')[0]}): {state} ({v['margin']:+.3f})")
    return "; ".join(parts)


def against_best_simple(train: PairDataset, held_out: PairDataset, predict: Predictor,
                        seed: int = 0, folds: int = 5) -> dict:
    """The model's held-out figures next to the best simple predictor's, fitted on ``train``:
    what the headless summary carries. Too few pairs to cross-validate or to rank says so in
    ``cannot_judge`` instead of passing."""
    if len(train) < 2 * folds or len(held_out) < 2:
        return {"cannot_judge": f"{len(train)} train / {len(held_out)} held-out pairs: the simple "
                                f"predictors need ≥ {2 * folds} train and ≥ 2 held-out pairs"}
    simple, cvs = fit_simple_predictors(train, seed, folds)
    bridge = bridge_for(held_out)
    best = best_simple({p.label(): score_simple(p, held_out, bridge) for p in simple})
    model = score(predict(held_out.inputs), held_out, bridge)
    return {"model": model.to_dict(), "best_simple": best.to_dict(), "verdict": verdicts(model, best),
            "lambdas": {prior: cv.chosen for prior, cv in cvs.items()}}
