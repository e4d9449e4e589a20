"""Telemetry measured inside the step (still fraction, saturation, per-step plane deposits) and
the training signals of a real train_step (update ratios, weight norms, spreads), each checked
against values computed independently of the code that measures them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.trace import SATURATION_NAMES, STILL_EPSILON
from energy_flow.training.trainer import MODULES, EnergyTrainer, build_model
from tests.conftest import unit_rows


def _processor(config, seed: int = 0) -> FlowProcessor:
    torch.manual_seed(seed)
    return FlowProcessor(EnergyLattice(config), SimpleNeuron(config), config)


def _inputs(config, seed: int = 0) -> torch.Tensor:
    return unit_rows(config.batch_size, config.teacher_dim, seed)


def _mixed_motion_processor(config) -> FlowProcessor:
    """Flows run into the x = +1 wall (Δx = 0.4·tanh(5)) and then only move by a small Δz that
    follows the cell's part: against the wall some flows move, some do not, although the head
    still asks every one of them for a large Δx."""
    p = _processor(config)
    h = config.carrier_hidden_size
    with torch.no_grad():
        d = p.carrier.displacement_head
        d.weight.zero_()
        d.bias.zero_()
        d.weight[2, h] = 0.01
        d.bias[0] = 5.0
    return p


def test_still_fraction_matches_the_traced_trajectories():
    """Guards against measuring motion on the wrong flows or the wrong displacement (e.g. the
    unclamped head output, or flows born at the step): recomputed from the sampled positions."""
    config = create_tiny_config()
    with torch.no_grad():
        tel = _mixed_motion_processor(config)(_inputs(config)).telemetry
    flows = tel.flows
    assert flows.num_flows == tel.total_flows, "the sample must hold every flow for this check"
    still = tel.aggregates.still_fraction
    assert still.shape == (tel.num_steps + 1,) and still.dtype == np.float32 and np.isnan(still[0])
    for t in range(1, tel.num_steps + 1):
        stepped = (flows.birth_step < t) & (flows.end_step >= t)
        move = flows.positions[stepped, t] - flows.positions[stepped, t - 1]
        expected = float((np.abs(move).max(axis=1) < STILL_EPSILON).mean()) if stepped.any() else math.nan
        assert still[t] == pytest.approx(expected, abs=1e-6, nan_ok=True), t
    assert ((still[1:] > 0) & (still[1:] < 1)).any(), "the constructed run must mix moving and still flows"


def test_plane_energy_steps_accumulate_to_plane_energy():
    """Guards against per-step deposits that are not cumulative, miss a step, or disagree with
    the batch's plane image (the coverage heatmaps follow the step slider through them)."""
    config = create_tiny_config()
    with torch.no_grad():
        tel = _processor(config)(_inputs(config)).telemetry
    steps = tel.plane_energy_steps
    assert steps.shape == (tel.num_steps + 1, *tel.plane_energy.shape) and steps.dtype == np.float32
    assert np.array_equal(steps[-1], tel.plane_energy)
    assert np.all(steps[0] == 0) and np.all(np.diff(steps, axis=0) >= 0)
    # the per-plane totals are the deposited_energy aggregate, step by step
    np.testing.assert_allclose(steps.sum(axis=(2, 3)), tel.aggregates.deposited_energy, rtol=1e-5, atol=1e-6)
    assert steps[-1].sum() > 0


def _constant_heads(config, pinned: bool) -> FlowProcessor:
    """Every weight zero; biases either huge (every head output at its limit) or zero (none).

    With zero weights every flow's heads and GRU state are set by the biases alone, so the
    saturated shares are exactly 1 or 0, known without running the model.
    """
    p = _processor(config)
    big = 50.0 if pinned else 0.0
    with torch.no_grad():
        for param in p.carrier.parameters():
            param.zero_()
        p.carrier.energy_head.bias[0] = big            # retention sigmoid → 1
        p.carrier.spawn_head.bias[0] = -big            # spawn sigmoid → 0 (no children)
        p.carrier.displacement_head.bias[:] = big      # tanh → 1 on every axis
        h = config.carrier_hidden_size
        for layer in range(config.carrier_num_layers):
            bias = getattr(p.carrier.gru, f"bias_ih_l{layer}")
            bias[h:2 * h] = -big                       # update gate z → 0: h' = n
            bias[2 * h:] = big                         # candidate n = tanh(big) → 1
    return p


