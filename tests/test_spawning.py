"""How many children flows ask for (energy_flow/core/spawning.py), and what that keeps alive:
spawning and the spawn head's gradient when every share is below ½ (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from benchmarks.reference_step import mix
from energy_flow.core.spawning import child_keys, placed_keys, requested_children, sample_keys, spawn_dither
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows


def test_the_dither_spreads_any_run_of_keys_evenly_over_the_unit_interval():
    """The placed flows of a sample (one key per cell) and the children of a step must each
    cover [0, 1) evenly, or the share of flows that split would not follow the share."""
    for keys in (placed_keys(torch.tensor([12345]), 400), placed_keys(torch.tensor([0, 99]), 144),
                 child_keys(placed_keys(torch.tensor([5]), 2000), 3, torch.zeros(2000, dtype=torch.long))):
        n = keys.numel()
        for step in (1, 2, 9):
            u = spawn_dither(keys, step).numpy()
            assert u.min() >= 0.0 and u.max() < 1.0
            grid = np.linspace(0, 1, 21)
            below = np.array([(u < x).mean() for x in grid])
            assert np.abs(below - grid).max() < 3.0 / np.sqrt(n), (n, step)


def test_keys_and_dithers_match_the_reference_written_in_python_integers():
    keys = placed_keys(torch.tensor([3, 2**31 - 1]), 6)
    assert keys.tolist() == [mix(s, c) for s in (3, 2**31 - 1) for c in range(6)]
    kids = child_keys(keys, 4, torch.arange(12) % 2)
    assert kids.tolist() == [mix(mix(k, 4), i % 2) for i, k in enumerate(keys.tolist())]
    u = spawn_dither(keys, 7)
    assert u.tolist() == [(mix(k, 7) >> 7) / 2**24 for k in keys.tolist()]
    assert (keys >= 0).all() and (keys < 2**31).all() and (u < 1.0).all()


def test_a_sample_gets_the_same_keys_whatever_batch_it_is_in():
    """What keeps gradient accumulation and torchrun equal to the full batch: a sample's flows
    split the same way alone, in a batch, or in a micro-batch. Different inputs differ."""
    rows = unit_rows(5, seed=3)
    alone = torch.cat([sample_keys(rows[i:i + 1]) for i in range(5)])
    assert torch.equal(sample_keys(rows), alone)
    assert torch.equal(sample_keys(rows[[4, 0, 2]]), alone[[4, 0, 2]])
    assert alone.unique().numel() == 5
    assert (alone >= 0).all() and (alone < 2**31).all()


def test_a_flows_dithers_over_steps_are_spread_too():
    """Draws, not one fixed threshold per flow: a flow that missed at one step may split at the next."""
    key = placed_keys(torch.tensor([42]), 1)
    per_step = torch.cat([spawn_dither(key, s) for s in range(1, 401)])
    assert abs(per_step.mean().item() - 0.5) < 0.05 and (per_step < 0.1).any() and (per_step > 0.9).any()


@pytest.mark.parametrize("share,k", [(0.1, 1), (0.3, 1), (0.5, 1), (0.9, 1), (0.4, 3), (0.8, 2)])
def test_children_asked_for_follow_the_share_on_average(share, k):
    n = 4000
    keys = placed_keys(torch.tensor([77]), n)
    want = requested_children(torch.full((n,), share), torch.ones(n, dtype=torch.bool), keys, 2, k)
    assert want.min() >= 0 and want.max() <= k
    assert abs(want.float().mean().item() - share * k) < 0.01
    # a flow asks for ⌊share·k⌋ or one more, never anything else
    assert set(want.unique().tolist()) <= {int(share * k), int(share * k) + 1}


def test_ineligible_flows_and_nan_shares_ask_for_nothing():
    n = 100
    eligible = torch.arange(n) % 2 == 0
    share = torch.full((n,), 0.99)
    share[::4] = float("nan")
    want = requested_children(share, eligible, placed_keys(torch.tensor([1]), n), 1, 2)
    assert (want[~eligible] == 0).all()
    assert (want[::4] == 0).all()
    assert (want[2::4] >= 1).all()


def test_spawning_and_the_spawn_heads_gradient_survive_shares_below_one_half(pairs8):
    """The failure of issue 19: once training moved every flow's share below ½, the threshold
    rule asked for no child at all and ``carrier.spawn_head`` got no gradient, batch after
    batch. With shares fixed at 0.27 for every flow, flows must still split — about a quarter
    of the eligible flows at each step — and the spawn head must get a gradient."""
    c = create_tiny_config(batch_size=8, max_active_flows=800, device="cpu")
    trainer = EnergyTrainer(build_model(c), c)
    head = trainer.processor.carrier.spawn_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1.0)  # sigmoid(−1) ≈ 0.27 for every flow
    report = trainer.train_step(pairs8)
    agg = report.telemetry.aggregates
    assert report.flow_stats.spawned > 0.1 * report.flow_stats.initial_flows
    # at step 1 every placed flow is eligible (energies ≈ 0.8 > spawn_threshold 0.3)
    assert agg.spawn_requested[1] == pytest.approx(0.27 * report.flow_stats.initial_flows, rel=0.2)
    assert report.params_without_grad == ()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_a_child_carries_the_part_of_the_input_of_the_cell_it_is_born_in():
    """Like a placed flow, whose payload is its start cell's part: a copy of the parent's payload
    would put the parent's part on a neighbouring cell's deposit."""
    from tests.test_core import run  # an observed model: every step's state before and after

    c = create_tiny_config(max_active_flows=600)
    model, result = run(c, spawn_bias=1.5)
    x = unit_rows(c.batch_size, c.teacher_dim, 0)  # what run() fed the model
    parts = model.input_mapper(x)[1].detach()      # [B, H·W, E]
    born = 0
    for before, after in model.steps:
        kids = after["flow_id"] >= before["next_id"]
        cell = model.lattice.nearest_cell(after["pos"][kids][:, :2])
        torch.testing.assert_close(after["payload"][kids], parts[after["sample"][kids], cell])
        born += int(kids.sum())
    assert born == result.flow_stats.spawned > 0
