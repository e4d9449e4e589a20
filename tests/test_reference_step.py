"""The batched FlowProcessor.step against the per-flow reference (benchmarks/reference_step.py).

The reference walks the live flows one by one in Python with the same modules and rules, so it
is an independent statement of what one step must do: move and clamp, fade, terminate with
precedence, deposit, rank spawn requests against the room left in the budget, split the energy between
parent and children. Every step of a whole batch is checked from the same starting state, so a
difference cannot hide behind a later step.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference_step import reference_step
from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice, FlowProcessor, OutputCollector, SimpleNeuron
from tests.conftest import unit_rows

#: Flow-state fields compared exactly (integers and flags) and within float tolerance.
EXACT = ("sample", "flow_id", "parent_id", "age", "birth_step", "traced", "next_id")
CLOSE = ("pos", "energy", "payload", "hidden")


def _copy_collector(collector: OutputCollector) -> OutputCollector:
    twin = OutputCollector(collector.lattice, collector.batch, collector.weighted_payload.shape[1],
                           collector.energy.device, collector.energy.dtype)
    twin.energy = collector.energy.detach().clone()
    twin.weighted_payload = collector.weighted_payload.detach().clone()
    return twin


class CheckedAgainstReference(FlowProcessor):
    """Runs the reference on a copy of every step's input state and compares the results."""

    def __init__(self, config):
        torch.manual_seed(config.seed)
        super().__init__(EnergyLattice(config), SimpleNeuron(config), config)
        self.checked_steps = 0
        self.children_per_parent: list[int] = []

    def step(self, state, field, collector, tracer, step, *rest):
        ref_collector = _copy_collector(collector)
        expected = reference_step(self, state, field, ref_collector, step)
        new = super().step(state, field, collector, tracer, step, *rest)
        for name in EXACT:
            assert torch.equal(getattr(new, name), getattr(expected, name)), (step, name)
        for name in CLOSE:
            torch.testing.assert_close(getattr(new, name), getattr(expected, name),
                                       rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"step {step}, {n}: {m}")
        torch.testing.assert_close(collector.energy, ref_collector.energy, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(collector.weighted_payload, ref_collector.weighted_payload,
                                   rtol=1e-4, atol=1e-5)
        born = new.flow_id >= state.next_id
        self.children_per_parent += torch.bincount(new.parent_id[born]).tolist()
        self.checked_steps += 1
        return new


@pytest.mark.parametrize("start_mode", ["center", "input_face"])
def test_batched_step_matches_the_per_flow_reference(start_mode):
    """Guards against any divergence of the vectorised step from the per-flow rules: the order
    of the rows (survivors, then children), ranking of children against the budget's room, several children per parent (child offsets, energy shares, ids),
    budget denial, termination precedence, deposits and the timeout projection."""
    c = create_tiny_config(start_mode=start_mode, batch_size=2, max_active_flows=110, max_spawn_per_step=3,
                           max_steps=8, displacement_scale=0.5, trace_max_flows=36)
    model = CheckedAgainstReference(c)
    with torch.no_grad():
        model.carrier.spawn_head.bias.fill_(1.0)  # sigmoid(1) ≈ 0.73: most eligible flows ask for 2
        result = model(unit_rows(c.batch_size, c.teacher_dim, seed=4))
    agg = result.telemetry.aggregates
    assert model.checked_steps == result.telemetry.num_steps >= 2
    assert max(model.children_per_parent) >= 2          # several children per spawn were compared
    assert agg.spawn_denied.sum() > 0                    # and the budget denied some
    assert agg.spawn_granted.sum() > 0
    assert agg.landed.sum() > 0 and agg.timed_out.sum() + agg.faded.sum() > 0
