"""The flow-state rewrite (``step_phases.rewrite_state``): survivors keep their rows in order, the
children follow, and gradients reach the values each new row came from.

The step as a whole is checked against the per-flow reference (tests/test_reference_step.py)
and the invariants of tests/test_core.py; here the rewrite alone, on a hand-made step where a
wrong row would hide: a flow that ended between two that go on, a parent with two children and
one with none, a child of the last stepped flow.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import torch

from energy_flow.core import step_phases
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.lattice import FlowState
from energy_flow.core.spawning import SpawnPlan
from energy_flow.core.step_phases import Movement, Termination, rewrite_state
from energy_flow.trace.telemetry import REASON_ACTIVE, REASON_FADED, REASON_LANDED

N, L, H, E = 5, 2, 3, 2


def stepped_state() -> FlowState:
    ids = torch.tensor([3, 4, 7, 8, 9])
    return FlowState(
        pos=torch.zeros(N, 3), energy=torch.ones(N), payload=torch.zeros(N, E), hidden=torch.zeros(N, L, H),
        sample=torch.tensor([0, 0, 1, 1, 1]), flow_id=ids, parent_id=torch.tensor([-1, -1, -1, 3, 3]),
        age=torch.tensor([2, 2, 2, 1, 1]), birth_step=torch.tensor([0, 0, 0, 1, 1]),
        traced=torch.tensor([True, True, False, False, False]), lineage=ids * 11, next_id=torch.tensor(10))


def case(dtype=torch.float64):
    """Flows 4 (landed) and 8 (faded) end; flow 3 gets two children, flow 9 one, 7 none."""
    g = torch.Generator().manual_seed(3)
    state = stepped_state()
    reason = torch.tensor([REASON_ACTIVE, REASON_LANDED, REASON_ACTIVE, REASON_FADED, REASON_ACTIVE])
    ended = Termination(reason=reason, landed_plane=torch.full((N,), -1), deposits=reason == REASON_LANDED,
                        deposit_plane=torch.zeros(N, dtype=torch.long))
    leaf = {name: torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True) for name, shape in
            {"pos": (N, 3), "kept": (N,), "payload": (N, E), "hidden": (N, L, H),
             "child_pos": (3, 3), "child_energy": (3,), "child_payload": (3, E)}.items()}
    movement = Movement(pos=leaf["pos"], moved=leaf["pos"], clamped=torch.zeros(N, dtype=torch.bool),
                        energy=leaf["kept"])
    out = CarrierOutput(hidden=leaf["hidden"], retention=torch.ones(N, dtype=dtype), payload=leaf["payload"],
                        displacement=leaf["pos"], displacement_unit=leaf["pos"],
                        spawn_fraction=torch.full((N,), 0.5, dtype=dtype))
    spawns = SpawnPlan(requested=torch.tensor([2, 0, 0, 0, 1]), granted=torch.tensor([2, 0, 0, 0, 1]),
                       parent_energy=leaf["kept"], rank=torch.tensor([0, 1, 2]), parent=torch.tensor([0, 0, 4]),
                       pos=leaf["child_pos"], energy=leaf["child_energy"], payload=leaf["child_payload"],
                       lineage=torch.tensor([100, 101, 102]))
    return state, movement, ended, out, spawns, leaf


def test_survivors_keep_their_order_and_the_children_follow_them():
    state, movement, ended, out, spawns, leaf = case()
    new = rewrite_state(state, movement, ended, out, spawns, step=3)
    survivors = torch.tensor([0, 2, 4])
    assert new.flow_id.tolist() == [3, 7, 9, 10, 11, 12]          # ascending: survivors, then children
    assert new.parent_id.tolist() == [-1, -1, 3, 3, 3, 9]
    assert new.sample.tolist() == [0, 1, 1, 0, 0, 1]               # a child's sample is its parent's
    assert new.age.tolist() == [3, 3, 2, 0, 0, 0]
    assert new.birth_step.tolist() == [0, 0, 1, 3, 3, 3]
    assert new.traced.tolist() == [True, False, False, True, True, False]
    assert new.lineage.tolist() == [33, 77, 99, 100, 101, 102]
    assert int(new.next_id) == 13 and new.count == 6
    assert torch.equal(new.pos, torch.cat([leaf["pos"][survivors], leaf["child_pos"]]))
    assert torch.equal(new.energy, torch.cat([leaf["kept"][survivors], leaf["child_energy"]]))
    assert torch.equal(new.payload, torch.cat([leaf["payload"][survivors], leaf["child_payload"]]))
    assert torch.equal(new.hidden, leaf["hidden"][torch.tensor([0, 2, 4, 0, 0, 4])])  # children inherit


def test_gradients_reach_the_rows_each_new_row_came_from():
    """gradcheck in float64 of every float field of the new state against every value it was
    made of: an ended flow's row gets no gradient, a parent's GRU state gets its children's."""
    state, movement, ended, out, spawns, leaf = case()
    names = list(leaf)

    def fields(*values):
        v = dict(zip(names, values))
        mv = Movement(pos=v["pos"], moved=v["pos"], clamped=movement.clamped, energy=v["kept"])
        o = CarrierOutput(hidden=v["hidden"], retention=out.retention, payload=v["payload"],
                          displacement=v["pos"], displacement_unit=v["pos"], spawn_fraction=out.spawn_fraction)
        sp = SpawnPlan(requested=spawns.requested, granted=spawns.granted, parent_energy=v["kept"],
                       rank=spawns.rank, parent=spawns.parent, pos=v["child_pos"], energy=v["child_energy"],
                       payload=v["child_payload"], lineage=spawns.lineage)
        new = rewrite_state(state, mv, ended, o, sp, step=3)
        return new.pos, new.energy, new.payload, new.hidden

    assert torch.autograd.gradcheck(fields, tuple(leaf[n] for n in names))
    new_hidden = fields(*(leaf[n] for n in names))[3]
    (grad,) = torch.autograd.grad(new_hidden.sum(), [leaf["hidden"]])
    assert grad[:, 0, 0].tolist() == [3.0, 0.0, 1.0, 0.0, 2.0]  # flow 3 + two children, 9 + one


def test_the_step_phases_have_no_per_flow_loop_and_no_host_read():
    """docs/architecture.md: no per-flow Python loop and no ``.item()`` in the propagation step. The step's
    phases moved out of ``FlowProcessor.step`` (tests/test_core.py checks its source), so their
    code is checked here, as syntax: no ``for``/``while`` and no ``.item()``/``.tolist()``."""
    from energy_flow.core import processor, spawning

    sources = [inspect.getsource(step_phases), inspect.getsource(spawning.plan_children),
               inspect.getsource(spawning.requested_children), inspect.getsource(processor.FlowProcessor.advance)]
    for src in sources:
        tree = ast.parse(textwrap.dedent(src))
        loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.comprehension))]
        reads = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("item", "tolist")]
        assert not loops and not reads, (src.splitlines()[0], loops, reads)
