"""Per-step telemetry, computed on the model's device over all flows.

Every step appends one fixed-length row of statistics (a device tensor) and, for the traced
flows, their points. Nothing leaves the device until :meth:`StepTracer.finish`, which
concatenates everything into one float64 buffer and copies it to the host in a single
transfer, then unpacks it into the read-only dataclasses of :mod:`energy_flow.trace.telemetry`.

Counts (active, spawns, terminations, coverage) are always kept: the trainer's flow statistics
come from them. The heavier parts — energy histograms, percentiles, displacement ranges, the
share of flows that did not move, head saturation, per-step plane deposits and the trajectory
sample — are only computed when tracing is on.
"""

from __future__ import annotations

import numpy as np
import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.step_phases import StepOutcome
from energy_flow.trace.telemetry import (PERCENTILES, REASON_ACTIVE, REASON_FADED, REASON_LANDED,
                                         REASON_TIMED_OUT, SATURATION_MARGIN, SATURATION_NAMES,
                                         STILL_EPSILON, BatchTelemetry, FlowSample, FlowStats,
                                         StepAggregates)


class StepTracer:
    def __init__(self, config: EnergyConfig, lattice: EnergyLattice, batch: int, detailed: bool,
                 device: torch.device):
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
        self._rows: list[torch.Tensor] = []
        self._meta: list[torch.Tensor] = []    # [k, 4]: flow id, parent id, sample, birth step
        self._points: list[torch.Tensor] = []  # [k, 7]: flow id, step, x, y, z, energy, reason
        self._input_energy: torch.Tensor | None = None

    # ------------------------------------------------------------------ recording
    def _counts(self, active: torch.Tensor, requested, granted, landed, faded, timed_out,
                collector: OutputCollector, active_energy: torch.Tensor) -> torch.Tensor:
        reached = collector.reached().float().mean(dim=(0, 2))               # [P]
        deposited = collector.energy.detach().view(self.batch, self.planes, -1).sum(dim=(0, 2))
        scalars = torch.stack([active, requested, granted, requested - granted, faded, timed_out,
                               active_energy]).to(torch.float64)
        return torch.cat([scalars, landed.to(torch.float64), reached.to(torch.float64),
                          deposited.to(torch.float64)])

    def _details(self, energy: torch.Tensor, delta: torch.Tensor | None, clamped: torch.Tensor | None,
                 moved: torch.Tensor | None, out: CarrierOutput | None,
                 collector: OutputCollector) -> torch.Tensor:
        e = energy.detach().float()
        hist = torch.histc(e, bins=self.bins, min=0.0, max=1.0)
        e_pct = torch.quantile(e, self.q)
        plane = collector.energy.detach().view(self.batch, self.planes, -1).sum(0).reshape(-1)
        if delta is None:
            nan = torch.full((3 + 3 + 3 * len(PERCENTILES) + 1 + 1 + len(SATURATION_NAMES),),
                             float("nan"), device=e.device)
            return torch.cat([hist, e_pct, nan, plane.float()]).to(torch.float64)
        d = delta.detach().float()
        d_pct = torch.quantile(d, self.q, dim=0).T.reshape(-1)  # [3·len(PERCENTILES)] axis-major
        still = (moved.detach().abs().amax(dim=1) < STILL_EPSILON).float().mean().reshape(1)
        return torch.cat([hist, e_pct, d.min(dim=0).values, d.max(dim=0).values, d_pct,
                          clamped.float().mean().reshape(1), still, self._saturation(out),
                          plane.float()]).to(torch.float64)

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

    def record_placement(self, state: FlowState, collector: OutputCollector) -> None:
        n0 = state.alive.sum()
        zero = torch.zeros((), device=self.device, dtype=torch.long)
        energy = state.energy.detach()
        # masked reductions, not ``energy[alive]``: a boolean index would wait for the device
        self._input_energy = torch.stack([energy.masked_fill(~state.alive, float("inf")).min(),
                                          energy.masked_fill(~state.alive, float("-inf")).max()])
        row = self._counts(n0, zero, zero, torch.zeros(self.planes, device=self.device, dtype=torch.long),
                           zero, zero, collector, (energy * state.alive).sum())
        if self.detailed:
            e0 = energy[state.alive]
            row = torch.cat([row, self._details(e0, None, None, None, None, collector)])
            traced = torch.nonzero(state.traced).squeeze(1)
            self._meta.append(torch.stack([state.flow_id[traced], state.parent_id[traced],
                                           state.sample[traced], state.birth_step[traced]], 1).double())
            self._points.append(self._point_rows(state.flow_id[traced], 0, state.pos[traced],
                                                 state.energy[traced],
                                                 torch.full_like(traced, REASON_ACTIVE)))
        self._rows.append(row)

    def _point_rows(self, ids, step: int, pos, energy, reason) -> torch.Tensor:
        step_col = torch.full_like(ids, step)
        return torch.cat([ids.unsqueeze(1).double(), step_col.unsqueeze(1).double(),
                          pos.detach().double(), energy.detach().double().unsqueeze(1),
                          reason.unsqueeze(1).double()], dim=1)

    def record_step(self, step: int, outcome: StepOutcome) -> None:
        """Called once per step, after the update, terminations and spawns are applied.

        The flows stepped this time are described by their ids (taken before the update, since
        a child may reuse the slot of a flow that just ended), new position, the energy they
        carry on with (after fading and after handing a share to children), displacement (the
        model's, unclamped), ``moved`` (the change of the clamped position), clamp flag and
        termination reason; the spawn plan's ``slot`` are the slots children were written to
        (``state.capacity`` marks "no child"); ``carrier`` the heads' outputs (saturation).
        """
        state, ended, movement = outcome.state, outcome.termination, outcome.movement
        reason, collector = ended.reason, outcome.collector
        landed = torch.zeros(self.planes, device=self.device, dtype=torch.long)
        landed = landed.index_add(0, ended.landed_plane.clamp(min=0), (reason == REASON_LANDED).long())
        faded = (reason == REASON_FADED).sum()
        timed_out = (reason == REASON_TIMED_OUT).sum()
        active = state.alive.sum()
        active_energy = (state.energy.detach() * state.alive).sum()
        row = self._counts(active, outcome.spawns.requested.sum(), outcome.spawns.granted.sum(), landed,
                           faded, timed_out, collector, active_energy)
        if self.detailed:
            row = torch.cat([row, self._details(outcome.kept_energy, outcome.carrier.displacement,
                                                movement.clamped, movement.moved, outcome.carrier, collector)])
            sel = torch.nonzero(outcome.stepped_traced).squeeze(1)
            self._points.append(self._point_rows(outcome.stepped_ids[sel], step, movement.pos[sel],
                                                 outcome.kept_energy[sel], reason[sel]))
            kids = outcome.spawns.slot[outcome.spawns.slot < state.capacity]
            kids = kids[state.traced[kids]]
            if kids.numel():
                self._meta.append(torch.stack([state.flow_id[kids], state.parent_id[kids],
                                               state.sample[kids], state.birth_step[kids]], 1).double())
                self._points.append(self._point_rows(state.flow_id[kids], step, state.pos[kids],
                                                     state.energy[kids],
                                                     torch.full_like(kids, REASON_ACTIVE)))
        self._rows.append(row)

    # ------------------------------------------------------------------ one transfer
    def finish(self, collector: OutputCollector, total_flows: torch.Tensor
               ) -> tuple[FlowStats, BatchTelemetry | None]:
        rows = torch.stack(self._rows)                     # [T+1, K]
        parts = [rows.reshape(-1), total_flows.double().reshape(1)]
        if self.detailed:
            self.reached_cells = collector.reached().float().mean(dim=0)            # [P, H·W]
            plane_energy = collector.energy.detach().view(self.batch, self.planes, -1).sum(0)
            meta = torch.cat(self._meta)
            points = torch.cat(self._points)
            parts += [self._input_energy.double(), self.reached_cells.reshape(-1).double(),
                      plane_energy.reshape(-1).double(), meta.reshape(-1), points.reshape(-1)]
        sizes = [p.numel() for p in parts]
        host = torch.cat(parts).cpu().numpy()              # the single device → host transfer
        chunks = np.split(host, np.cumsum(sizes)[:-1])
        table = chunks[0].reshape(rows.shape)
        total = int(chunks[1][0])
        stats = self._flow_stats(table, total)
        if not self.detailed:
            return stats, None
        return stats, self._telemetry(table, total, *chunks[2:])

    def _columns(self, table: np.ndarray) -> dict[str, np.ndarray]:
        p, b = self.planes, self.bins
        names = [("active", 1), ("requested", 1), ("granted", 1), ("denied", 1), ("faded", 1),
                 ("timed_out", 1), ("active_energy", 1), ("landed", p), ("coverage", p),
                 ("deposited", p)]
        if self.detailed:
            k = len(PERCENTILES)
            cells = self.lattice.width * self.lattice.height
            names += [("hist", b), ("e_pct", k), ("d_min", 3), ("d_max", 3), ("d_pct", 3 * k),
                      ("clamp", 1), ("still", 1), ("saturation", len(SATURATION_NAMES)),
                      ("plane_steps", p * cells)]
        out, col = {}, 0
        for name, width in names:
            block = table[:, col:col + width]
            out[name] = block[:, 0] if width == 1 and name not in ("landed", "coverage", "deposited",
                                                                   "saturation") else block
            col += width
        return out

    def _flow_stats(self, table: np.ndarray, total: int) -> FlowStats:
        c = self._columns(table)
        initial = int(c["active"][0])
        return FlowStats(
            initial_flows=initial,
            spawned=int(c["granted"].sum()),
            landed=tuple(int(v) for v in c["landed"].sum(axis=0)),
            faded=int(c["faded"].sum()),
            timed_out=int(c["timed_out"].sum()),
            steps=table.shape[0] - 1,
            coverage=tuple(float(v) for v in c["coverage"][-1]),
            active_per_step=c["active"].astype(np.int64),
        )

    def _telemetry(self, table, total, input_range, reached, plane_energy, meta, points) -> BatchTelemetry:
        c = self._columns(table)
        lat, k = self.lattice, len(PERCENTILES)
        steps = table.shape[0] - 1
        shape = (self.planes, lat.height, lat.width)
        agg = StepAggregates(
            active=c["active"].astype(np.int64),
            spawn_requested=c["requested"].astype(np.int64),
            spawn_granted=c["granted"].astype(np.int64),
            spawn_denied=c["denied"].astype(np.int64),
            landed=c["landed"].astype(np.int64),
            faded=c["faded"].astype(np.int64),
            timed_out=c["timed_out"].astype(np.int64),
            energy_hist=c["hist"].astype(np.int64),
            energy_bin_edges=np.linspace(0.0, 1.0, self.bins + 1, dtype=np.float32),
            energy_percentiles=c["e_pct"].astype(np.float32),
            delta_min=c["d_min"].astype(np.float32),
            delta_max=c["d_max"].astype(np.float32),
            delta_percentiles=c["d_pct"].reshape(-1, 3, k).astype(np.float32),
            clamp_fraction=c["clamp"].astype(np.float32),
            coverage=c["coverage"].astype(np.float32),
            deposited_energy=c["deposited"].astype(np.float32),
            active_energy=c["active_energy"].astype(np.float32),
            still_fraction=c["still"].astype(np.float32),
            saturation=c["saturation"].astype(np.float32),
        )
        return BatchTelemetry(
            lattice_shape=lat.shape,
            start_mode=self.config.start_mode,
            plane_z=tuple(lat.plane_z),
            input_energy_range=(float(input_range[0]), float(input_range[1])),
            aggregates=agg,
            plane_energy=plane_energy.reshape(shape).astype(np.float32),
            plane_reached=reached.reshape(shape).astype(np.float32),
            flows=self._flow_sample(meta.reshape(-1, 4), points.reshape(-1, 7), steps, total),
            total_flows=total,
            plane_energy_steps=c["plane_steps"].reshape(-1, *shape).astype(np.float32),
        )

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
