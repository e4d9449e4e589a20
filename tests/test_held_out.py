"""The held-out evaluator run during training, and the memorising check on constructed histories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.diagnostics import Evidence, assess
from energy_flow.diagnostics.held_out_checks import judge_memorising
from energy_flow.diagnostics.thresholds import THRESHOLDS
from energy_flow.diagnostics.verdict import Level
from energy_flow.training.held_out import HeldOutEvaluator
from energy_flow.trace.figures import BATCH
from energy_flow.training.metrics import score
from tests.test_simple_predictors import _data, dataset

WINDOW = 120                                       # what the health monitor keeps
FALLING_LOSS = np.linspace(1.0, 0.5, WINDOW)


def _points(values_by_batch: dict[int, float]) -> np.ndarray:
    """A per-batch series of the window: the value at each evaluated batch, NaN elsewhere."""
    out = np.full(WINDOW, np.nan)
    for batch, value in values_by_batch.items():
        out[batch - 1] = value
    return out


#: Evaluations every 10 batches; the last MEMORISING_WINDOW = 60 batches hold six of them.
EVERY_10 = list(range(10, WINDOW + 1, 10))


def _series(values: list[float]) -> np.ndarray:
    return _points(dict(zip(EVERY_10, values)))


PEAKED = [0.30, 0.34, 0.38, 0.40, 0.42, 0.42, 0.41, 0.40, 0.40, 0.39, 0.39, 0.38]   # best at batch 50


def test_held_out_figures_that_stall_while_the_loss_falls_warn() -> None:
    """A constructed memorising run: the loss halves, both held-out figures peaked at batch 50."""
    verdict = judge_memorising(FALLING_LOSS, {BATCH.held_out_cosine.key: _series(PEAKED),
                                              BATCH.held_out_top1.key: _series([v - 0.05 for v in PEAKED])})
    assert verdict.level is Level.WARNING
    assert verdict.value == pytest.approx(-0.01)  # best 0.41 in the window against 0.42 before
    assert "cosine -0.010" in verdict.detail and "top-1 -0.010" in verdict.detail


def test_a_healthy_run_still_improving_on_held_out_is_ok() -> None:
    rising = list(np.linspace(0.30, 0.45, 12))
    verdict = judge_memorising(FALLING_LOSS, {BATCH.held_out_cosine.key: _series(rising),
                                              BATCH.held_out_top1.key: _series(PEAKED)})
    assert verdict.level is Level.OK and verdict.value > 0.01


def test_a_gain_under_the_threshold_warns_and_a_flat_loss_is_a_plateau_not_memorising() -> None:
    warn = THRESHOLDS["memorising"].warn
    flat_top = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    below = judge_memorising(FALLING_LOSS, {BATCH.held_out_top1.key: _series(flat_top[:-1] + [0.3 + warn / 2])})
    above = judge_memorising(FALLING_LOSS, {BATCH.held_out_top1.key: _series(flat_top[:-1] + [0.3 + 2 * warn])})
    assert below.level is Level.WARNING and above.level is Level.OK
    flat = judge_memorising(np.full(WINDOW, 0.5), {BATCH.held_out_top1.key: _series(flat_top)})
    assert flat.level is Level.OK and "not falling" in flat.detail


def test_memorising_cannot_judge_without_enough_points_or_any() -> None:
    sparse = _points({50: 0.3, 100: 0.3, 120: 0.3})       # two points in the window
    assert judge_memorising(FALLING_LOSS, {BATCH.held_out_top1.key: sparse}).level is Level.UNKNOWN
    none = judge_memorising(FALLING_LOSS, {BATCH.held_out_top1.key: np.full(WINDOW, np.nan)})
    assert none.level is Level.UNKNOWN and "no held-out evaluation" in none.detail
    with pytest.raises(ValueError, match="one value per batch"):
        judge_memorising(FALLING_LOSS, {BATCH.held_out_top1.key: [0.1]})


def test_memorising_is_one_of_the_checks_and_reads_the_batch_history() -> None:
    """Through assess, from Evidence built as the monitor builds it: fires on the memorising
    history, not on a healthy one, and cannot judge a history without held-out points."""
    def verdict(cosine: np.ndarray):
        history = {BATCH.loss.key: FALLING_LOSS, BATCH.held_out_cosine.key: cosine,
                   BATCH.held_out_top1.key: np.full(WINDOW, np.nan)}
        return assess(Evidence(telemetry=None, history=history))["memorising"]
    assert verdict(_series(PEAKED)).level is Level.WARNING
    assert verdict(_series(list(np.linspace(0.30, 0.45, 12)))).level is Level.OK
    assert verdict(np.full(WINDOW, np.nan)).level is Level.UNKNOWN
    assert assess(Evidence(telemetry=None))["memorising"].level is Level.UNKNOWN


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
