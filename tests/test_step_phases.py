"""The flow-state rewrite (``step_phases.rewrite_state``): survivors keep their rows in order, the
children follow, and gradients reach the values each new row came from.

The step as a whole is checked against the per-flow reference (tests/test_reference_step.py)
and the invariants of tests/test_core.py; here the rewrite alone, on a hand-made step where a
wrong row would hide: a flow that ended between two that go on, a parent with two children, one
denied, and one with none, a child of the last stepped flow.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import torch

from energy_flow.core import step_phases
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.lattice import FlowState
from energy_flow.core.spawning import SpawnPlan, child_keys, child_offsets
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
            {"pos": (N, 3), "kept": (N,), "payload": (N, E), "hidden": (N, L, H), "child_energy": (N,),
             "parts": (N, E)}.items()}
    return state, ended, leaf


def rewrite(state, ended, leaf, **values):
    v = {**leaf, **values}
    movement = Movement(pos=v["pos"], moved=v["pos"], clamped=torch.zeros(N, dtype=torch.bool), energy=v["kept"])
    out = CarrierOutput(hidden=v["hidden"], retention=torch.ones_like(v["kept"]), payload=v["payload"],
                        displacement=v["pos"], displacement_unit=v["pos"], spawn_fraction=torch.full_like(v["kept"], 0.5))
    spawns = SpawnPlan(requested=torch.tensor([2, 0, 0, 1, 1]), granted=torch.tensor([2, 0, 0, 0, 1]),
                       parent_energy=v["kept"], child_energy=v["child_energy"],
                       first_rank=torch.tensor([0, 2, 2, 2, 3]), per_flow=K)
    return rewrite_state(state, movement, ended, out, spawns, 3, OFFSETS, lambda parent, xy: v["parts"][parent])


K = 2
OFFSETS = child_offsets(K, 0.5).double()


def test_survivors_keep_their_order_and_the_children_follow_them():
    state, ended, leaf = case()
    new, born = rewrite(state, ended, leaf)
    survivors, parents, index = torch.tensor([0, 2, 4]), torch.tensor([0, 0, 4]), torch.tensor([0, 1, 0])
    assert born.tolist() == [False, False, False, True, True, True]
    assert new.flow_id.tolist() == [3, 7, 9, 10, 11, 13]    # ascending; a denied request keeps its rank
    assert new.parent_id.tolist() == [-1, -1, 3, 3, 3, 9]
    assert new.sample.tolist() == [0, 1, 1, 0, 0, 1]         # a child's sample is its parent's
    assert new.age.tolist() == [3, 3, 2, 0, 0, 0]
    assert new.birth_step.tolist() == [0, 0, 1, 3, 3, 3]
    assert new.traced.tolist() == [True, False, False, True, True, False]
    assert new.lineage[:3].tolist() == [33, 77, 99]
    assert torch.equal(new.lineage[3:], child_keys(state.lineage[parents], 3, index))
    assert int(new.next_id) == 13 and new.count == 6
    kid_pos = (leaf["pos"][parents] + OFFSETS[index]).clamp(-1.0, 1.0)
    assert torch.equal(new.pos, torch.cat([leaf["pos"][survivors], kid_pos]))
    assert torch.equal(new.energy, torch.cat([leaf["kept"][survivors], leaf["child_energy"][parents]]))
    assert torch.equal(new.payload, torch.cat([leaf["payload"][survivors], leaf["parts"][parents]]))
    assert torch.equal(new.hidden, leaf["hidden"][torch.cat([survivors, parents])])  # children inherit


def test_gradients_reach_the_rows_each_new_row_came_from():
    """gradcheck in float64 of every float field of the new state against every value it was
    made of: an ended flow's row gets no gradient, a parent's GRU state gets its children's."""
    state, ended, leaf = case()
    names = list(leaf)

    def fields(*values):
        new, _ = rewrite(state, ended, leaf, **dict(zip(names, values)))
        return new.pos, new.energy, new.payload, new.hidden

    assert torch.autograd.gradcheck(fields, tuple(leaf[n] for n in names))
    (grad,) = torch.autograd.grad(fields(*(leaf[n] for n in names))[3].sum(), [leaf["hidden"]])
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
