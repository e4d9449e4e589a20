"""How many children a flow asks for: its spawn share, rounded stochastically but reproducibly.

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
"""

from __future__ import annotations

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
