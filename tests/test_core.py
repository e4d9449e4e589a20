"""Invariants of one batched propagation: positions, budgets, ages, energy, telemetry."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyCarrier, EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.core import processor as processor_module
from energy_flow.trace.telemetry import REASON_LANDED, REASON_NAMES
from energy_flow.training import build_model
from tests.conftest import unit_rows


class Observed(FlowProcessor):
    """FlowProcessor that keeps (before, after) copies of the state at every step."""

    def __init__(self, config):
        torch.manual_seed(config.seed)
        super().__init__(EnergyLattice(config), SimpleNeuron(config), config)
        self.steps = []

    def step(self, state, active, field, collector, tracer, step, hidden_dtype=None):
        before = {k: v.detach().clone() for k, v in vars(state).items()}
        new = super().step(state, active, field, collector, tracer, step, hidden_dtype)
        after = {k: v.detach().clone() for k, v in vars(new).items()}
        self.steps.append((before, active.clone(), after))
        return new


def run(config, n=None, seed=0):
    model = Observed(config)
    result = model(unit_rows(n or config.batch_size, config.teacher_dim, seed))
    return model, result


@pytest.fixture(params=["center", "input_face"])
def observed(request):
    c = create_tiny_config(start_mode=request.param, max_active_flows=300)
    return run(c)


def test_positions_stay_in_the_unit_cube_after_every_step(observed):
    model, _ = observed
    for _, _, after in model.steps:
        pos = after["pos"][after["alive"]]
        assert pos.numel() == 0 or (pos.min() >= -1.0 and pos.max() <= 1.0)


def test_every_active_flow_is_updated_exactly_once_per_step(observed):
    model, _ = observed
    for before, active, after in model.steps:
        alive_before = torch.nonzero(before["alive"]).squeeze(1)
        assert torch.equal(active, alive_before)  # all live flows are stepped, no others
        same = after["flow_id"][active] == before["flow_id"][active]
        still = after["alive"][active] & same
        assert torch.equal(after["age"][active][still], before["age"][active][still] + 1)
        moved = (after["pos"][active][still] != before["pos"][active][still]).any(dim=1)
        if moved.numel():
            assert moved.float().mean() > 0.5  # flows move (a few may sit clamped at an edge)


def test_budget_is_respected_and_spawn_counts_add_up(observed):
    model, result = observed
    cap = model.config.max_active_flows
    for _, _, after in model.steps:
        assert int(after["alive"].sum()) <= cap
    agg = result.telemetry.aggregates
    assert (agg.active <= cap).all()
    assert np.array_equal(agg.spawn_requested, agg.spawn_granted + agg.spawn_denied)


def test_a_tight_budget_denies_spawns_and_counts_them():
    c = create_tiny_config(max_active_flows=150, batch_size=4)  # 144 placed, room for 6
    _, result = run(c)
    agg = result.telemetry.aggregates
    assert agg.spawn_requested.sum() > 6
    assert agg.spawn_denied.sum() > 0
    assert agg.active.max() <= 150


def test_active_counts_follow_terminations_and_spawns(observed):
    _, result = observed
    a = result.telemetry.aggregates
    terminated = a.landed.sum(axis=1) + a.faded + a.timed_out
    assert np.array_equal(a.active[1:], a.active[:-1] - terminated[1:] + a.spawn_granted[1:])
    assert a.active[-1] == 0  # every flow ends by max_steps


def test_energy_is_conserved_when_flows_split(monkeypatch):
    """Σ energy of live flows after a step (parents' kept share + children) equals Σ of what
    the surviving flows had after fading, before any split."""
    retentions = []
    original = EnergyCarrier.forward

    def spy(self, *args):
        out = original(self, *args)
        retentions.append(out.retention.detach().clone())
        return out

    monkeypatch.setattr(EnergyCarrier, "forward", spy)
    model, result = run(create_tiny_config(max_active_flows=400))
    assert result.flow_stats.spawned > 0
    for (before, active, after), retention in zip(model.steps, retentions):
        faded_energy = before["energy"][active] * retention
        same = after["flow_id"][active] == before["flow_id"][active]
        survived = after["alive"][active] & same
        torch.testing.assert_close(after["energy"][after["alive"]].sum(), faded_energy[survived].sum(),
                                   rtol=1e-5, atol=1e-5)


def test_trajectory_sample_keeps_whole_families_within_the_cap():
    c = create_tiny_config(trace_max_flows=200, max_active_flows=400)  # 4 samples × 36 = 144 placed
    _, result = run(c)
    fl = result.telemetry.flows
    assert fl.num_flows <= 200
    assert (fl.parent_id >= 0).any()  # children are in the sample
    assert set(fl.parent_id[fl.parent_id >= 0].tolist()) <= set(fl.flow_id.tolist())
    assert set(np.unique(fl.sample_index).tolist()) == set(range(fl.traced_samples))
    # the sample holds every flow of its samples: compare with a run that traces everything
    full = run(c.replace(trace_max_flows=10_000))[1].telemetry.flows
    kept = np.isin(full.sample_index, np.arange(fl.traced_samples))
    assert np.array_equal(np.sort(full.flow_id[kept]), fl.flow_id)


def test_flows_reach_output_planes_and_cover_them():
    _, result = run(create_tiny_config())
    fs = result.flow_stats
    assert sum(fs.landed) > 0
    assert all(c > 0 for c in fs.coverage)  # both planes of center mode receive energy


def test_max_steps_policy_project_deposits_timed_out_flows_drop_does_not():
    c = create_tiny_config(max_steps=2, displacement_scale=0.05)  # nobody can land in 2 steps
    _, projected = run(c)
    _, dropped = run(c.replace(timeout_policy="drop"))
    assert projected.flow_stats.timed_out > 0 and sum(projected.flow_stats.landed) == 0
    assert projected.telemetry.aggregates.deposited_energy[-1].sum() > 0
    assert dropped.telemetry.aggregates.deposited_energy[-1].sum() == 0


def test_input_face_flows_only_move_forward():
    model, result = run(create_tiny_config(start_mode="input_face"))
    pos = result.telemetry.flows.positions
    dz = np.diff(pos[..., 2], axis=1)
    assert np.nanmin(dz) >= 0
    assert result.telemetry.plane_z == (1.0,)


def test_deposit_is_differentiable_in_xy():
    c = create_tiny_config()
    model = build_model(c)
    out = model(unit_rows(c.batch_size)).outputs
    out.pow(2).sum().backward()
    g = model.carrier.displacement_head.weight.grad
    assert g is not None and g[:2].abs().sum() > 0  # Δx, Δy rows learn through the splat


def test_telemetry_sample_is_consistent():
    _, result = run(create_tiny_config())
    tel = result.telemetry
    fl = tel.flows
    t = tel.num_steps
    assert fl.positions.shape == (fl.num_flows, t + 1, 3)
    assert not fl.positions.flags.writeable  # snapshots are read-only
    ids = set(fl.flow_id.tolist())
    children = fl.parent_id >= 0
    assert set(fl.parent_id[children].tolist()) <= ids  # families are complete in the sample
    for i in range(fl.num_flows):  # test-side loop over a small sample: the layout contract
        alive = ~np.isnan(fl.energy[i])
        steps = np.nonzero(alive)[0]
        assert steps[0] == fl.birth_step[i] and steps[-1] == fl.end_step[i]
        assert np.all(alive[steps[0]:steps[-1] + 1])
    assert set(np.unique(fl.reason)) <= set(range(1, len(REASON_NAMES)))
    hist_total = tel.aggregates.energy_hist.sum(axis=1)
    assert hist_total[0] == tel.aggregates.active[0]
    assert np.array_equal(hist_total[1:], tel.aggregates.active[:-1])  # every stepped flow is counted
    assert (fl.reason == REASON_LANDED).sum() > 0


def test_tracing_off_keeps_flow_stats_and_drops_telemetry():
    c = create_tiny_config(trace_enabled=False)
    result = build_model(c)(unit_rows(c.batch_size))
    assert result.telemetry is None
    assert result.flow_stats.initial_flows == c.initial_flows_per_batch


def test_step_source_has_no_item_or_tolist():
    src = inspect.getsource(processor_module.FlowProcessor.step)
    assert ".item(" not in src and ".tolist(" not in src and "for " not in src.replace("before", "")


def _python_calls_per_step(batch_size: int) -> float:
    """Python-level calls made while stepping (profiled), divided by the steps taken."""
    c = create_tiny_config(lattice_width=20, lattice_height=20, batch_size=batch_size,
                           max_active_flows=batch_size * 400 * 2, trace_enabled=False, mapper_grid=4)
    model = build_model(c)
    x = unit_rows(batch_size)
    counts = {"calls": 0, "item": 0}
    steps = {"n": 0}
    original = FlowProcessor.step

    def counting_step(self, *args):
        steps["n"] += 1

        def prof(frame, event, arg):
            if event == "call":
                counts["calls"] += 1
            elif event == "c_call" and getattr(arg, "__name__", "") in ("item", "tolist"):
                counts["item"] += 1
        sys.setprofile(prof)
        try:
            return original(self, *args)
        finally:
            sys.setprofile(None)

    FlowProcessor.step = counting_step
    try:
        with torch.no_grad():
            model(x)
    finally:
        FlowProcessor.step = original
    assert counts["item"] == 0
    return counts["calls"] / steps["n"]


def test_python_work_per_step_does_not_grow_with_the_number_of_flows():
    small = _python_calls_per_step(5)    # 2,000 flows
    large = _python_calls_per_step(50)   # 20,000 flows
    assert large <= small * 1.1, (small, large)
