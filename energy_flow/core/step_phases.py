"""The phases of one propagation step, and the record of what the step did.

``FlowProcessor.step`` runs them in this order for the ``n`` flows it steps (all active flows,
one batched call each, no per-flow Python):

1. **move** — add the carrier's displacement, clamp to [-1, 1], fade the energy;
2. **terminate** — landed on an output plane, else faded below ``energy_threshold``, else timed
   out at ``max_steps`` (that precedence);
3. **deposit** — landed flows (and timed-out ones under ``timeout_policy = "project"``) splat
   their energy and payload on the output plane (core/collection.py);
4. **spawn** — children within the budget (the policy is core/spawning.py);
5. **rewrite state** — stepped flows' new values at their slots, children's at theirs.

The step hands a :class:`StepOutcome` to the tracer: every tensor the telemetry reads, named,
instead of a long keyword list whose order two modules had to agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.spawning import SpawnPlan
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
    """What one step did: the new state, and per stepped flow (slots ``active`` of the state
    before the step) what happened to it. Read by the tracer under ``no_grad``."""

    state: FlowState               # after the step (children written)
    stepped_ids: torch.Tensor      # [n] ids of the stepped flows (a child may reuse a slot)
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


def _with_spare_row(rows: torch.Tensor, spare: torch.Tensor | float) -> torch.Tensor:
    """``rows`` with one more row (``spare``) at the end: the same values as ``torch.cat``, which
    on the CPU took 20–30× a plain copy's time for a 3-d state such as the hidden [C, L, H]
    with a row of itself appended (measured: 32 ms against 1.2 ms at 16,000 × 2 × 64;
    docs/BENCHMARKS.md, "Issue 29 on the CPU")."""
    grown = rows.new_empty((rows.shape[0] + 1, *rows.shape[1:]))
    grown[:-1] = rows
    grown[-1] = spare
    return grown


class _WriteRows(torch.autograd.Function):
    """``full`` with ``stepped`` written at rows ``active``, then ``children`` at rows ``slots``
    (a later write wins; row ``capacity`` absorbs the writes of non-children and is dropped).

    Autograd's own composition (``cat``, two ``index_put_``, a slice) made three full-capacity
    copies of the incoming gradient in backward — at the optimized preset's 120k slots × 3×1024
    hidden state, ≈1.5 GB each in float32 (docs/BENCHMARKS.md, issue 18). This backward makes
    one: the gradient of the children's rows is gathered, those rows zeroed, then the parents'
    rows likewise; what is left is ``full``'s gradient. Copies and zeros only, so the gradients
    are the same values as before, bit for bit."""

    @staticmethod
    def forward(ctx, full: torch.Tensor, active: torch.Tensor, stepped: torch.Tensor, slots: torch.Tensor,
                children: torch.Tensor) -> torch.Tensor:
        capacity = full.shape[0]
        grown = _with_spare_row(full, full[0])
        grown.index_put_((active,), stepped)
        ctx.save_for_backward(active, slots)
        return grown.index_put_((slots,), children)[:capacity]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        active, slots = ctx.saved_tensors
        grown = _with_spare_row(grad, 0)  # the one copy
        grad_children = grown[slots] if ctx.needs_input_grad[4] else None
        grown.index_fill_(0, slots, 0)
        grad_stepped = grown[active] if ctx.needs_input_grad[2] else None
        grown.index_fill_(0, active, 0)
        return grown[:grad.shape[0]], None, grad_stepped, None, grad_children


def write_rows(full: torch.Tensor, active: torch.Tensor, stepped: torch.Tensor, slots: torch.Tensor,
               children: torch.Tensor) -> torch.Tensor:
    """``full`` with the stepped flows' new values at ``active`` and the children's at
    ``slots`` (``slots == capacity``: not a child, dropped). One full-capacity copy per field,
    written in place, in forward and (for the float fields) in backward: see :class:`_WriteRows`."""
    return _WriteRows.apply(full, active, stepped, slots, children)


def rewrite_state(state: FlowState, active: torch.Tensor, movement: Movement, ended: Termination,
                  out: CarrierOutput, spawns: SpawnPlan, step: int) -> FlowState:
    """The state after the step: stepped flows at their slots, children at theirs."""
    slots, parent = spawns.slot, spawns.parent
    sample = state.sample[active]
    ids = state.flow_id[active]
    traced = state.traced[active]
    lineage = state.lineage[active]

    def write(full: torch.Tensor, stepped: torch.Tensor, children: torch.Tensor) -> torch.Tensor:
        return write_rows(full, active, stepped, slots, children)

    return FlowState(
        pos=write(state.pos, movement.pos, spawns.pos),
        energy=write(state.energy, spawns.parent_energy, spawns.energy),
        payload=write(state.payload, out.payload, spawns.payload),
        hidden=write(state.hidden, out.hidden, out.hidden[parent]),
        sample=write(state.sample, sample, sample[parent]),
        flow_id=write(state.flow_id, ids, state.next_id + spawns.rank),
        parent_id=write(state.parent_id, state.parent_id[active], ids[parent]),
        age=write(state.age, state.age[active] + 1, torch.zeros_like(slots)),
        birth_step=write(state.birth_step, state.birth_step[active], torch.full_like(slots, step)),
        alive=write(state.alive, ended.still_active, torch.ones_like(slots, dtype=torch.bool)),
        traced=write(state.traced, traced, traced[parent]),
        lineage=write(state.lineage, lineage, spawns.lineage),
        next_id=state.next_id + spawns.total_granted,
    )
