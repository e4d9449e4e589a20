"""The held-out evaluator run during training, and the memorising check on constructed histories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.diagnostics.held_out_checks import memorising
from energy_flow.diagnostics.thresholds import THRESHOLDS
from energy_flow.diagnostics.verdict import Level
from energy_flow.training.held_out import HeldOutEvaluator
from energy_flow.training.metrics import score
from tests.test_simple_predictors import _data, dataset

BATCHES = [150, 300, 450, 600, 750, 900]
FALLING_LOSS = np.linspace(1.0, 0.5, 900)


def test_held_out_figures_that_stall_while_the_loss_falls_warn() -> None:
    """A constructed memorising run: the loss halves, the held-out figures peak at batch 450."""
    verdict = memorising(BATCHES, {"mean_cosine": [0.30, 0.38, 0.42, 0.41, 0.40, 0.39],
                                   "top1": [0.30, 0.35, 0.38, 0.37, 0.36, 0.36]}, FALLING_LOSS)
    assert verdict.level is Level.WARNING
    assert verdict.value == pytest.approx(-0.01)  # top-1's 0.37 against its best 0.38
    assert "mean_cosine -0.010" in verdict.detail and "top1 -0.010" in verdict.detail


def test_one_figure_still_improving_is_not_memorising() -> None:
    verdict = memorising(BATCHES, {"mean_cosine": [0.30, 0.38, 0.42, 0.41, 0.40, 0.39],
                                   "top1": [0.30, 0.35, 0.38, 0.37, 0.36, 0.39]}, FALLING_LOSS)
    assert verdict.level is Level.OK and verdict.value == pytest.approx(0.01)


def test_a_gain_under_the_threshold_warns_and_a_flat_loss_is_a_plateau_not_memorising() -> None:
    warn = THRESHOLDS["memorising"].warn
    below = memorising(BATCHES, {"top1": [0.1, 0.2, 0.3, 0.3 + warn / 2, 0.3, 0.3]}, FALLING_LOSS)
    above = memorising(BATCHES, {"top1": [0.1, 0.2, 0.3, 0.3 + 2 * warn, 0.3, 0.3]}, FALLING_LOSS)
    assert below.level is Level.WARNING and above.level is Level.OK
    flat = memorising(BATCHES, {"top1": [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]}, np.full(900, 0.5))
    assert flat.level is Level.OK and "not falling" in flat.detail


def test_memorising_cannot_judge_without_enough_points_or_loss() -> None:
    assert memorising(BATCHES[:3], {"top1": [0.1, 0.2, 0.3]}, FALLING_LOSS).level is Level.UNKNOWN
    short = memorising(BATCHES, {"top1": [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]}, FALLING_LOSS[:600])
    assert short.level is Level.UNKNOWN and "not recorded" in short.detail
    with pytest.raises(ValueError, match="one value per batch"):
        memorising(BATCHES, {"top1": [0.1]}, FALLING_LOSS)


def test_the_evaluator_scores_a_fixed_sample_against_the_best_simple_references() -> None:
    x, y = _data(n=400)
    train, held_out = dataset(x[:300], y[:300]), dataset(x[300:], y[300:])
    evaluator = HeldOutEvaluator(train, held_out, sample=64, seed=2)
    assert len(evaluator.sample) == 64
    same = evaluator(lambda inputs: inputs.clone(), batch=7)
    again = evaluator(lambda inputs: inputs.clone(), batch=8)
    direct = score(evaluator.sample.inputs, evaluator.sample)  # the identity on that sample
    assert (same.batch, again.batch) == (7, 8)
    assert same.top1 == again.top1 == direct.top1 and same.mean_cosine == pytest.approx(direct.mean_cosine)
    # the references are the best of the simple predictors, the identity among them
    assert evaluator.references["top1"][0] >= direct.top1
    assert evaluator.references["mean_cosine"][0] >= direct.mean_cosine
    rng = torch.get_rng_state()
    evaluator(lambda inputs: inputs.clone(), batch=9)
    assert torch.equal(rng, torch.get_rng_state())  # scoring draws no random numbers
