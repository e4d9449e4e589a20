"""Invariants of one batched propagation: positions, budgets, ages, energy, telemetry."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch

from benchmarks.reference_step import dither
from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.core import processor as processor_module
from energy_flow.trace.telemetry import REASON_LANDED, REASON_NAMES
from energy_flow.training import build_model
from tests.conftest import unit_rows


class Observed(FlowProcessor):
    """FlowProcessor that keeps (before, after) copies of the state at every step, and the
    carrier's retention and spawn fraction for the flows it stepped (a forward hook; a step
    that runs the carrier in row chunks gives several calls, joined in order)."""

    def __init__(self, config):
        torch.manual_seed(config.seed)
        super().__init__(EnergyLattice(config), SimpleNeuron(config), config)
        self.steps = []
        self.outputs = []
        self._calls = []
        self.carrier.register_forward_hook(self._keep_carrier_output)

    def _keep_carrier_output(self, module, args, out):
        self._calls.append((out.retention.detach().clone(), out.spawn_fraction.detach().clone()))

    def step(self, state, field, collector, tracer, step, *rest):
        before = {k: v.detach().clone() for k, v in vars(state).items()}
        self._calls = []
        new = super().step(state, field, collector, tracer, step, *rest)
        after = {k: v.detach().clone() for k, v in vars(new).items()}
        self.steps.append((before, after))
        retention, spawn_fraction = (torch.cat(col) for col in zip(*self._calls))
        self.outputs.append({"retention": retention, "spawn_fraction": spawn_fraction})
        return new


def run(config, n=None, seed=0, spawn_bias=None):
    """One forward pass of an observed model; ``spawn_bias`` overrides the spawn head's bias
    (sigmoid(1.5) ≈ 0.82: a flow asks for floor(0.82·k + u) children, all k when its dither
    u ≥ 0.18·k)."""
    model = Observed(config)
    if spawn_bias is not None:
        with torch.no_grad():
            model.carrier.spawn_head.bias.fill_(spawn_bias)
    result = model(unit_rows(n or config.batch_size, config.teacher_dim, seed))
    return model, result


def matched(before, after) -> tuple[torch.Tensor, torch.Tensor]:
    """Which flows of ``before`` are still in ``after`` ([n] bool), and their rows there, found
    by flow id (the state's rows are in ascending id)."""
    ids = after["flow_id"]
    at = torch.searchsorted(ids, before["flow_id"]).clamp(max=max(ids.shape[0] - 1, 0))
    survived = (ids[at] == before["flow_id"]) if ids.numel() else torch.zeros_like(before["flow_id"], dtype=torch.bool)
    return survived, at[survived]


def spawn_ledger(model) -> dict[str, np.ndarray]:
    """Per step, recomputed from the observed states and carrier outputs only (not from the
    processor's own counters): children requested by the surviving flows, the room the budget
    leaves after terminations, children actually born into the state, and flows that survived
    the step."""
    c = model.config
    k = c.max_spawn_per_step
    rows = []
    for step, ((before, after), out) in enumerate(zip(model.steps, model.outputs), start=1):
        faded = before["energy"] * out["retention"]
        survived, _ = matched(before, after)
        want = (out["spawn_fraction"] * k + dithers(before["lineage"], step)).floor().clamp(max=k).long()
        requested = int((want * (survived & (faded > c.spawn_threshold))).sum())
        free = c.resolved_max_active_flows - int(survived.sum())
        born = int((after["flow_id"] >= before["next_id"]).sum())
        rows.append((requested, free, born, int(survived.sum())))
    requested, free, born, survivors = (np.array(col) for col in zip(*rows))
    return {"requested": requested, "free": free, "born": born, "survivors": survivors}


def dithers(keys: torch.Tensor, step: int) -> torch.Tensor:
    """Each flow's spawn dither, worked out in Python integers by the per-flow reference."""
    return torch.tensor([dither(key, step) for key in keys.tolist()], dtype=torch.float64)


@pytest.fixture(params=["center", "input_face"])
def observed(request):
    c = create_tiny_config(start_mode=request.param, max_active_flows=300)
    return run(c)


def test_positions_stay_in_the_unit_cube_after_every_step(observed):
    model, _ = observed
    for _, after in model.steps:
        pos = after["pos"]
        assert pos.numel() == 0 or (pos.min() >= -1.0 and pos.max() <= 1.0)


def test_displacements_are_bounded_by_the_scale(observed):
    """Every stepped flow moves at most ``displacement_scale`` per axis and step (the clamp
    can only shorten a move), and the heads use a good part of that range. Guards against a
    mis-scaled displacement head (mutation testing: ``/ scale`` for ``* scale`` in
    ``input_face`` mode survived, the unit-cube clamp hid it)."""
    model, _ = observed
    scale = model.config.displacement_scale
    largest = 0.0
    for before, after in model.steps:
        survived, at = matched(before, after)
        move = (after["pos"][at] - before["pos"][survived]).abs()
        assert move.numel() == 0 or move.max() <= scale * (1 + 1e-6)
        if move.numel():
            largest = max(largest, float(move.max()))
    assert largest > 0.5 * scale


def test_every_active_flow_is_updated_exactly_once_per_step(observed):
    """The state holds the live flows only: the carrier steps every row once, the flows that
    go on keep their order and the children follow them, so the ids stay ascending."""
    model, _ = observed
    for (before, after), out in zip(model.steps, model.outputs):
        assert out["retention"].shape[0] == before["flow_id"].shape[0]  # every live flow stepped, once
        survived, at = matched(before, after)
        born = after["flow_id"] >= before["next_id"]
        assert after["flow_id"].shape[0] == int(survived.sum()) + int(born.sum())
        assert torch.equal(at, torch.arange(int(survived.sum())))  # survivors first, in their order
        assert (after["flow_id"].diff() > 0).all()
        assert torch.equal(after["age"][at], before["age"][survived] + 1)
        assert (after["age"][born] == 0).all()
        moved = (after["pos"][at] != before["pos"][survived]).any(dim=1)
        if moved.numel():
            assert moved.float().mean() > 0.5  # flows move (a few may sit clamped at an edge)


@pytest.mark.parametrize("k", [1, 3])
def test_budget_is_respected_and_spawn_counts_add_up(k):
    """Children are granted up to the budget's room and no further, and the telemetry's spawn
    counts are the children really born. Guards against granting past the budget (planted:
    ``free_count + 10_000`` in the grant, which reports children that were never born) and
    against counters that do not match the state."""
    c = create_tiny_config(max_active_flows=200, max_spawn_per_step=k)  # 144 placed
    model, result = run(c)
    led = spawn_ledger(model)
    agg = result.telemetry.aggregates
    assert (led["requested"] > led["free"]).any()  # the budget binds at some step
    assert (led["born"] > 0).any()
    np.testing.assert_array_equal(led["born"], np.minimum(led["requested"], led["free"]))
    np.testing.assert_array_equal(agg.spawn_requested[1:], led["requested"])
    np.testing.assert_array_equal(agg.spawn_granted[1:], led["born"])
    np.testing.assert_array_equal(agg.spawn_denied[1:], led["requested"] - led["born"])
    np.testing.assert_array_equal(agg.active[1:], led["survivors"] + led["born"])
    assert (agg.active <= c.resolved_max_active_flows).all()


def test_a_tight_budget_denies_spawns_and_counts_them():
    """With room for only a few children, the room is all filled and the rest denied.
    Guards against never granting a spawn (planted: ``granted`` forced to zero) and against
    denying children while the budget has room."""
    c = create_tiny_config(max_active_flows=150, batch_size=4)  # 144 placed, room for 6
    model, result = run(c)
    led = spawn_ledger(model)
    agg = result.telemetry.aggregates
    first = led["requested"][0]
    assert first > led["free"][0] > 0                        # step 1 asks for more than fits
    assert led["born"][0] == led["free"][0]                  # ... and all the room is used
    assert agg.spawn_granted[1] == led["free"][0]
    assert agg.spawn_denied[1] == first - led["free"][0]
    assert agg.spawn_denied.sum() == (led["requested"] - np.minimum(led["requested"], led["free"])).sum() > 0
    assert agg.active.max() <= 150


def test_active_counts_follow_terminations_and_spawns(observed):
    _, result = observed
    a = result.telemetry.aggregates
    terminated = a.landed.sum(axis=1) + a.faded + a.timed_out
    assert np.array_equal(a.active[1:], a.active[:-1] - terminated[1:] + a.spawn_granted[1:])
    assert a.active[-1] == 0  # every flow ends by max_steps


@pytest.mark.parametrize("k", [1, 2, 3])
def test_energy_is_conserved_when_flows_split(k):
    """Per parent, kept energy + Σ its children's energy = its energy after fading; the parent
    keeps (1 − f) and each of its n ≤ k children gets f / n. Guards against a split that loses
    or creates energy, in particular with several children (planted: each child gets
    ``new_energy · f`` instead of ``new_energy · f / granted``, invisible with one child)."""
    model, result = run(create_tiny_config(max_active_flows=600, max_spawn_per_step=k), spawn_bias=1.5)
    most_children = 0
    for (before, after), out in zip(model.steps, model.outputs):
        faded = before["energy"] * out["retention"]
        frac = out["spawn_fraction"]
        survived, at = matched(before, after)
        row_of = {fid: row for row, fid in enumerate(before["flow_id"][survived].tolist())}
        ids = list(row_of)
        kept = after["energy"][at]
        kids = after["flow_id"] >= before["next_id"]
        parent_row = torch.tensor([row_of[p] for p in after["parent_id"][kids].tolist()], dtype=torch.long)
        n_kids = torch.bincount(parent_row, minlength=len(ids))
        to_kids = torch.zeros(len(ids)).index_add(0, parent_row, after["energy"][kids])
        torch.testing.assert_close(kept + to_kids, faded[survived])
        split = n_kids > 0
        torch.testing.assert_close(kept[split], (faded * (1 - frac))[survived][split])
        share = (faded * frac)[survived] / n_kids.clamp(min=1)
        torch.testing.assert_close(after["energy"][kids], share[parent_row])
        most_children = max(most_children, int(n_kids.max()) if len(ids) else 0)
        assert most_children <= k
        # live energy after the step is exactly what the survivors had after fading
        torch.testing.assert_close(after["energy"].sum(), faded[survived].sum())
    assert result.flow_stats.spawned > 0
    assert most_children == k  # some parent used every child it may have


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


def test_an_untrained_model_lands_most_flows_instead_of_fading_them():
    """Before any training the carrier keeps most energy per step, so flows live long enough
    to land (the module's stated reason for its retention bias). Guards against an
    initialisation that fades flows before they arrive (mutation testing: the retention bias
    written to a payload channel survived)."""
    _, result = run(create_tiny_config(max_spawn_per_step=0, spawn_threshold=0.0))
    fs = result.flow_stats
    assert sum(fs.landed) > 0.5 * fs.initial_flows, fs
    assert fs.faded < 0.1 * fs.initial_flows, fs


def test_carrier_depth_follows_the_config():
    """A two-layer carrier keeps, per flow, a GRU state for each layer, and both layers are
    stepped. Guards against ignoring ``carrier_num_layers`` (mutation testing: a one-layer GRU
    survived, as the tiny preset has one layer)."""
    model, _ = run(create_tiny_config(carrier_num_layers=2))
    assert model.carrier.gru.num_layers == 2
    _, after = model.steps[0]
    hidden = after["hidden"]
    assert hidden.shape[1:] == (2, model.config.carrier_hidden_size)
    assert (hidden.abs().sum(dim=(0, 2)) > 0).all()  # both layers moved away from the zero state


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
