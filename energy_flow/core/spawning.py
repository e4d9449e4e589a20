"""How many children a flow asks for: its spawn share, rounded stochastically but reproducibly.

The spawn head gives each flow a share ``s`` in (0, 1) of its energy to hand to children; with
``k = max_spawn_per_step`` the flow asks for ``floor(s·k + u)`` children, where ``u`` in [0, 1)
is the flow's *dither* at this step. Over flows, ``u`` is spread evenly over [0, 1), so the
expected number of children is ``s·k`` per eligible flow and step — the count follows the share
smoothly, like a draw with probability ``s`` (k = 1). A single threshold for every flow,
``floor(s·(k + 1))``, stopped spawning altogether once training moved every share below ½: then
no flow split its energy, the spawn head left the loss's graph and got no gradient
(docs/health.md).

The dither is a hash of the flow's id and the step, not a random draw: the same flow at the same
step always gets the same ``u``, so recomputing a step in backward (``checkpoint_steps``)
repeats its spawns exactly, with no random-number state to carry, and a run is reproducible
from its seed.
"""

from __future__ import annotations

import torch

#: Knuth's multiplicative hash: an odd 32-bit multiplier close to 2³²/φ, so consecutive ids
#: land ≈ 0.618 apart modulo 1 — an even spread over [0, 1) for any run of ids. The step adds
#: another odd constant, so one flow's dithers at successive steps are unrelated.
_ID_MULTIPLIER = 2_654_435_761
_STEP_MULTIPLIER = 2_246_822_519
_MODULUS = 1 << 32


def spawn_dither(flow_id: torch.Tensor, step: int) -> torch.Tensor:
    """[n] float32 in [0, 1): each flow's dither at ``step`` (flow ids are below 2³¹). The
    hash's top 24 bits, which float32 holds exactly (all 32 could round up to 1.0)."""
    key = (flow_id * _ID_MULTIPLIER + step * _STEP_MULTIPLIER) % _MODULUS
    return (key >> 8).to(torch.float32) / float(1 << 24)


def requested_children(share: torch.Tensor, eligible: torch.Tensor, flow_id: torch.Tensor, step: int,
                       max_children: int) -> torch.Tensor:
    """[n] long: children each flow asks for — ``floor(share·k + dither)`` where ``eligible``,
    else 0. A NaN share asks for none (it would otherwise become a huge negative count and
    corrupt every flow's rank in the budget)."""
    want = (share.detach().nan_to_num(0.0) * max_children + spawn_dither(flow_id, step)).floor()
    return torch.where(eligible, want.long().clamp(0, max_children), torch.zeros_like(flow_id))
