"""The flow-state rewrite's own backward (``step_phases.write_rows``) against autograd's.

The step's outputs and gradients as a whole are checked by the per-flow reference
(tests/test_reference_step.py) and the recomputation tests; here the rewrite alone, where a
wrong row would hide: a child written into the slot of a flow that ended this step (the later
write wins, so the stepped value there must get no gradient), rows that are no child (the
dropped row), and fields that do not need a gradient.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core import step_phases
from energy_flow.core.step_phases import write_rows
from energy_flow.training import build_model
from tests.conftest import unit_rows


def composed(full, active, stepped, slots, children):
    """The rewrite built from autograd's own ops, as it was before its custom backward."""
    grown = torch.cat([full, full[:1]])
    grown = grown.index_put((active,), stepped)
    return grown.index_put((slots,), children)[:full.shape[0]]


def case(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    capacity = 9
    full = torch.randn(capacity, 2, 3, generator=g, dtype=dtype, requires_grad=True)
    active = torch.tensor([0, 2, 3, 5, 8])
    stepped = torch.randn(5, 2, 3, generator=g, dtype=dtype, requires_grad=True)
    # slot 2 was stepped and ended: a child takes it; slot 9 (= capacity) means "no child"
    slots = torch.tensor([2, 9, 6, 9, 1, 9])
    children = torch.randn(6, 2, 3, generator=g, dtype=dtype, requires_grad=True)
    return full, active, stepped, slots, children


def test_values_and_gradients_equal_autograds_composition_bit_for_bit():
    full, active, stepped, slots, children = case(torch.float32)
    weight = torch.randn(9, 2, 3, generator=torch.Generator().manual_seed(4))
    ours = write_rows(full, active, stepped, slots, children)
    theirs = composed(full, active, stepped, slots, children)
    assert torch.equal(ours, theirs)
    g_ours = torch.autograd.grad((ours * weight).sum(), [full, stepped, children])
    g_theirs = torch.autograd.grad((theirs * weight).sum(), [full, stepped, children])
    for a, b in zip(g_ours, g_theirs):
        assert torch.equal(a, b)
    # the rows the rewrite replaced give the old values no gradient; the overwritten parent none
    assert g_ours[0][[0, 1, 2, 3, 5, 6, 8]].abs().sum() == 0 and g_ours[0][4].abs().sum() > 0
    assert g_ours[1][1].abs().sum() == 0 and g_ours[1][0].abs().sum() > 0
    assert g_ours[2][[1, 3, 5]].abs().sum() == 0  # not children: their writes were dropped


def test_gradcheck_in_double_precision():
    full, active, stepped, slots, children = case()
    assert torch.autograd.gradcheck(lambda f, s, c: write_rows(f, active, s, slots, c),
                                    (full, stepped, children))


def test_only_the_inputs_that_need_a_gradient_get_one():
    full, active, stepped, slots, children = case()
    full = full.detach()  # the placed state's hidden: zeros that need no gradient
    out = write_rows(full, active, stepped, slots, children.detach())
    (g_stepped,) = torch.autograd.grad(out.sum(), [stepped])
    assert torch.equal(g_stepped[1], torch.zeros(2, 3, dtype=g_stepped.dtype))
    integers = write_rows(torch.arange(9), active, torch.full((5,), -1), slots, torch.full((6,), 7))
    assert integers.tolist() == [-1, 7, 7, -1, 4, -1, 7, 7, -1]


@pytest.mark.parametrize("checkpoint_steps", [0, 2])
def test_a_whole_batch_trains_the_same_with_autograds_composition(monkeypatch, checkpoint_steps):
    """The fast rewrite against the one it replaced, end to end: outputs and every parameter's
    gradient equal bit for bit (tolerance 0), plain and with recomputed segments."""
    c = create_tiny_config(max_spawn_per_step=2, checkpoint_steps=checkpoint_steps)
    x = unit_rows(c.batch_size, c.teacher_dim, seed=5)

    def outputs_and_grads():
        model = build_model(c)
        out = model(x).outputs
        out.square().sum().backward()
        return [out.detach()] + [p.grad for p in model.parameters() if p.grad is not None]

    now = outputs_and_grads()
    monkeypatch.setattr(step_phases, "write_rows", composed)
    before = outputs_and_grads()
    assert len(now) == len(before) > 5
    for a, b in zip(now, before):
        assert torch.equal(a, b)


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
