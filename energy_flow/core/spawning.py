"""The spawn policy: how many children a flow asks for, how many it gets, where they go, and the
energy, payload and lineage they start with.

**How many.** 
The spawn head gives each flow a share ``s`` in (0, 1) of its energy to hand to children; with
``k = max_spawn_per_step`` the flow asks for ``floor(s·k + u)`` children, where ``u`` in [0, 1)
is the flow's *dither* at this step. Over flows, ``u`` is spread evenly over [0, 1), so the
expected number of children is ``s·k`` per eligible flow and step — the count follows the share
smoothly, like a draw with probability ``s`` (k = 1). A single threshold for every flow,
``floor(s·(k + 1))``, stopped spawning altogether once training moved every share below ½: then
no flow split its energy, the spawn head left the loss's graph and got no gradient
(docs/health.md).

The dither is a hash, not a random draw, of the flow's *lineage key* and the step. A placed
flow's key mixes a hash of its sample's input embedding with its start cell; a child's mixes its
parent's key, the step and its child index. So the same input's flows split the same way
whatever batch, micro-batch or process it is in (gradient accumulation and torchrun give the
full batch's gradient), recomputing a step in backward (``checkpoint_steps``) repeats its
spawns exactly, and no random-number state is carried.

**How many it gets.** Requests are ranked in the order of the stepped flows (ascending id: the
flow state keeps that order) against the room the budget (``max_active_flows``) leaves after
this step's terminations; a flow gets what is left of its request, so the budget is never
exceeded and a denied request is counted, not queued.

**Where, with what.** Child j of a parent starts half a step (``displacement_scale / 2``) away
from it at angle π/4 + 2πj/k in the x/y plane, so siblings (which inherit the parent's GRU
state) do not follow identical paths. A parent that got children keeps ``1 − share`` of its
energy and its children split the share equally. A child carries its birth cell's part of the
input, as a placed flow carries its start cell's: a copy of the parent's payload would deposit
it on a neighbouring cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Odd 32-bit multipliers. The first is Knuth's (≈ 2³²/φ): consecutive keys land ≈ 0.618 apart
#: modulo 1, an even spread over [0, 1) for any run of cells.
_M1 = 2_654_435_761
_M2 = 2_246_822_519
_M3 = 3_266_489_917
_MASK32 = (1 << 32) - 1


def _mix(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """Two values below 2³¹ → a key below 2³¹ (int64 products stay below 2⁶³)."""
    return ((((a * _M1) & _MASK32) ^ ((b * _M2) & _MASK32)) * _M3 & _MASK32) >> 1


def sample_keys(embeddings: torch.Tensor) -> torch.Tensor:
    """[B, D] float → [B] int64 keys below 2³¹: a hash of each row's float32 bits, so equal
    inputs get equal keys on any device and in any batch."""
    bits = embeddings.detach().float().contiguous().view(torch.int32).long() & _MASK32
    weights = (torch.arange(1, bits.shape[1] + 1, device=bits.device) * _M1) & 0xFFFF  # < 2¹⁶
    # 16-bit halves × 16-bit weights: every product < 2³², the row sum < 2⁴⁵
    total = ((bits >> 16) * weights + (bits & 0xFFFF) * (weights ^ 0x5BD1)).sum(dim=1)
    return _mix(total & 0x7FFFFFFF, (total >> 31) & 0x7FFFFFFF)


def placed_keys(keys_of_samples: torch.Tensor, cells: int) -> torch.Tensor:
    """[B] sample keys → [B·cells] keys of the placed flows (sample-major, like placement)."""
    cell = torch.arange(cells, device=keys_of_samples.device)
    return _mix(keys_of_samples.repeat_interleave(cells), cell.repeat(keys_of_samples.shape[0]))


def child_keys(parent_keys: torch.Tensor, step: int, child_index: torch.Tensor) -> torch.Tensor:
    """Keys of children: a mix of the parent's key, the step and the child's index (0 … k−1)."""
    return _mix(_mix(parent_keys, step), child_index)


def spawn_dither(keys: torch.Tensor, step: int) -> torch.Tensor:
    """[n] float32 in [0, 1): each flow's dither at ``step``. The top 24 bits of the hash, which
    float32 holds exactly (all 32 could round up to 1.0)."""
    return (_mix(keys, step) >> 7).to(torch.float32) / float(1 << 24)


def requested_children(share: torch.Tensor, eligible: torch.Tensor, keys: torch.Tensor, step: int,
                       max_children: int) -> torch.Tensor:
    """[n] long: children each flow asks for — ``floor(share·k + dither)`` where ``eligible``,
    else 0. A NaN share asks for none (it would otherwise become a huge negative count and
    corrupt every flow's rank in the budget)."""
    want = (share.detach().nan_to_num(0.0) * max_children + spawn_dither(keys, step)).floor()
    return torch.where(eligible, want.long().clamp(0, max_children), torch.zeros_like(keys))



def child_offsets(max_children: int, displacement_scale: float) -> torch.Tensor:
    """[max(k, 1), 3]: where child j starts relative to its parent (see the module docstring)."""
    k = max(max_children, 1)
    angles = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k) + math.pi / 4
    offsets = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], dim=1)
    return offsets * 0.5 * displacement_scale


