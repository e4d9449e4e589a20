"""Per-step telemetry, computed on the model's device over all flows.

Every step measures the step figures declared in :data:`energy_flow.trace.figures.STEP` and
packs them into one row (a device tensor) by the declarations' layout; the traced flows add
their points. Nothing leaves the device until :meth:`StepTracer.finish`, which concatenates
everything into one float64 buffer, copies it to the host in a single transfer and unpacks it
by the same layout into a :class:`~energy_flow.trace.batch_trace.BatchTrace` — from which the
trainer derives the batch's flow statistics and telemetry after merging micro-batches and ranks.

Counts (active, spawns, terminations, coverage) are always kept: the trainer's flow statistics
come from them. The heavier parts — energy histograms, percentiles, displacement ranges, the
share of flows that did not move, head saturation, per-step plane deposits and the trajectory
sample — are only computed when tracing is on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.step_phases import StepOutcome
from energy_flow.trace.batch_trace import BatchTrace, StepValues
from energy_flow.trace.figures import STEP, Dims, RowLayout, step_figures
from energy_flow.trace.telemetry import (PERCENTILES, REASON_ACTIVE, REASON_FADED, REASON_LANDED,
                                         REASON_TIMED_OUT, SATURATION_MARGIN, SATURATION_NAMES,
                                         STILL_EPSILON, FlowSample)


class StepTracer:
    def __init__(self, config: EnergyConfig, lattice: EnergyLattice, batch: int, detailed: bool,
                 device: torch.device, keep_values: bool = False):
        self.config = config
        self.lattice = lattice
        self.batch = batch
        self.detailed = detailed
        self.device = device
        self.planes = lattice.num_planes
        self.bins = config.energy_hist_bins
        self.q = torch.tensor([p / 100.0 for p in PERCENTILES], device=device)
        cells = lattice.width * lattice.height
        self.traced_samples = max(1, min(batch, config.trace_max_flows // cells)) if detailed else 0
        dims = Dims(planes=self.planes, bins=self.bins, height=lattice.height, width=lattice.width)
        self.layout = RowLayout(step_figures(detailed), dims)
        self._rows: list[torch.Tensor] = []
        self._meta: list[torch.Tensor] = []    # [k, 4]: flow id, parent id, sample, birth step
        self._points: list[torch.Tensor] = []  # [k, 7]: flow id, step, x, y, z, energy, reason
        self._input_energy: torch.Tensor | None = None
        # Per step, the energies and displacements the percentiles are taken over: kept only when
        # the batch has several parts, whose percentiles must be recomputed from pooled values.
        self.keep_values = keep_values and detailed
        self._energies: list[torch.Tensor] = []
        self._deltas: list[torch.Tensor] = []

    # ------------------------------------------------------------------ measurement
    def _counts(self, active: torch.Tensor, requested, granted, landed, faded, timed_out,
                collector: OutputCollector, active_energy: torch.Tensor) -> dict[str, torch.Tensor]:
        """The always-measured step figures (declared in :data:`energy_flow.trace.figures.STEP`)."""
        deposited = collector.energy.detach().view(self.batch, self.planes, -1).sum(dim=(0, 2))
        return {STEP.active.key: active, STEP.spawn_requested.key: requested,
                STEP.spawn_granted.key: granted, STEP.spawn_denied.key: requested - granted,
                STEP.faded.key: faded, STEP.timed_out.key: timed_out,
                STEP.active_energy.key: active_energy, STEP.landed.key: landed,
                STEP.coverage.key: collector.reached().float().mean(dim=(0, 2)),
                STEP.deposited_energy.key: deposited}

    def _details(self, energy: torch.Tensor, delta: torch.Tensor | None, clamped: torch.Tensor | None,
                 moved: torch.Tensor | None, out: CarrierOutput | None,
                 collector: OutputCollector) -> dict[str, torch.Tensor]:
        """The step figures measured only with tracing on."""
        e = energy.detach().float()
        nan3 = torch.full((3,), float("nan"), device=e.device)
        if self.keep_values:
            self._energies.append(e)
            self._deltas.append(delta.detach().float() if delta is not None else e.new_zeros((0, 3)))
        values = {STEP.energy_hist.key: torch.histc(e, bins=self.bins, min=0.0, max=1.0),
                  STEP.energy_percentiles.key: torch.quantile(e, self.q),
                  STEP.plane_energy_steps.key: collector.energy.detach().view(self.batch, self.planes, -1).sum(0)}
        if delta is None:   # the placement row: nothing has moved yet
            nan = torch.tensor(float("nan"), device=e.device)
            values.update({STEP.delta_min.key: nan3, STEP.delta_max.key: nan3,
                           STEP.delta_percentiles.key: torch.full((3, len(PERCENTILES)), float("nan"),
                                                                  device=e.device),
                           STEP.clamp_fraction.key: nan, STEP.still_fraction.key: nan,
                           STEP.saturation.key: torch.full((len(SATURATION_NAMES),), float("nan"),
                                                           device=e.device)})
            return values
        d = delta.detach().float()
        values.update({
            STEP.delta_min.key: d.min(dim=0).values, STEP.delta_max.key: d.max(dim=0).values,
            STEP.delta_percentiles.key: torch.quantile(d, self.q, dim=0).T,   # [3, K] axis-major
            STEP.clamp_fraction.key: clamped.float().mean(),
            STEP.still_fraction.key: (moved.detach().abs().amax(dim=1) < STILL_EPSILON).float().mean(),
            STEP.saturation.key: self._saturation(out),
        })
        return values

    def _row(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([v.to(torch.float64) for v in self.layout.parts(values)])

    def _saturation(self, out: CarrierOutput) -> torch.Tensor:
        """[5] shares of head outputs pinned at their limits (columns SATURATION_NAMES)."""
        m = SATURATION_MARGIN

        def sigmoid_pinned(v: torch.Tensor) -> torch.Tensor:
            return (v < m) | (v > 1.0 - m)

        def tanh_pinned(v: torch.Tensor) -> torch.Tensor:
            return v.abs() > 1.0 - m

        unit = out.displacement_unit.detach()
        if self.config.start_mode == "input_face":  # Δz is a sigmoid there (flows only move forward)
            disp = torch.cat([tanh_pinned(unit[:, :2]), sigmoid_pinned(unit[:, 2:])], dim=1)
        else:
            disp = tanh_pinned(unit)
        shares = [sigmoid_pinned(out.retention.detach()), sigmoid_pinned(out.spawn_fraction.detach()),
                  disp, tanh_pinned(out.payload.detach()), tanh_pinned(out.hidden.detach())]
        return torch.stack([s.float().mean() for s in shares])

    def _count(self, state: FlowState) -> torch.Tensor:
        """The live flows, as a device scalar like every other count: the rows, filled in on the
        device (``torch.tensor`` of a host number would be a copy, which waits on a GPU)."""
        return torch.full((), state.count, device=self.device, dtype=torch.long)

    def record_placement(self, state: FlowState, collector: OutputCollector) -> None:
        zero = torch.zeros((), device=self.device, dtype=torch.long)
        energy = state.energy.detach()
        self._input_energy = torch.stack([energy.min(), energy.max()])
        values = self._counts(self._count(state), zero, zero,
                              torch.zeros(self.planes, device=self.device, dtype=torch.long),
                              zero, zero, collector, energy.sum())
        if self.detailed:
            values.update(self._details(energy, None, None, None, None, collector))
            traced = torch.nonzero(state.traced).squeeze(1)
            self._meta.append(torch.stack([state.flow_id[traced], state.parent_id[traced],
                                           state.sample[traced], state.birth_step[traced]], 1).double())
            self._points.append(self._point_rows(state.flow_id[traced], 0, state.pos[traced],
                                                 state.energy[traced],
                                                 torch.full_like(traced, REASON_ACTIVE)))
        self._rows.append(self._row(values))

    def _point_rows(self, ids, step: int, pos, energy, reason) -> torch.Tensor:
        step_col = torch.full_like(ids, step)
        return torch.cat([ids.unsqueeze(1).double(), step_col.unsqueeze(1).double(),
                          pos.detach().double(), energy.detach().double().unsqueeze(1),
                          reason.unsqueeze(1).double()], dim=1)

    def record_step(self, step: int, outcome: StepOutcome) -> None:
        """Called once per step, after the update, terminations and spawns are applied.

        The flows stepped this time are described by their ids (taken before the update, since
        the new state holds the survivors only), new position, the energy they carry on with
        (after fading and after handing a share to children), displacement (the model's,
        unclamped), ``moved`` (the change of the clamped position), clamp flag and termination
        reason; ``born`` marks the new state's rows that are children; ``carrier`` the heads'
        outputs (saturation).
        """
        state, ended, movement = outcome.state, outcome.termination, outcome.movement
        reason, collector = ended.reason, outcome.collector
        landed = torch.zeros(self.planes, device=self.device, dtype=torch.long)
        landed = landed.index_add(0, ended.landed_plane.clamp(min=0), (reason == REASON_LANDED).long())
        faded = (reason == REASON_FADED).sum()
        timed_out = (reason == REASON_TIMED_OUT).sum()
        values = self._counts(self._count(state), outcome.spawns.requested.sum(), outcome.spawns.granted.sum(),
                              landed, faded, timed_out, collector, state.energy.detach().sum())
        if self.detailed:
            values.update(self._details(outcome.kept_energy, outcome.carrier.displacement, movement.clamped,
                                        movement.moved, outcome.carrier, collector))
            sel = torch.nonzero(outcome.stepped_traced).squeeze(1)
            self._points.append(self._point_rows(outcome.stepped_ids[sel], step, movement.pos[sel],
                                                 outcome.kept_energy[sel], reason[sel]))
            kids = torch.nonzero(outcome.born & state.traced).squeeze(1)
            if kids.numel():
                self._meta.append(torch.stack([state.flow_id[kids], state.parent_id[kids],
                                               state.sample[kids], state.birth_step[kids]], 1).double())
                self._points.append(self._point_rows(state.flow_id[kids], step, state.pos[kids],
                                                     state.energy[kids],
                                                     torch.full_like(kids, REASON_ACTIVE)))
        self._rows.append(self._row(values))

    # ------------------------------------------------------------------ one transfer
    def finish(self, collector: OutputCollector, total_flows: torch.Tensor) -> BatchTrace:
        """Copy everything to the host in one transfer and unpack it by the figures' layout."""
        rows = torch.stack(self._rows)                     # [T+1, layout.width]
        parts = [rows.reshape(-1), total_flows.double().reshape(1)]
        if self.detailed:
            reached = collector.reached().float().mean(dim=0)                       # [P, H·W]
            plane_energy = collector.energy.detach().view(self.batch, self.planes, -1).sum(0)
            meta = torch.cat(self._meta)
            points = torch.cat(self._points)
            parts += [self._input_energy.double(), reached.reshape(-1).double(),
                      plane_energy.reshape(-1).double(), meta.reshape(-1), points.reshape(-1)]
            if self.keep_values:
                counts = torch.tensor([[v.shape[0] for v in self._energies], [v.shape[0] for v in self._deltas]])
                parts += [counts.reshape(-1).to(self.device, torch.float64),
                          torch.cat(self._energies).double(), torch.cat(self._deltas).reshape(-1).double()]
        sizes = [p.numel() for p in parts]
        host = torch.cat(parts).cpu().numpy()              # the single device → host transfer
        chunks = np.split(host, np.cumsum(sizes)[:-1])
        table = self.layout.unpack(chunks[0].reshape(rows.shape))
        total = int(chunks[1][0])
        lat = self.lattice
        trace = BatchTrace(samples=self.batch, table=table, total_flows=total, lattice_shape=lat.shape,
                           start_mode=self.config.start_mode, plane_z=tuple(lat.plane_z),
                           energy_bin_edges=np.linspace(0.0, 1.0, self.bins + 1, dtype=np.float32))
        if not self.detailed:
            return trace
        input_range, reached, plane_energy, meta, points = chunks[2:7]
        values = None
        if self.keep_values:
            counts = chunks[7].reshape(2, -1).astype(np.int64)
            values = StepValues(energies=tuple(np.split(chunks[8].astype(np.float32), np.cumsum(counts[0])[:-1])),
                                deltas=tuple(np.split(chunks[9].reshape(-1, 3).astype(np.float32),
                                                      np.cumsum(counts[1])[:-1])))
        shape = (self.planes, lat.height, lat.width)
        return replace(trace, detailed=True,
                       input_energy_range=(float(input_range[0]), float(input_range[1])),
                       plane_energy=plane_energy.reshape(shape).astype(np.float32),
                       plane_reached=reached.reshape(shape).astype(np.float32),
                       flows=self._flow_sample(meta.reshape(-1, 4), points.reshape(-1, 7), len(rows) - 1, total),
                       values=values)

    def _flow_sample(self, meta: np.ndarray, points: np.ndarray, steps: int, total: int) -> FlowSample:
        # Keep whole samples, so every kept flow's parent and children are kept too: the first
        # samples whose flows (children included) fit in trace_max_flows, and at least one.
        per_sample = np.bincount(meta[:, 2].astype(np.int64), minlength=self.traced_samples)
        fits = np.cumsum(per_sample) <= self.config.trace_max_flows
        kept_samples = max(1, int(fits.sum()))
        meta = meta[meta[:, 2] < kept_samples]
        meta = meta[np.argsort(meta[:, 0], kind="stable")]
        ids = meta[:, 0].astype(np.int64)
        f = ids.shape[0]
        pid = points[:, 0].astype(np.int64)
        where = np.searchsorted(ids, pid)
        keep = (where < f) & (ids[np.minimum(where, f - 1)] == pid)
        row, step = where[keep], points[keep, 1].astype(np.int64)
        positions = np.full((f, steps + 1, 3), np.nan, dtype=np.float32)
        energy = np.full((f, steps + 1), np.nan, dtype=np.float32)
        positions[row, step] = points[keep, 2:5]
        energy[row, step] = points[keep, 5]
        reason = np.zeros(f, dtype=np.int8)
        end_step = np.full(f, steps, dtype=np.int32)
        ended = points[keep, 6] != REASON_ACTIVE
        reason[row[ended]] = points[keep, 6][ended].astype(np.int8)
        end_step[row[ended]] = step[ended]
        return FlowSample(
            flow_id=ids,
            parent_id=meta[:, 1].astype(np.int64),
            sample_index=meta[:, 2].astype(np.int32),
            birth_step=meta[:, 3].astype(np.int32),
            end_step=end_step,
            reason=reason,
            positions=positions,
            energy=energy,
            total_flows=total,
            traced_samples=kept_samples,
        )
