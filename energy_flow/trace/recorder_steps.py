"""StepAccumulator: FlowRecorder's per-step aggregation, so a batch is never held whole.

Why per step: another model's batch may hold many thousands of flows over hundreds of steps;
keeping every step's arrays until the batch ends (as the first recorder did) grows without
bound. Here each ``add`` turns one step's flows into that step's aggregate row at once and
keeps only

* one row of state per flow (id, parent, sample, birth, end, last position and energy, reason),
  which the next step needs to tell moves, ends, revivals and vanished flows apart;
* the points of the flows in the traced samples (``traced_samples``, default all samples);
* the batch's energies when the histogram range must come from the data (``energy_range``
  None; 4 bytes per flow and step) — with a fixed ``energy_range`` nothing per flow is kept.

All numpy, vectorised over the step's flows (no per-flow Python loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energy_flow.trace.telemetry import (PERCENTILES, REASON_FADED, REASON_LANDED, REASON_TIMED_OUT,
                                         SATURATION_NAMES, STILL_EPSILON, BatchTelemetry, FlowSample,
                                         StepAggregates)


@dataclass(frozen=True)
class StepRecord:
    """One step's flows as the model reported them (validated by FlowRecorder.record_step)."""

    ids: np.ndarray         # [N] int64
    positions: np.ndarray   # [N, 3] float32
    energies: np.ndarray    # [N] float32
    parents: np.ndarray     # [N] int64
    alive: np.ndarray       # [N] bool
    samples: np.ndarray     # [N] int64
    reasons: np.ndarray     # [N] int64, -1 where the model gave none
    requested: int | None
    denied: int | None


@dataclass(frozen=True)
class RecorderGeometry:
    """What the recorder knows of the lattice and how to bin and derive."""

    lattice_shape: tuple[int, int, int]
    plane_z: tuple[float, ...]
    start_mode: str
    bins: int
    plane_tolerance: float
    energy_range: tuple[float, float] | None
    reason_names: tuple[str, ...]
    traced_samples: int | None