@pytest.mark.parametrize("pinned", [True, False])
def test_saturation_is_one_for_pinned_heads_and_zero_for_centred_ones(pinned):
    """Guards against a saturation measure that looks at the wrong activation or margin: with
    every head output forced to its limit each share is 1 (payload stays at tanh(0) = 0), with
    every output centred each share is 0."""
    config = create_tiny_config()
    with torch.no_grad():
        tel = _constant_heads(config, pinned)(_inputs(config)).telemetry
    sat = tel.aggregates.saturation
    assert sat.shape == (tel.num_steps + 1, len(SATURATION_NAMES)) and np.isnan(sat[0]).all()
    assert tel.num_steps >= 1
    expected = {"retention": 1.0, "spawn": 1.0, "displacement": 1.0, "payload": 0.0, "hidden": 1.0}
    if not pinned:
        expected = dict.fromkeys(SATURATION_NAMES, 0.0)
    for t in range(1, tel.num_steps + 1):
        assert dict(zip(SATURATION_NAMES, sat[t].tolist())) == expected, t


def test_saturation_of_a_retention_bias_alone_pins_only_retention():
    """Guards against columns leaking into each other: only energy_head.bias[0] = 50 on the
    default model pins retention completely; the untouched spawn head stays unpinned."""
    config = create_tiny_config()
    p = _processor(config)
    with torch.no_grad():
        p.carrier.energy_head.bias[0] = 50.0
        p.carrier.spawn_head.weight.zero_()
        tel = p(_inputs(config)).telemetry
    sat = tel.aggregates.saturation
    assert np.all(sat[1:, SATURATION_NAMES.index("retention")] == 1.0)
    assert np.all(sat[1:, SATURATION_NAMES.index("spawn")] == 0.0)
    assert np.all((sat[1:] >= 0) & (sat[1:] <= 1))


# ---------------------------------------------------------------------------------- train step
def _spread(rows: np.ndarray) -> float:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    cos = unit @ unit.T
    b = rows.shape[0]
    return 1.0 - float(cos[~np.eye(b, dtype=bool)].mean())


def _module_vectors(trainer: EnergyTrainer) -> dict[str, np.ndarray]:
    return {m: np.concatenate([p.detach().double().reshape(-1).numpy()
                               for p in getattr(trainer.processor, m).parameters()]) for m in MODULES}


def test_update_ratios_weight_norms_and_spreads_of_a_real_step():
    """Guards against update ratios taken against the wrong weights (after instead of before),
    norms over the wrong modules, and spreads that include each row's cosine with itself."""
    config = create_tiny_config()
    trainer = EnergyTrainer(build_model(config), config)
    inputs, targets = unit_rows(4, config.teacher_dim, 1), unit_rows(4, config.teacher_dim, 2)
    before = _module_vectors(trainer)
    report = trainer.train_step((inputs, targets))
    after = _module_vectors(trainer)
    assert not report.skipped and report.grad_clip == config.grad_clip
    for m in MODULES:
        ratio = np.linalg.norm(after[m] - before[m]) / np.linalg.norm(before[m])
        assert report.update_ratios[m] == pytest.approx(ratio, rel=1e-6), m
        assert report.weight_norms[m] == pytest.approx(np.linalg.norm(after[m]), rel=1e-9), m
        assert report.update_ratios[m] > 0
    assert report.output_spread == pytest.approx(_spread(report.outputs.astype(np.float64)), abs=1e-6)
    assert report.target_spread == pytest.approx(_spread(targets.double().numpy()), abs=1e-9)


def test_skipped_step_has_nan_update_ratios_and_unchanged_weights(pairs8):
    """Guards against an update ratio (e.g. 0) reported for a step that never updated."""
    config = create_tiny_config()
    trainer = EnergyTrainer(build_model(config), config)
    inputs, targets = pairs8
    before = _module_vectors(trainer)
    report = trainer.train_step((inputs, targets * float("nan")))
    assert report.skipped
    assert all(math.isnan(v) for v in report.update_ratios.values())
    for m in MODULES:
        assert report.weight_norms[m] == pytest.approx(np.linalg.norm(before[m]), rel=1e-9)


def test_spread_of_one_row_is_nan_and_of_identical_rows_zero():
    """Guards against a spread that divides by zero or calls a single sample 'collapsed'."""
    from energy_flow.training.trainer import embedding_spread
    assert math.isnan(float(embedding_spread(torch.ones(1, 5))))
    assert float(embedding_spread(torch.ones(3, 5))) == pytest.approx(0.0, abs=1e-12)
    rows = F.normalize(torch.randn(6, 7, generator=torch.Generator().manual_seed(3)), dim=1)
    assert float(embedding_spread(rows)) == pytest.approx(_spread(rows.double().numpy()), abs=1e-12)