@dataclass(frozen=True)
class SpawnPlan:
    """How one step's ``n`` stepped flows split: what each asked for and got, and what its
    children start with. The children become rows of the next state in
    ``step_phases.rewrite_state``, which reads their values with :func:`child_values`."""

    requested: torch.Tensor      # [n] long: children each stepped flow asked for
    granted: torch.Tensor        # [n] long: children it got within the budget
    parent_energy: torch.Tensor  # [n] the energy each stepped flow carries on with
    child_energy: torch.Tensor   # [n] the energy each of its children starts with
    first_rank: torch.Tensor     # [n] long: the rank of its first child (the requests before it)
    per_flow: int                # K = max(max_spawn_per_step, 1): children a flow may have

    @property
    def total_granted(self) -> torch.Tensor:
        return self.granted.sum()


@dataclass(frozen=True)
class ChildValues:
    """What children start with, one row per (parent, child index) asked about."""

    pos: torch.Tensor       # [m, 3] half a step from the parent, in its own direction
    energy: torch.Tensor    # [m] its share of the parent's energy
    payload: torch.Tensor   # [m, E] its birth cell's part of the input
    lineage: torch.Tensor   # [m] long: its lineage key
    rank: torch.Tensor      # [m] long: its rank among this step's requests (its id offset)


def plan_children(share: torch.Tensor, eligible: torch.Tensor, energy: torch.Tensor, lineage: torch.Tensor,
                  room: torch.Tensor, step: int, max_children: int) -> SpawnPlan:
    """How many children each of ``n`` stepped flows gets, on the device, with no wait.

    ``share`` [n] is the spawn head's energy share, ``eligible`` [n] the flows that may spawn
    (still active, energy above ``spawn_threshold``), ``energy`` their faded energy,
    ``lineage`` their keys; ``room`` [] how many flows the budget still allows after this
    step's terminations."""
    requested = requested_children(share, eligible, lineage, step, max_children)
    before = torch.cumsum(requested, 0) - requested
    granted = (room - before).clamp(min=0).minimum(requested)
    return SpawnPlan(
        requested=requested,
        granted=granted,
        parent_energy=torch.where(granted > 0, energy * (1 - share), energy),
        child_energy=energy * share / granted.clamp(min=1),
        first_rank=before,
        per_flow=max(max_children, 1),
    )


def child_values(plan: SpawnPlan, parent: torch.Tensor, index: torch.Tensor, parent_pos: torch.Tensor,
                 parent_lineage: torch.Tensor, step: int, offsets: torch.Tensor,
                 part_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> ChildValues:
    """Child ``index`` of stepped flow ``parent``, per row: ``parent_pos`` and ``parent_lineage``
    are the parents' new positions and keys, row for row; ``part_at(parent, xy)`` gives the
    input part at (x, y) of each parent's sample."""
    pos = (parent_pos + offsets.to(parent_pos.dtype)[index]).clamp(-1.0, 1.0)
    return ChildValues(pos=pos, energy=plan.child_energy[parent], payload=part_at(parent, pos[:, :2]),
                       lineage=child_keys(parent_lineage, step, index), rank=plan.first_rank[parent] + index)
