"""How many children flows ask for (energy_flow/core/spawning.py), and what that keeps alive:
spawning and the spawn head's gradient when every share is below ½ (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core.spawning import requested_children, spawn_dither
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows


def test_the_dither_spreads_any_run_of_ids_evenly_over_the_unit_interval():
    """Placement numbers flows 0 … n−1 and children continue from there: any such run must
    cover [0, 1) evenly, or the share of flows that split would not follow the share."""
    for start, n in ((0, 144), (6400, 1000), (123_456, 5000)):
        u = spawn_dither(torch.arange(start, start + n), step=start % 7).numpy()
        assert u.min() >= 0.0 and u.max() < 1.0
        grid = np.linspace(0, 1, 21)
        below = np.array([(u < x).mean() for x in grid])
        assert np.abs(below - grid).max() < 3.0 / np.sqrt(n), (start, n)


def test_the_dither_is_a_function_of_id_and_step_alone():
    """What lets a recomputed step repeat its spawns; and a flow's successive steps differ."""
    ids = torch.tensor([0, 5, 2**31 - 1, 5])
    u = spawn_dither(ids, 3)
    assert u[1] == u[3] and torch.equal(u, spawn_dither(ids.clone(), 3))
    assert not torch.equal(u, spawn_dither(ids, 4))
    assert (u < 1.0).all()  # the largest id still maps below 1 (float32 could round 32 bits up)
    # over steps, one flow's dithers are spread too (draws, not a fixed threshold per flow)
    per_step = torch.stack([spawn_dither(torch.tensor([42]), s) for s in range(1, 401)]).squeeze(1)
    assert abs(per_step.mean().item() - 0.5) < 0.05 and (per_step < 0.1).any() and (per_step > 0.9).any()


@pytest.mark.parametrize("share,k", [(0.1, 1), (0.3, 1), (0.5, 1), (0.9, 1), (0.4, 3), (0.8, 2)])
def test_children_asked_for_follow_the_share_on_average(share, k):
    n = 4000
    ids = torch.arange(n)
    want = requested_children(torch.full((n,), share), torch.ones(n, dtype=torch.bool), ids, 2, k)
    assert want.min() >= 0 and want.max() <= k
    assert abs(want.float().mean().item() - share * k) < 0.01
    # a flow asks for ⌊share·k⌋ or one more, never anything else
    assert set(want.unique().tolist()) <= {int(share * k), int(share * k) + 1}


def test_ineligible_flows_and_nan_shares_ask_for_nothing():
    n = 100
    ids = torch.arange(n)
    eligible = ids % 2 == 0
    share = torch.full((n,), 0.99)
    share[::4] = float("nan")
    want = requested_children(share, eligible, ids, 1, 2)
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
    for before, _, after in model.steps:
        kids = after["alive"] & (after["flow_id"] >= before["next_id"])
        cell = model.lattice.nearest_cell(after["pos"][kids][:, :2])
        torch.testing.assert_close(after["payload"][kids], parts[after["sample"][kids], cell])
        born += int(kids.sum())
    assert born == result.flow_stats.spawned > 0
