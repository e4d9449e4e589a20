"""A straightforward per-flow implementation of FlowProcessor.step, the batched step's oracle.

It walks the live flows one by one in Python — the way the original research code updated its
flows — using the same modules and the same rules (termination precedence, spawn ranking
against the room left in the budget, energy split, bilinear deposit; survivors keep their order
and children follow them). ``tests/test_reference_step.py`` checks the
batched step against it at every step of whole batches; ``bench_step.py`` checks it reaches the
same state as the batched step before it compares their speed.
"""

from __future__ import annotations

import math

import torch

from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import FlowState
from energy_flow.core.processor import FlowProcessor

REASON_ACTIVE, REASON_LANDED, REASON_FADED, REASON_TIMED_OUT = 0, 1, 2, 3
MASK32 = (1 << 32) - 1


def mix(a: int, b: int) -> int:
    """energy_flow/core/spawning.py's key mix, in Python integers."""
    return ((((a * 2_654_435_761) & MASK32) ^ ((b * 2_246_822_519) & MASK32)) * 3_266_489_917 & MASK32) >> 1


def dither(key: int, step: int) -> float:
    """A flow's spawn dither at ``step``, from its lineage key."""
    return (mix(key, step) >> 7) / 2**24


@torch.no_grad()
def reference_step(model: FlowProcessor, state: FlowState, field: torch.Tensor,
                   collector: OutputCollector, step: int) -> FlowState:
    c, lat = model.config, model.lattice
    cells = lat.width * lat.height
    s = state
    results = []
    for i in range(s.count):
        pos = s.pos[i:i + 1]
        sample = int(s.sample[i])
        cell = int(lat.nearest_cell(pos[:, :2])[0])
        part = field[sample * cells + cell].unsqueeze(0)
        x = model.neuron(pos, part)
        x = torch.cat([x, s.payload[i:i + 1], s.energy[i:i + 1].unsqueeze(1)], dim=1)
        out = model.carrier(x, s.hidden[i:i + 1], part, s.payload[i:i + 1])
        moved = pos + out.displacement
        new_pos = moved.clamp(-1.0, 1.0)
        energy = float(s.energy[i]) * float(out.retention[0])
        z = float(new_pos[0, 2])
        plane = -1
        if lat.num_planes == 2:
            plane = 0 if z <= -1 + 1e-6 else (1 if z >= 1 - 1e-6 else -1)
        elif z >= 1 - 1e-6:
            plane = 0
        if plane >= 0:
            reason = REASON_LANDED
        elif energy < c.energy_threshold:
            reason = REASON_FADED
        elif step >= c.max_steps:
            reason = REASON_TIMED_OUT
        else:
            reason = REASON_ACTIVE
        if reason == REASON_LANDED or (reason == REASON_TIMED_OUT and c.timeout_policy == "project"):
            target = plane if plane >= 0 else (int(z >= 0) if lat.num_planes == 2 else 0)
            collector.deposit(s.sample[i:i + 1], torch.tensor([target]), new_pos[:, :2],
                              torch.tensor([energy]), out.payload, torch.tensor([True]))
        results.append((i, new_pos[0], energy, out, reason))

    rows: list[dict] = []       # the flows that go on, in their order
    children: list[dict] = []   # then the children, in the order of their ranks
    room = c.resolved_max_active_flows - sum(r[4] == REASON_ACTIVE for r in results)
    k = c.max_spawn_per_step
    next_rank = 0
    for i, new_pos, energy, out, reason in results:
        if reason != REASON_ACTIVE:
            continue
        row = dict(pos=new_pos, energy=energy, payload=out.payload[0], hidden=out.hidden[0],
                   sample=int(s.sample[i]), flow_id=int(s.flow_id[i]), parent_id=int(s.parent_id[i]),
                   age=int(s.age[i]) + 1, birth_step=int(s.birth_step[i]), traced=bool(s.traced[i]),
                   lineage=int(s.lineage[i]))
        rows.append(row)
        if energy <= c.spawn_threshold:
            continue
        frac = float(out.spawn_fraction[0])
        key = int(s.lineage[i])
        want = min(k, math.floor(frac * k + dither(key, step)))
        grant = max(0, min(want, room - next_rank))
        if grant > 0:
            row["energy"] = energy * (1 - frac)
        for kid in range(grant):
            kid_pos = (new_pos + model.child_offsets[kid]).clamp(-1.0, 1.0)
            children.append(dict(
                pos=kid_pos, energy=energy * frac / grant,
                payload=field[row["sample"] * cells + int(lat.nearest_cell(kid_pos[None, :2])[0])],
                hidden=out.hidden[0], sample=row["sample"], flow_id=int(s.next_id) + next_rank + kid,
                parent_id=row["flow_id"], age=0, birth_step=step, traced=row["traced"],
                lineage=mix(mix(key, step), kid)))
        next_rank += want  # ranks count requests, granted or not, like the batched step
    every = rows + children

    def column(name: str, like: torch.Tensor) -> torch.Tensor:
        if not every:
            return like.new_zeros((0, *like.shape[1:]))
        values = [r[name] for r in every]
        if isinstance(values[0], torch.Tensor):
            return torch.stack(values).to(like.dtype)
        return torch.tensor(values, dtype=like.dtype)

    return FlowState(**{name: column(name, getattr(s, name)) for name in
                        ("pos", "energy", "payload", "hidden", "sample", "flow_id", "parent_id", "age",
                         "birth_step", "traced", "lineage")},
                     next_id=s.next_id + len(children))