class StepAccumulator:
    """Aggregates of one batch, built one step at a time (see the module docstring)."""

    def __init__(self, geo: RecorderGeometry, where: str):
        self.geo = geo
        self.where = where
        self.t = -1
        self.rows: dict[str, list] = {name: [] for name in (
            "active", "active_energy", "granted", "requested", "denied", "faded", "timed_out", "landed",
            "hist", "e_pct", "d_min", "d_max", "d_pct", "clamp", "still", "coverage", "deposited",
            "plane_steps")}
        self._k = len(PERCENTILES)
        self._energies: list[np.ndarray] = []          # per step, only without a fixed range
        # per-flow state, insertion order
        self.ids = np.zeros(0, np.int64)
        self.parent = np.zeros(0, np.int64)
        self.sample = np.zeros(0, np.int64)
        self.birth = np.zeros(0, np.int64)
        self.end = np.zeros(0, np.int64)               # -1 while alive
        self.reason = np.zeros(0, np.int64)            # -1 while alive
        self.inferred_off_plane = np.zeros(0, bool)    # faded unless it ended at the last step
        self.pos = np.zeros((0, 3), np.float32)
        self.energy = np.zeros(0, np.float32)
        self._sorted_ids = np.zeros(0, np.int64)
        self._order = np.zeros(0, np.int64)
        self.samples = 0
        self.plane_energy: np.ndarray | None = None    # [P, H, W] float64, cumulative
        self.reached: np.ndarray | None = None         # [S, P, H, W] bool
        self.input_range = (0.0, 0.0)
        self._points: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------ lookup
    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into the per-flow state or -1, known mask) of ``ids``."""
        n = self._sorted_ids.shape[0]
        if n == 0:
            return np.full(ids.shape, -1, np.int64), np.zeros(ids.shape, bool)
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), n - 1)
        known = self._sorted_ids[at] == ids
        return np.where(known, self._order[at], -1), known

    def _fail(self, message: str) -> None:
        raise ValueError(f"{self.where}: {message}")

    # ------------------------------------------------------------------ one step
    def add(self, s: StepRecord) -> None:
        t = self.t + 1
        idx, known = self._lookup(s.ids)
        if t == 0:
            self._placement_checks(s)
        ended_before = known & (self.end[idx] >= 0) if known.any() else known
        revived = ended_before & s.alive
        if revived.any():
            k = int(np.flatnonzero(revived)[0])
            self._fail(f"flow {s.ids[k]} ended at step {self.end[idx[k]]} but is alive again at step {t}")
        stepped = known & ~ended_before                 # flows that existed before t and lived on
        new = ~known
        if t > 0:
            self._continuity_checks(s, t, stepped, idx, new)
        # the flows this step describes: stepped ones (all placed flows at t = 0) and children
        current = stepped | new
        processed = new if t == 0 else stepped
        ending = current & ~s.alive
        reason, off_plane = self._reasons(s, ending)

        spawns = self._spawn_counts(s, t, int(new.sum()) if t > 0 else 0)   # may refuse the step
        e = s.energies[processed]
        self._energy_row(e, t)                                                # may refuse the step
        for name, value in zip(("granted", "requested", "denied"), spawns):
            self.rows[name].append(value)
        self._motion_row(s, t, processed, idx)
        live = current & s.alive
        self.rows["active"].append(int(live.sum()))
        self.rows["active_energy"].append(float(s.energies[live].astype(np.float64).sum()))
        self.rows["faded"].append(int((reason[ending] == REASON_FADED).sum()))
        self.rows["timed_out"].append(int((reason[ending] == REASON_TIMED_OUT).sum()))
        self._landings(s, t, ending & (reason == REASON_LANDED))

        # per-flow state: children appended, stepped flows updated
        self.pos[idx[stepped]] = s.positions[stepped]
        self.energy[idx[stepped]] = s.energies[stepped]
        done = idx[ending & stepped]
        self.end[done] = t
        self.reason[done] = reason[ending & stepped]
        self.inferred_off_plane[done] = off_plane[ending & stepped]
        if new.any():
            self._append(s, t, new, ending, reason, off_plane)
        self._trace(s, t, current)
        self.t = t

    def _placement_checks(self, s: StepRecord) -> None:
        if s.ids.shape[0] == 0:
            self._fail("step 0 has no flows")
        with_parent = s.parents != -1
        if with_parent.any():
            k = int(np.flatnonzero(with_parent)[0])
            self._fail(f"flow {s.ids[k]} is placed at step 0 but has parent {s.parents[k]}; "
                          "flows on the start plane have parent -1")
        self.samples = int(s.samples.max()) + 1
        w, h, _ = self.geo.lattice_shape
        planes = len(self.geo.plane_z)
        self.plane_energy = np.zeros((planes, h, w), np.float64)
        self.reached = np.zeros((self.samples, planes, h, w), bool)
        self.input_range = (float(s.energies.min()), float(s.energies.max()))

    def _continuity_checks(self, s: StepRecord, t: int, stepped: np.ndarray, idx: np.ndarray,
                           new: np.ndarray) -> None:
        live = self.end < 0
        if int(stepped.sum()) != int(live.sum()):
            seen = np.zeros(self.ids.shape[0], bool)
            seen[idx[stepped]] = True
            k = int(np.flatnonzero(live & ~seen)[0])
            self._fail(f"flow {self.ids[k]} is alive at step {t - 1} but missing at step {t}; "
                          "report it with alive=False at the step it ends")
        for name, given, stored in (("parent id", s.parents, self.parent), ("sample index", s.samples, self.sample)):
            changed = stepped & (given != stored[np.maximum(idx, 0)])
            if changed.any():
                k = int(np.flatnonzero(changed)[0])
                self._fail(f"flow {s.ids[k]} changes its {name} at step {t}")
        orphan = new & (s.parents == -1)
        if orphan.any():
            k = int(np.flatnonzero(orphan)[0])
            self._fail(f"flow {s.ids[k]} appears at step {t} without a parent; "
                          "only step 0 places flows with parent -1")
        _, parent_known = self._lookup(s.parents[new])
        parent_known |= np.isin(s.parents[new], s.ids[new])
        if not parent_known.all():
            k = int(np.flatnonzero(new)[np.flatnonzero(~parent_known)[0]])
            self._fail(f"flow {s.ids[k]} names parent {s.parents[k]}, which is not a flow of this batch")
        unplaced = new & (s.samples >= self.samples)
        if unplaced.any():
            k = int(np.flatnonzero(unplaced)[0])
            self._fail(f"flow {s.ids[k]} serves sample {s.samples[k]}, which placed no flow at step 0")

    def _reasons(self, s: StepRecord, ending: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reason per row (given, else landed on a plane, else provisionally faded) and the rows whose
        reason was inferred off-plane (timed out instead, should this be the last step)."""
        planes = np.asarray(self.geo.plane_z, np.float64)
        z = s.positions[:, 2].astype(np.float64)
        on_plane = (np.abs(z[:, None] - planes[None, :]) <= self.geo.plane_tolerance).any(axis=1)
        inferred = np.where(on_plane, REASON_LANDED, REASON_FADED)
        given = s.reasons >= 0
        reason = np.where(ending, np.where(given, s.reasons, inferred), -1)
        return reason, ending & ~given & ~on_plane

    def _energy_row(self, e: np.ndarray, t: int) -> None:
        rng = self.geo.energy_range
        if rng is not None:
            outside = (e < rng[0]) | (e > rng[1])
            if outside.any():
                self._fail(f"energy {float(e[outside][0])} at step {t} lies outside energy_range {rng}; "
                              "widen it, or leave energy_range=None to bin over the data's range")
            self.rows["hist"].append(np.histogram(e, bins=self.geo.bins, range=rng)[0].astype(np.int64))
        else:
            self._energies.append(e.copy())
        pct = np.percentile(e.astype(np.float64), PERCENTILES) if e.size else np.full(self._k, np.nan)
        self.rows["e_pct"].append(pct)

    def _motion_row(self, s: StepRecord, t: int, processed: np.ndarray, idx: np.ndarray) -> None:
        k = self._k
        if t == 0 or not processed.any():
            for name, shape in (("d_min", (3,)), ("d_max", (3,)), ("d_pct", (3, k)), ("clamp", ()), ("still", ())):
                self.rows[name].append(np.full(shape, np.nan))
            return
        d = s.positions[processed].astype(np.float64) - self.pos[idx[processed]].astype(np.float64)
        self.rows["d_min"].append(d.min(axis=0))
        self.rows["d_max"].append(d.max(axis=0))
        self.rows["d_pct"].append(np.percentile(d, PERCENTILES, axis=0).T)
        self.rows["clamp"].append((np.abs(s.positions[processed]) >= 1.0).any(axis=1).mean())
        self.rows["still"].append((np.abs(d).max(axis=1) < STILL_EPSILON).mean())

    def _spawn_counts(self, s: StepRecord, t: int, granted: int) -> tuple[int, int, int]:
        """(granted, requested, denied) of the step, checked against what the model reported."""
        requested, denied = granted, 0
        if s.requested is not None and s.denied is not None and s.requested - s.denied != granted:
            self._fail(f"step {t}: spawn_requested ({s.requested}) − spawn_denied ({s.denied}) must equal "
                          f"the children that appeared ({granted})")
        if s.requested is not None:
            if s.requested < granted:
                self._fail(f"step {t}: spawn_requested = {s.requested} but {granted} children appeared")
            requested, denied = s.requested, s.requested - granted
        elif s.denied is not None:
            requested, denied = granted + s.denied, s.denied
        return granted, requested, denied

    def _landings(self, s: StepRecord, t: int, landed: np.ndarray) -> None:
        """Deposit each landed flow's energy on the cell nearest its final (x, y)."""
        w, h, _ = self.geo.lattice_shape
        planes = np.asarray(self.geo.plane_z, np.float64)
        z = s.positions[landed, 2].astype(np.float64)
        plane = np.abs(z[:, None] - planes[None, :]).argmin(axis=1)
        xy = s.positions[landed, :2].astype(np.float64)
        gx = np.clip(np.rint((xy[:, 0] + 1.0) * 0.5 * (w - 1)), 0, w - 1).astype(np.int64)
        gy = np.clip(np.rint((xy[:, 1] + 1.0) * 0.5 * (h - 1)), 0, h - 1).astype(np.int64)
        np.add.at(self.plane_energy, (plane, gy, gx), s.energies[landed].astype(np.float64))
        self.reached[s.samples[landed], plane, gy, gx] = True
        self.rows["landed"].append(np.bincount(plane, minlength=len(planes)).astype(np.int64))
        self.rows["coverage"].append(self.reached.mean(axis=(0, 2, 3)))
        self.rows["deposited"].append(self.plane_energy.sum(axis=(1, 2)))
        self.rows["plane_steps"].append(self.plane_energy.astype(np.float32))

    def _append(self, s: StepRecord, t: int, new: np.ndarray, ending: np.ndarray, reason: np.ndarray,
                off_plane: np.ndarray) -> None:
        n = int(new.sum())
        self.ids = np.concatenate([self.ids, s.ids[new]])
        self.parent = np.concatenate([self.parent, s.parents[new]])
        self.sample = np.concatenate([self.sample, s.samples[new]])
        self.birth = np.concatenate([self.birth, np.full(n, t, np.int64)])
        self.end = np.concatenate([self.end, np.where(ending[new], t, -1)])
        self.reason = np.concatenate([self.reason, reason[new]])
        self.inferred_off_plane = np.concatenate([self.inferred_off_plane, off_plane[new]])
        self.pos = np.concatenate([self.pos, s.positions[new]])
        self.energy = np.concatenate([self.energy, s.energies[new]])
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._order]

    def _trace(self, s: StepRecord, t: int, current: np.ndarray) -> None:
        keep = current if self.geo.traced_samples is None else current & (s.samples < self.geo.traced_samples)
        if keep.any():
            idx, _ = self._lookup(s.ids[keep])
            self._points.append((idx, t, s.positions[keep], s.energies[keep]))

    # ------------------------------------------------------------------ the batch
    def finish(self) -> BatchTelemetry:
        """The batch's telemetry; flows still alive after the last step timed out there."""
        if self.t < 0:
            raise ValueError(f"{self.where}: end_batch without any record_step; record at least step 0")
        T = self.t
        r = {name: list(values) for name, values in self.rows.items()}
        # flows that ended off-plane at the last step, or never ended, timed out
        last_off = (self.end == T) & self.inferred_off_plane
        self.reason[last_off] = REASON_TIMED_OUT
        r["faded"][T] -= int(last_off.sum())
        open_ = self.end < 0
        r["timed_out"][T] += int(last_off.sum() + open_.sum())
        r["active"][T] -= int(open_.sum())
        r["active_energy"][T] -= float(self.energy[open_].astype(np.float64).sum())
        self.end[open_] = T
        self.reason[open_] = REASON_TIMED_OUT
        edges, hist = self._histograms(r)
        steps = T + 1
        agg = StepAggregates(
            active=np.asarray(r["active"], np.int64), spawn_requested=np.asarray(r["requested"], np.int64),
            spawn_granted=np.asarray(r["granted"], np.int64), spawn_denied=np.asarray(r["denied"], np.int64),
            landed=np.stack(r["landed"]), faded=np.asarray(r["faded"], np.int64),
            timed_out=np.asarray(r["timed_out"], np.int64), energy_hist=hist, energy_bin_edges=edges,
            energy_percentiles=np.asarray(r["e_pct"], np.float32),
            delta_min=np.asarray(r["d_min"], np.float32), delta_max=np.asarray(r["d_max"], np.float32),
            delta_percentiles=np.asarray(r["d_pct"], np.float32), clamp_fraction=np.asarray(r["clamp"], np.float32),
            coverage=np.asarray(r["coverage"], np.float32), deposited_energy=np.asarray(r["deposited"], np.float32),
            active_energy=np.asarray(r["active_energy"], np.float32),
            still_fraction=np.asarray(r["still"], np.float32),
            saturation=np.full((steps, len(SATURATION_NAMES)), np.nan, np.float32),  # heads unknown here
        )
        g = self.geo
        return BatchTelemetry(
            lattice_shape=g.lattice_shape, start_mode=g.start_mode, plane_z=g.plane_z,
            input_energy_range=self.input_range, aggregates=agg,
            plane_energy=self.plane_energy.astype(np.float32),
            plane_reached=self.reached.mean(axis=0).astype(np.float32),
            flows=self._flow_sample(steps), total_flows=int(self.ids.shape[0]),
            plane_energy_steps=np.stack(r["plane_steps"]), reason_names=g.reason_names)

    def _histograms(self, r: dict) -> tuple[np.ndarray, np.ndarray]:
        g = self.geo
        if g.energy_range is not None:
            lo, hi = g.energy_range
            return np.linspace(lo, hi, g.bins + 1, dtype=np.float32), np.stack(r["hist"])
        data = [e for e in self._energies if e.size]
        lo = min([0.0] + [float(e.min()) for e in data])
        hi = max([1.0] + [float(e.max()) for e in data])
        edges = np.linspace(lo, hi, g.bins + 1, dtype=np.float32)
        hist = np.stack([np.histogram(e, bins=edges.astype(np.float64))[0] for e in self._energies]).astype(np.int64)
        return edges, hist

    def _flow_sample(self, steps: int) -> FlowSample:
        traced = (np.ones(self.ids.shape[0], bool) if self.geo.traced_samples is None
                  else self.sample < self.geo.traced_samples)
        chosen = np.flatnonzero(traced)
        chosen = chosen[np.argsort(self.ids[chosen], kind="stable")]
        row_of = np.full(self.ids.shape[0], -1, np.int64)
        row_of[chosen] = np.arange(chosen.shape[0])
        f = chosen.shape[0]
        positions = np.full((f, steps, 3), np.nan, np.float32)
        energy = np.full((f, steps), np.nan, np.float32)
        for idx, t, pos, e in self._points:          # one entry per step, vectorised within it
            positions[row_of[idx], t] = pos
            energy[row_of[idx], t] = e
        return FlowSample(
            flow_id=self.ids[chosen], parent_id=self.parent[chosen],
            sample_index=self.sample[chosen].astype(np.int32), birth_step=self.birth[chosen].astype(np.int32),
            end_step=self.end[chosen].astype(np.int32), reason=self.reason[chosen].astype(np.int8),
            positions=positions, energy=energy, total_flows=int(self.ids.shape[0]),
            traced_samples=self.samples if self.geo.traced_samples is None
            else min(self.samples, self.geo.traced_samples))
