"""What the 3D view draws of a batch's flows, built once per batch (vectorised, no loop per flow).

Everything is ordered by the step at which it appears, because the view shows items by step
window (:mod:`app.view.step_visuals`) and the step is a shader uniform: the arrays are
uploaded once per batch, display budget or selection that reaches outside the drawn sample,
and never again while the step changes. The order also makes "what is drawn at step t" a
binary search (counts on screen, picking, hover):

* trajectory **segments**, two points each, shown from the step they end at;
* **heads**, one point per (flow, step after which it is alive), shown during that step only
  (a flow that ends at step t is drawn as a termination at t, not as a head; this matches
  ``aggregates.active`` when the sample covers the whole batch);
* **spawn** points from the child's birth step on, **termination** points from the end step on.

Lattice coordinates stay in [-1, 1]; the view scales the whole scene for display.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.colormaps import ENERGY_RANGE, REASON_STYLE, energy_colors, sample_colors
from app.view.sampling import sample_flows
from app.view.style import SYMBOL_CODES, TRAJECTORY_ALPHA
from energy_flow.trace.telemetry import FlowSample


@dataclass(frozen=True)
class FlowGeometry:
    """The sampled flows of one batch, ready to upload (float32 where it goes to the GPU)."""

    rows: np.ndarray               # [N] rows of FlowSample drawn
    positions: np.ndarray          # [N, T+1, 3] their positions (NaN where absent)
    energy: np.ndarray             # [N, T+1] their energies
    sample_index: np.ndarray       # [N] batch sample of each
    birth_step: np.ndarray         # [N]
    end_step: np.ndarray           # [N]
    vertices: np.ndarray           # [V, 3] float32: every existing (flow, step) point (picking)
    vertex_flow: np.ndarray        # [V] index into ``rows`` of each vertex's flow
    vertex_step: np.ndarray        # [V] step of each vertex
    segment_pos: np.ndarray        # [2S, 3] float32: segment k runs from 2k to 2k+1
    segment_flow: np.ndarray       # [S] index into ``rows``
    segment_step: np.ndarray       # [S] the step each segment ends at, ascending
    segment_colors: dict[str, np.ndarray]  # colour mode → [2S, 4] float32
    segments_until: np.ndarray     # [T+1]: segments ending at or before step t
    head_pos: np.ndarray           # [H, 3] float32: flow positions after each step they are alive
    head_flow: np.ndarray          # [H] index into ``rows``
    head_step: np.ndarray          # [H] ascending
    head_colors: dict[str, np.ndarray]     # colour mode → [H, 4] float32 (opaque)
    heads_start: np.ndarray        # [T+2]: heads of step t are [heads_start[t], heads_start[t+1])
    spawn_pos: np.ndarray          # [K, 3] birth points of children, sorted by birth step
    spawn_flow: np.ndarray         # [K] index into ``rows`` of each spawn point's child
    spawn_step: np.ndarray         # [K] ascending
    spawns_until: np.ndarray       # [T+1]
    end_pos: np.ndarray            # [E, 3] end points of terminated flows, sorted by end step
    end_flow: np.ndarray           # [E] index into ``rows`` of each end point's flow
    end_at: np.ndarray             # [E] their end steps, ascending
    end_reason: np.ndarray         # [E] REASON_* of each
    end_color: np.ndarray          # [E, 4] float32 colour of its reason
    end_symbol: np.ndarray         # [E] float32 symbol code of its reason
    ends_until: np.ndarray         # [T+1]: terminations at or before step t

    @property
    def num_flows(self) -> int:
        return int(self.rows.shape[0])

    def heads_at(self, step: int) -> slice:
        """The heads drawn at ``step`` (a slice of the ``head_*`` arrays)."""
        return slice(int(self.heads_start[step]), int(self.heads_start[step + 1]))

    def alive_at(self, step: int) -> np.ndarray:
        """Mask of drawn flows alive after ``step`` (born at or before it, not yet ended)."""
        return (self.birth_step <= step) & (step < self.end_step) & np.isfinite(self.positions[:, step, 0])


def build_geometry(flows: FlowSample, budget: int, energy_range: tuple[float, float] = ENERGY_RANGE,
                   include: np.ndarray | None = None) -> FlowGeometry:
    """Segments, heads and event points of the sampled flows, each ordered by its step."""
    rows = sample_flows(flows, budget, include)
    pos = flows.positions[rows]
    energy = flows.energy[rows]
    sample = flows.sample_index[rows]
    birth, end, reason = flows.birth_step[rows], flows.end_step[rows], flows.reason[rows]
    n_steps = pos.shape[1]
    all_steps = np.arange(n_steps)
    valid = np.isfinite(pos[..., 0])
    vertex_flow, vertex_step = np.nonzero(valid)    # row-major, the order of pos[valid]

    seg_start, seg_flow = np.nonzero((valid[:, :-1] & valid[:, 1:]).T)   # step-major: sorted by step
    ends = np.stack([seg_start, seg_start + 1], axis=1)                    # [S, 2] steps of both points
    seg_energy = energy[seg_flow[:, None], ends].reshape(-1)
    segment_colors = {
        "energy": _with_alpha(energy_colors(seg_energy, *energy_range), TRAJECTORY_ALPHA),
        "sample": _with_alpha(np.repeat(sample_colors(sample[seg_flow]), 2, axis=0), TRAJECTORY_ALPHA),
    }

    alive = valid & (all_steps >= birth[:, None]) & (all_steps < end[:, None])
    head_step, head_flow = np.nonzero(alive.T)                              # step-major
    head_colors = {"energy": energy_colors(energy[head_flow, head_step], *energy_range),
                   "sample": sample_colors(sample[head_flow])}

    spawned = np.flatnonzero(flows.parent_id[rows] >= 0)
    spawned = spawned[np.argsort(birth[spawned], kind="stable")]
    ended = np.flatnonzero(np.isin(reason, list(REASON_STYLE)))
    ended = ended[np.argsort(end[ended], kind="stable")]
    end_reason = reason[ended]
    codes = np.array(list(REASON_STYLE))              # the three reason codes, not flows
    style_row = np.zeros(int(codes.max()) + 1, np.intp)
    style_row[codes] = np.arange(codes.shape[0])
    style_row = style_row[end_reason]
    palette = np.array([color for _, color, _ in REASON_STYLE.values()], np.float32)
    symbols = np.array([SYMBOL_CODES[sym] for _, _, sym in REASON_STYLE.values()], np.float32)
    segment_step = seg_start + 1
    return FlowGeometry(
        rows=rows, positions=pos, energy=energy, sample_index=sample, birth_step=birth, end_step=end,
        vertices=np.ascontiguousarray(pos[valid], dtype=np.float32), vertex_flow=vertex_flow,
        vertex_step=vertex_step,
        segment_pos=_finite_rows(pos[seg_flow[:, None], ends].reshape(-1, 3)), segment_flow=seg_flow,
        segment_step=segment_step, segment_colors=segment_colors,
        segments_until=np.searchsorted(segment_step, all_steps, side="right"),
        head_pos=_finite_rows(pos[head_flow, head_step]), head_flow=head_flow, head_step=head_step,
        head_colors=head_colors, heads_start=np.searchsorted(head_step, np.arange(n_steps + 1), side="left"),
        spawn_pos=_finite_rows(pos[spawned, birth[spawned]]), spawn_flow=spawned, spawn_step=birth[spawned],
        spawns_until=np.searchsorted(birth[spawned], all_steps, side="right"),
        end_pos=_finite_rows(pos[ended, end[ended]]), end_flow=ended, end_at=end[ended], end_reason=end_reason,
        end_color=palette[style_row], end_symbol=symbols[style_row],
        ends_until=np.searchsorted(end[ended], all_steps, side="right"),
    )


def _finite_rows(points: np.ndarray) -> np.ndarray:
    """float32 copy; telemetry guarantees these points exist, NaN would break bounds."""
    return np.nan_to_num(np.ascontiguousarray(points, dtype=np.float32))


def _with_alpha(colors: np.ndarray, alpha: float) -> np.ndarray:
    out = colors.astype(np.float32, copy=True)
    out[:, 3] = alpha
    return out
