"""BatchTrace: one forward pass's measured figures on the host, and the merge of a batch's parts.

The tracer (:mod:`energy_flow.core.tracing`) produces one :class:`BatchTrace` per forward pass.
A training batch may be several forward passes — micro-batches of ``grad_accumulation_steps``,
and one share per DDP rank — so the trainer merges their traces with :func:`merge_traces`
before anything is derived from them. :class:`~energy_flow.trace.telemetry.FlowStats` (what the
progress bar, the summary and the landed fraction read) and
:class:`~energy_flow.trace.telemetry.BatchTelemetry` (what the app draws and a recording stores)
are both derived from the *merged* trace, so no figure mixes one part with the sum of all.

Batch-level arrays beside the step table merge as their meaning says: deposits per plane cell
add up; the share of samples that reached a cell is a mean over samples (weighted by each
part's samples); the placement energy range is the min of minima and max of maxima; the flows
created add up. The trajectory sample is a *sample*: the first part's, whose samples are the
batch's first ones, with the whole batch's flow count as its population.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from energy_flow.trace.figures import STEP, merge_tables
from energy_flow.trace.telemetry import PERCENTILES, BatchTelemetry, FlowSample, FlowStats, StepAggregates


@dataclass(frozen=True, eq=False)
class StepValues:
    """Per step, the values the percentile figures are taken over (kept only for a batch of
    several parts): the energies of the flows stepped ([n_t]) and their displacements ([n_t, 3])."""

    energies: tuple[np.ndarray, ...]
    deltas: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class BatchTrace:
    """One forward pass (or a merged batch): its step table and, with tracing on, the rest."""

    samples: int                          # samples (batch rows) the trace covers
    table: Mapping[str, np.ndarray]       # step figures by key, [T+1, *trailing]
    total_flows: int                      # flows created: placed + spawned
    lattice_shape: tuple[int, int, int]
    start_mode: str
    plane_z: tuple[float, ...]
    energy_bin_edges: np.ndarray
    detailed: bool = False
    input_energy_range: tuple[float, float] = (float("nan"), float("nan"))
    plane_energy: np.ndarray | None = None    # [P, H, W]
    plane_reached: np.ndarray | None = None   # [P, H, W]
    flows: FlowSample | None = None
    values: StepValues | None = None

    @property
    def num_steps(self) -> int:
        return int(self.table[STEP.active.key].shape[0]) - 1

    def flow_stats(self) -> FlowStats:
        t = self.table
        return FlowStats(
            initial_flows=int(t[STEP.active.key][0]),
            spawned=int(t[STEP.spawn_granted.key].sum()),
            landed=tuple(int(v) for v in t[STEP.landed.key].sum(axis=0)),
            faded=int(t[STEP.faded.key].sum()),
            timed_out=int(t[STEP.timed_out.key].sum()),
            steps=self.num_steps,
            coverage=tuple(float(v) for v in t[STEP.coverage.key][-1]),
            active_per_step=t[STEP.active.key].astype(np.int64),
            requested=int(t[STEP.spawn_requested.key].sum()),
            denied=int(t[STEP.spawn_denied.key].sum()),
        )

    def telemetry(self) -> BatchTelemetry | None:
        """What the app draws; None when tracing was off (the counts alone are no telemetry)."""
        if not self.detailed:
            return None
        t = self.table
        aggregates = {f.key: t[f.key] for f in STEP if f.key != STEP.plane_energy_steps.key}
        return BatchTelemetry(
            lattice_shape=self.lattice_shape, start_mode=self.start_mode, plane_z=self.plane_z,
            input_energy_range=self.input_energy_range,
            aggregates=StepAggregates(energy_bin_edges=self.energy_bin_edges, **aggregates),
            plane_energy=self.plane_energy, plane_reached=self.plane_reached, flows=self.flows,
            total_flows=self.total_flows, plane_energy_steps=t[STEP.plane_energy_steps.key],
        )


def merge_traces(parts: Sequence[BatchTrace]) -> BatchTrace:
    """The whole batch from its parts (micro-batches in order, then ranks in rank order)."""
    if not parts:
        raise ValueError("merge_traces: no parts")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.detailed != first.detailed for p in parts):
        raise ValueError("merge_traces: parts traced with and without detail")
    samples = [p.samples for p in parts]
    table = merge_tables([p.table for p in parts], samples)
    total = sum(p.total_flows for p in parts)
    merged = replace(first, samples=sum(samples), table=table, total_flows=total)
    if not first.detailed:
        return merged
    if any(p.values is None for p in parts):
        raise ValueError("merge_traces: the percentiles of several parts need their pooled values "
                         "(FlowProcessor.batch_parts was not set to the number of parts)")
    values = _pooled_values([p.values for p in parts], len(table[STEP.active.key]))
    table[STEP.energy_percentiles.key], table[STEP.delta_percentiles.key] = _percentiles(values)
    weights = np.asarray(samples, dtype=np.float64)
    reached = sum(p.plane_reached.astype(np.float64) * w for p, w in zip(parts, weights)) / weights.sum()
    flows = first.flows
    if flows is not None:
        flows = replace(flows, total_flows=total)
    return replace(
        merged,
        input_energy_range=(min(p.input_energy_range[0] for p in parts),
                            max(p.input_energy_range[1] for p in parts)),
        plane_energy=sum(p.plane_energy.astype(np.float64) for p in parts).astype(np.float32),
        plane_reached=reached.astype(np.float32),
        flows=flows, values=values,
    )


def _pooled_values(parts: Sequence[StepValues], rows: int) -> StepValues:
    """Each step's values of all parts together (a part that had ended contributes none)."""
    def pool(pick, width: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        out = []
        for t in range(rows):
            chunks = [pick(v)[t] for v in parts if t < len(pick(v))]
            out.append(np.concatenate(chunks) if chunks else np.zeros((0, *width), np.float32))
        return tuple(out)
    return StepValues(energies=pool(lambda v: v.energies, ()), deltas=pool(lambda v: v.deltas, (3,)))


def _percentiles(values: StepValues) -> tuple[np.ndarray, np.ndarray]:
    """The percentile figures of pooled values: [T+1, K] energies, [T+1, 3, K] displacements
    (linear interpolation, as torch.quantile on the device; NaN where a step had no value)."""
    q = np.asarray(PERCENTILES) / 100.0
    energy = np.stack([np.quantile(e, q) if e.size else np.full(q.size, np.nan) for e in values.energies])
    delta = np.stack([np.quantile(d, q, axis=0).T if d.shape[0] else np.full((3, q.size), np.nan)
                      for d in values.deltas])
    return energy.astype(np.float32), delta.astype(np.float32)
