"""The phases of one propagation step, and the record of what the step did.

``FlowProcessor.step`` runs them in this order for the ``n`` flows it steps (all active flows,
one batched call each, no per-flow Python):

1. **move** — add the carrier's displacement, clamp to [-1, 1], fade the energy;
2. **terminate** — landed on an output plane, else faded below ``energy_threshold``, else timed
   out at ``max_steps`` (that precedence);
3. **deposit** — landed flows (and timed-out ones under ``timeout_policy = "project"``) splat
   their energy and payload on the output plane (core/collection.py);
4. **spawn** — children within the budget (the policy is core/spawning.py);
5. **rewrite state** — the flows that go on keep their rows, in order, and the children follow:
   the state holds the live flows only (core/lattice.py).

The step hands a :class:`StepOutcome` to the tracer: every tensor the telemetry reads, named,
instead of a long keyword list whose order two modules had to agree on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.spawning import SpawnPlan, child_values
from energy_flow.trace.telemetry import REASON_ACTIVE, REASON_FADED, REASON_LANDED, REASON_TIMED_OUT


@dataclass(frozen=True)
class Movement:
    """Phase 1, per stepped flow."""

    pos: torch.Tensor      # [n, 3] new position, clamped to [-1, 1]
    moved: torch.Tensor    # [n, 3] change of the clamped position
    clamped: torch.Tensor  # [n] bool: the clamp cut the displacement
    energy: torch.Tensor   # [n] energy after fading (before any share goes to children)


@dataclass(frozen=True)
class Termination:
    """Phase 2, per stepped flow."""

    reason: torch.Tensor         # [n] long: REASON_* (REASON_ACTIVE for flows that go on)
    landed_plane: torch.Tensor   # [n] long: output plane the flow sits on, −1 for none
    deposits: torch.Tensor       # [n] bool: the flow deposits this step
    deposit_plane: torch.Tensor  # [n] long: where it deposits (a timed-out flow: nearest plane)

    @property
    def still_active(self) -> torch.Tensor:
        return self.reason == REASON_ACTIVE


@dataclass(frozen=True)
class StepOutcome:
    """What one step did: the new state, and per stepped flow (the rows of the state before the
    step) what happened to it. Read by the tracer under ``no_grad``."""

    state: FlowState               # after the step: the survivors, then the children
    born: torch.Tensor             # [N'] bool: the rows of ``state`` that are children born this step
    stepped_ids: torch.Tensor      # [n] ids of the stepped flows
    stepped_traced: torch.Tensor   # [n] bool: part of the trajectory sample
    movement: Movement
    termination: Termination
    spawns: SpawnPlan
    carrier: CarrierOutput         # the heads' outputs (displacement before the clamp, saturation)
    collector: OutputCollector     # the output planes after this step's deposits

    @property
    def kept_energy(self) -> torch.Tensor:
        """[n] the energy each stepped flow carries on with (after fading and spawning)."""
        return self.spawns.parent_energy


def move(pos: torch.Tensor, energy: torch.Tensor, out: CarrierOutput) -> Movement:
    moved = pos + out.displacement
    new_pos = moved.clamp(-1.0, 1.0)
    return Movement(pos=new_pos, moved=new_pos - pos, clamped=(moved != new_pos).any(dim=1),
                    energy=energy * out.retention)


def terminate(lattice: EnergyLattice, config: EnergyConfig, movement: Movement, step: int) -> Termination:
    plane = lattice.landing_plane(movement.pos[:, 2])
    landed = plane >= 0
    faded = ~landed & (movement.energy < config.energy_threshold)
    timed_out = ~landed & ~faded & (step >= config.max_steps)
    reason = torch.full_like(plane, REASON_ACTIVE)
    reason = torch.where(landed, REASON_LANDED, reason)
    reason = torch.where(faded, REASON_FADED, reason)
    reason = torch.where(timed_out, REASON_TIMED_OUT, reason)
    return Termination(reason=reason, landed_plane=plane,
                       deposits=landed | (timed_out & (config.timeout_policy == "project")),
                       deposit_plane=torch.where(landed, plane, lattice.nearest_plane(movement.pos[:, 2])))


def deposit(collector: OutputCollector, sample: torch.Tensor, movement: Movement, ended: Termination,
            payload: torch.Tensor) -> None:
    collector.deposit(sample, ended.deposit_plane, movement.pos[:, :2], movement.energy, payload,
                      ended.deposits)


def rewrite_state(state: FlowState, movement: Movement, ended: Termination, out: CarrierOutput,
                  spawns: SpawnPlan, step: int, offsets: torch.Tensor,
                  part_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[FlowState, torch.Tensor]:
    """The state after the step, and which of its rows are children ([N'] bool): the flows that
    go on, in their order, then the children in the order of their ranks — so the rows stay in
    ascending id and only live flows take memory.

    The step's one wait for the device is here: one ``nonzero`` over the survivors and the
    children granted ([n] then [n·K] flags) gives every row of the new state, with the stepped
    flow it takes after (itself, or its parent). Every field is then one gather of that flow's
    value and, for children, a ``where`` with the child's own (core/spawning.py); their
    backward scatters into tensors of the stepped flows' size, never the budget's."""
    n, k = state.count, spawns.per_flow
    granted = torch.arange(k, device=spawns.granted.device) < spawns.granted.unsqueeze(1)   # [n, K]
    rows = torch.nonzero(torch.cat([ended.still_active, granted.reshape(-1)])).squeeze(1)
    born = rows >= n
    child = (rows - n).clamp(min=0)
    inherit = torch.where(born, child // k, rows)   # the stepped flow each new row takes after
    index = child % k                               # a child's index among its parent's children
    pos = movement.pos[inherit]
    ids = state.flow_id[inherit]
    lineage = state.lineage[inherit]
    # every row's child values, the survivors' dropped by pick: a few elementwise ops over the
    # rows, where selecting the children first would take a second wait for the device
    kid = child_values(spawns, inherit, index, pos, lineage, step, offsets, part_at)

    def pick(child_value, own_value):
        flag = born.view(-1, *([1] * (own_value.dim() - 1)))
        return torch.where(flag, child_value, own_value)

    return FlowState(
        pos=pick(kid.pos, pos),
        energy=pick(kid.energy, spawns.parent_energy[inherit]),
        payload=pick(kid.payload, out.payload[inherit]),
        hidden=out.hidden[inherit],
        sample=state.sample[inherit],
        flow_id=pick(state.next_id + kid.rank, ids),
        parent_id=pick(ids, state.parent_id[inherit]),
        age=pick(torch.zeros_like(ids), state.age[inherit] + 1),
        birth_step=pick(torch.full_like(ids, step), state.birth_step[inherit]),
        traced=state.traced[inherit],
        lineage=pick(kid.lineage, lineage),
        next_id=state.next_id + spawns.total_granted,
    ), born
