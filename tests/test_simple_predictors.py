"""The best simple predictor per figure: closed forms, cross-validation per figure, the best row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from energy_flow.training.metrics import SplitScores, score
from energy_flow.training.simple_predictors import (FIGURES, RidgePath, against_best_simple, best_simple,
                                                    cross_validate,
                                                    fit_simple_predictors, score_simple, verdicts)
from tests.test_evaluate import dataset


def _data(n: int = 300, d: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets sharing one strong common direction plus a noisy linear image of the input: the
    cosine profits from shrinking toward the mean, retrieval from keeping the signal, so the two
    figures want different λ."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g), dim=1)
    common = F.normalize(torch.randn(1, d, generator=g), dim=1)
    y = 2.0 * common + 0.3 * x @ torch.randn(d, d, generator=g) + 0.6 * torch.randn(n, d, generator=g) / d ** 0.5
    return x, y


def test_ridge_toward_the_identity_is_the_identity_at_infinite_lambda_and_least_squares_at_zero() -> None:
    x, y = _data(d=12)
    path = RidgePath(x, y, "identity")
    torch.testing.assert_close(path.weights(1e12), torch.eye(12, dtype=torch.float64), atol=1e-8, rtol=0)
    lstsq = torch.linalg.lstsq(x.double(), y.double()).solution  # no bias: the formula
    torch.testing.assert_close(path.weights(1e-12), lstsq, atol=1e-7, rtol=1e-7)
    # an intermediate λ solves the normal equations (XᵀX + λI) W = XᵀY + λI
    lam, xd = 3.0, x.double()
    direct = torch.linalg.solve(xd.T @ xd + lam * torch.eye(12, dtype=torch.float64),
                                xd.T @ y.double() + lam * torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(path.weights(lam), direct)
    torch.testing.assert_close(path.predictor(1e12)(x[:5]), x[:5], atol=1e-6, rtol=0)


def test_ridge_toward_zero_keeps_an_unshrunk_bias() -> None:
    """λ → 0 is least squares with a bias; λ → ∞ leaves only the bias: the mean target."""
    x, y = _data(d=12)
    path = RidgePath(x, y, "zero")
    xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    wb = torch.linalg.lstsq(xb, y.double()).solution
    torch.testing.assert_close(path.predictor(1e-12)(x[:7]).double(), xb[:7] @ wb, atol=1e-5, rtol=0)
    torch.testing.assert_close(path.predictor(1e12)(x[:3]), y.mean(0).expand(3, -1), atol=1e-6, rtol=0)


def test_cross_validation_picks_lambda_for_each_figure_separately() -> None:
    """Guards against one λ (the cosine's) serving every figure: on these data cosine wants
    more shrinkage than top-1, and each figure's choice is the best of its own fold means."""
    x, y = _data()
    for prior in ("zero", "identity"):
        cv = cross_validate(dataset(x, y), prior)
        for f in FIGURES:
            means = cv.fold_means[f]
            assert cv.chosen[f] == cv.grid[max(range(len(means)), key=means.__getitem__)]
        assert cv.chosen["mean_cosine"] > cv.chosen["top5"], prior
    with pytest.raises(ValueError, match="folds"):
        cross_validate(dataset(x[:6], y[:6]), "zero")


def test_each_figure_of_a_simple_row_comes_from_the_fit_chosen_for_it() -> None:
    x, y = _data()
    train, val = dataset(x[:250], y[:250]), dataset(x[250:], y[250:])
    predictors, cvs = fit_simple_predictors(train)
    assert [p.name for p in predictors] == ["mean target", "identity (input as output)", "ridge → 0",
                                            "ridge → identity"]
    ridge0 = predictors[2]
    row = score_simple(ridge0, val)
    for f in FIGURES:
        assert ridge0.lambdas[f] == cvs["zero"].chosen[f]
        alone = score(RidgePath(train.inputs, train.targets, "zero").predictor(ridge0.lambdas[f])(val.inputs), val)
        assert getattr(row, f) == pytest.approx(getattr(alone, f), abs=1e-6)


def _scores(c: float, t1: float, t5: float, m: float) -> SplitScores:
    return SplitScores(mean_cosine=c, top1=t1, top5=t5, mrr=m, spread=0.5)


def test_the_best_simple_row_is_the_maximum_of_each_column_and_the_verdict_says_where_it_loses() -> None:
    rows = {"a": _scores(0.4, 0.1, 0.3, 0.2), "b": _scores(0.3, 0.5, 0.6, 0.55), "c": _scores(0.45, 0.2, 0.7, 0.3)}
    best = best_simple(rows)
    assert best.values == {"mean_cosine": 0.45, "top1": 0.5, "top5": 0.7, "mrr": 0.55}
    assert best.names == {"mean_cosine": "c", "top1": "b", "top5": "c", "mrr": "b"}
    v = verdicts(_scores(0.5, 0.5, 0.2, 0.6), best)
    assert [v[f]["beats"] for f in FIGURES] == [True, False, False, True]  # a tie does not beat
    assert v["top5"]["margin"] == pytest.approx(-0.5)


def test_against_best_simple_scores_the_model_and_says_when_it_cannot_judge() -> None:
    x, y = _data()
    train, val = dataset(x[:250], y[:250]), dataset(x[250:], y[250:])
    perfect = against_best_simple(train, val, lambda inputs: y[250:].clone())  # a model that knows
    assert perfect["verdict"]["mean_cosine"]["beats"]
    assert all(v["beats"] == (v["best_simple"] < 1.0) for f, v in perfect["verdict"].items() if f != "mean_cosine")
    assert perfect["model"]["top1"] == 1.0
    same = against_best_simple(train, val, lambda inputs: inputs.clone())  # the identity itself
    assert not same["verdict"]["top1"]["beats"]  # equal to a simple predictor is not beating it
    few = against_best_simple(dataset(x[:6], y[:6]), val, lambda inputs: inputs)
    assert "verdict" not in few and "≥ 10 train" in few["cannot_judge"]
