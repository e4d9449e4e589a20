"""FlowRecorder: lets any flow model write the recording format, from its flows' states per step.

Why it exists: recordings are how trajectories get into the app, and other implementations of
the energy-flow idea (the original research code, experiments) should be viewable and
comparable in the same app without adopting our model. Such a model only has to report, at
every step, where its flows are, their energy, their parent and whether they are still alive;
the recorder derives everything else the format holds — the per-step aggregates the panels draw
— from exactly that data, and writes it through :class:`~energy_flow.trace.recording.RecordingWriter`.

Conventions (the same as :mod:`energy_flow.trace.telemetry`): positions are normalised to
[-1, 1] on every axis; step 0 is the placement on the start plane, step ``t`` the state after
``t`` propagation steps. A flow is *alive after step t* while ``alive`` is True; the first step
at which it is reported with ``alive == False`` is the step it ended, and its position and
energy there are its final ones. Rows of flows that ended earlier may keep appearing (with
``alive == False``); they are ignored.

What is derived, and how (documented in ``docs/recording-format.md`` too):

* termination reason — ``reasons`` when given; otherwise *landed* if the final position lies on
  an output plane (``|z − plane_z| ≤ plane_tolerance``), *timed out* if the flow ended off-plane
  at the last recorded step or never ended, *faded* if it ended off-plane earlier;
* spawns granted — flows that first appear at step ``t > 0``; requested / denied — the counts
  the model passes to :meth:`FlowRecorder.record_step`, otherwise requested = granted and
  denied = 0 (a model that does not report requests cannot show refusals);
* displacement — the change of the recorded (already clamped) position; *clamped* means the new
  position lies on the boundary of the cube (some coordinate is ±1);
* coverage, deposits, plane images — from each landed flow's nearest cell and final energy
  (no bilinear splatting; our model splats, so its coverage is slightly higher).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from energy_flow.trace.recording import RecordingWriter
from energy_flow.trace.telemetry import (PERCENTILES, REASON_FADED, REASON_LANDED,
                                         REASON_TIMED_OUT, BatchTelemetry, FlowSample,
                                         StepAggregates)

_RESERVED_CONFIG_KEYS = ("model_name", "lattice_shape", "plane_z", "start_mode", "energy_hist_bins")


@dataclass(frozen=True)
class _StepRecord:
    ids: np.ndarray         # [N] int64
    positions: np.ndarray   # [N, 3] float32
    energies: np.ndarray    # [N] float32
    parents: np.ndarray     # [N] int64
    alive: np.ndarray       # [N] bool
    samples: np.ndarray     # [N] int64
    reasons: np.ndarray     # [N] int8, -1 where the model gave none
    requested: int | None
    denied: int | None


class FlowRecorder:
    """Writes another flow model's batches as a recording (see the module docstring).

    ``lattice_shape`` is ``(width, height, depth)``; ``plane_z`` the z of each output plane in
    [-1, 1]; ``config`` any further JSON-serialisable settings of the model, stored with the
    recording; ``provenance`` what the model knows of its run (teacher, data source, device…).
    """

    def __init__(self, path: str | os.PathLike, *, lattice_shape: Sequence[int],
                 plane_z: Sequence[float], start_mode: str, model_name: str,
                 provenance: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 energy_hist_bins: int = 32, plane_tolerance: float = 1e-6, mode: str = "w"):
        self.path = Path(path)
        extra = dict(config or {})
        clash = [k for k in _RESERVED_CONFIG_KEYS if k in extra]
        if clash:
            raise ValueError(f"{self.path}: config must not contain {', '.join(map(repr, clash))}; "
                             "pass them as FlowRecorder arguments")
        if not isinstance(start_mode, str) or not start_mode:
            raise ValueError(f"{self.path}: start_mode must be a non-empty string, got {start_mode!r}")
        config_dict = {**extra, "model_name": model_name, "lattice_shape": [int(v) for v in lattice_shape],
                       "plane_z": [float(z) for z in plane_z], "start_mode": start_mode,
                       "energy_hist_bins": energy_hist_bins}
        self._writer = RecordingWriter(self.path, config_dict,
                                       {"model_name": model_name, **(provenance or {})}, mode=mode)
        self.lattice_shape = self._writer.layout.lattice_shape
        self.plane_z = tuple(config_dict["plane_z"])
        self.start_mode = start_mode
        self.bins = energy_hist_bins
        self.plane_tolerance = float(plane_tolerance)
        self._report: dict[str, Any] | None = None
        self._steps: list[_StepRecord] = []

    # -------------------------------------------------------------- batches
    @property
    def num_batches(self) -> int:
        return self._writer.num_batches

    def begin_batch(self, step: int | None = None, loss: float | None = None, mse: float | None = None,
                    cosine_loss: float | None = None, learning_rate: float | None = None,
                    landed_fraction: float | None = None) -> None:
        """Start a batch; the training metadata is optional (unknown values are stored as NaN).

        ``landed_fraction`` defaults to the share of the batch's flows that landed.
        """
        if self._report is not None:
            raise ValueError(f"{self.path}: begin_batch called twice; end_batch the previous batch first")
        self._report = {"step": step, "loss": loss, "mse": mse, "cosine_loss": cosine_loss,
                        "learning_rate": learning_rate, "landed_fraction": landed_fraction}
        self._steps = []

    def record_step(self, positions: np.ndarray, energies: np.ndarray, parent_ids: np.ndarray,
                    alive: np.ndarray, flow_ids: np.ndarray | None = None,
                    sample_index: np.ndarray | None = None, reasons: np.ndarray | None = None,
                    spawn_requested: int | None = None, spawn_denied: int | None = None) -> None:
        """Record the flows present at the next step (the first call is step 0, the placement).

        Arrays have one row per flow: ``positions`` [N, 3] in [-1, 1], ``energies`` [N],
        ``parent_ids`` [N] (−1 for flows placed at step 0), ``alive`` [N] bool (still alive after
        this step). ``flow_ids`` default to the row index, so rows must keep their flow from step
        to step; ``sample_index`` (default 0) says which sample of the batch a flow serves;
        ``reasons`` (REASON_* codes) states why flows ending at this step ended. The spawn
        counts are the children this step asked for and the ones the model refused.
        """
        if self._report is None:
            raise ValueError(f"{self.path}: record_step called outside a batch; call begin_batch first")
        t = len(self._steps)
        where = f"{self.path}: step {t}"
        pos = np.asarray(positions)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"{where}: positions must be [N, 3], got shape {pos.shape}")
        n = pos.shape[0]
        pos = pos.astype(np.float32)
        if not np.isfinite(pos).all():
            raise ValueError(f"{where}: positions contain NaN or infinity")
        if n and np.abs(pos).max() > 1.0:
            raise ValueError(f"{where}: positions must be normalised to [-1, 1]; largest |coordinate| "
                             f"is {float(np.abs(pos).max())}")
        energy = self._vector(energies, n, "energies", where).astype(np.float32)
        if not np.isfinite(energy).all():
            raise ValueError(f"{where}: energies contain NaN or infinity")
        live = np.asarray(alive)
        if live.dtype != np.bool_ or live.shape != (n,):
            raise ValueError(f"{where}: alive must be a bool array of shape ({n},), got {live.dtype} {live.shape}")
        ids = np.arange(n, dtype=np.int64) if flow_ids is None else self._ints(flow_ids, n, "flow_ids", where)
        if np.unique(ids).shape[0] != n:
            raise ValueError(f"{where}: flow_ids are not unique")
        parents = self._ints(parent_ids, n, "parent_ids", where)
        samples = np.zeros(n, np.int64) if sample_index is None else self._ints(sample_index, n, "sample_index", where)
        if n and samples.min() < 0:
            raise ValueError(f"{where}: sample_index must be ≥ 0")
        codes = np.full(n, -1, np.int8)
        if reasons is not None:
            codes = self._ints(reasons, n, "reasons", where).astype(np.int8)
            bad = ~live & ~np.isin(codes, (REASON_LANDED, REASON_FADED, REASON_TIMED_OUT))
            if bad.any():
                raise ValueError(f"{where}: reasons of ended flows must be REASON_LANDED, REASON_FADED "
                                 f"or REASON_TIMED_OUT; got {int(codes[bad][0])}")
            codes = np.where(live, -1, codes).astype(np.int8)
        for name, value in (("spawn_requested", spawn_requested), ("spawn_denied", spawn_denied)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise ValueError(f"{where}: {name} must be an integer ≥ 0 or None, got {value!r}")
            if value and t == 0:
                raise ValueError(f"{where}: {name} must be 0 at step 0 (placement spawns nothing)")
        self._steps.append(_StepRecord(ids, pos, energy, parents, live.copy(), samples, codes,
                                       None if spawn_requested is None else int(spawn_requested),
                                       None if spawn_denied is None else int(spawn_denied)))

    @staticmethod
    def _vector(values: Any, n: int, name: str, where: str) -> np.ndarray:
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"{where}: {name} must have shape ({n},), got {arr.shape}")
        return arr

    @classmethod
    def _ints(cls, values: Any, n: int, name: str, where: str) -> np.ndarray:
        arr = cls._vector(values, n, name, where)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{where}: {name} must hold integers, got dtype {arr.dtype}")
        return arr.astype(np.int64)

    def end_batch(self) -> BatchTelemetry:
        """Derive the batch's telemetry from the recorded steps, write it, and return it."""
        if self._report is None:
            raise ValueError(f"{self.path}: end_batch called outside a batch; call begin_batch first")
        if not self._steps:
            raise ValueError(f"{self.path}: end_batch without any record_step; record at least step 0")
        telemetry = _BatchBuilder(self, self._steps).build()
        report = dict(self._report)
        if report["landed_fraction"] is None:
            landed = int(telemetry.aggregates.landed.sum())
            report["landed_fraction"] = landed / telemetry.total_flows if telemetry.total_flows else 0.0
        self._writer.append_batch(telemetry, report)
        self._report, self._steps = None, []
        return telemetry

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the file; a batch begun but not ended is not written, and that is an error."""
        pending = self._report is not None
        self._report, self._steps = None, []
        self._writer.close()
        if pending:
            raise ValueError(f"{self.path}: closed with a batch begun but not ended; it was not written")

    def __enter__(self) -> "FlowRecorder":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None:
            self._report = None   # the exception in flight explains the missing batch
        self.close()


class _BatchBuilder:
    """Turns the per-step records of one batch into BatchTelemetry (all numpy, no per-flow loop)."""

    def __init__(self, rec: FlowRecorder, steps: list[_StepRecord]):
        self.rec = rec
        self.steps = steps
        self.T = len(steps) - 1
        self.where = f"{rec.path}: batch {rec.num_batches}"

    def build(self) -> BatchTelemetry:
        rec, T = self.rec, self.T
        if self.steps[0].ids.shape[0] == 0:
            raise ValueError(f"{self.where}: step 0 has no flows")
        t = np.concatenate([np.full(s.ids.shape[0], i, np.int64) for i, s in enumerate(self.steps)])
        cat = {name: np.concatenate([getattr(s, name) for s in self.steps])
               for name in ("ids", "positions", "energies", "parents", "alive", "samples", "reasons")}
        order = np.lexsort((t, cat["ids"]))
        t = t[order]
        r = {k: v[order] for k, v in cat.items()}
        uid, first, row = np.unique(r["ids"], return_index=True, return_inverse=True)
        f = uid.shape[0]
        birth = t[first]
        # end: the first step reported dead, else the last step reported (which must be T)
        dead_t = np.where(~r["alive"], t, T + 1)
        end = np.full(f, T + 1, np.int64)
        np.minimum.at(end, row, dead_t)
        last_seen = np.zeros(f, np.int64)
        np.maximum.at(last_seen, row, t)
        never_ended = end > T
        vanished = never_ended & (last_seen < T)
        if vanished.any():
            k = int(np.flatnonzero(vanished)[0])
            raise ValueError(f"{self.where}: flow {uid[k]} is alive at step {last_seen[k]} but missing at "
                             f"step {last_seen[k] + 1}; report it with alive=False at the step it ends")
        end = np.where(never_ended, T, end)
        valid = t <= end[row]
        revived = ~valid & r["alive"]
        if revived.any():
            k = int(np.flatnonzero(revived)[0])
            raise ValueError(f"{self.where}: flow {r['ids'][k]} ended at step {end[row[k]]} but is alive "
                             f"again at step {t[k]}")
        span = np.bincount(row[valid], minlength=f)
        gaps = span != end - birth + 1
        if gaps.any():
            k = int(np.flatnonzero(gaps)[0])
            raise ValueError(f"{self.where}: flow {uid[k]} is missing at some step between its birth "
                             f"(step {birth[k]}) and its end (step {end[k]})")
        t, row = t[valid], row[valid]
        r = {k: v[valid] for k, v in r.items()}
        first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])  # still sorted by (flow, step)
        parent, sample = r["parents"][first], r["samples"][first]
        for name, per_flow in (("parent id", parent), ("sample index", sample)):
            values = r["parents"] if name == "parent id" else r["samples"]
            changed = values != per_flow[row]
            if changed.any():
                k = int(np.flatnonzero(changed)[0])
                raise ValueError(f"{self.where}: flow {uid[row[k]]} changes its {name} at step {t[k]}")
        self._check_parents(uid, birth, parent)

        last = np.r_[first[1:], row.shape[0]] - 1      # each flow's final record
        reason = self._reasons(r, last, end)
        landed_plane = np.where(reason == REASON_LANDED, self._nearest_plane(r["positions"][last, 2]), -1)

        positions = np.full((f, T + 1, 3), np.nan, np.float32)
        energy = np.full((f, T + 1), np.nan, np.float32)
        positions[row, t] = r["positions"]
        energy[row, t] = r["energies"]
        num_samples = int(sample.max()) + 1
        flows = FlowSample(flow_id=uid, parent_id=parent, sample_index=sample.astype(np.int32),
                           birth_step=birth.astype(np.int32), end_step=end.astype(np.int32),
                           reason=reason.astype(np.int8), positions=positions, energy=energy,
                           total_flows=f, traced_samples=num_samples)
        agg, plane_energy, plane_reached = self._aggregates(r, t, row, birth, end, reason, landed_plane,
                                                            last, sample, num_samples)
        e0 = r["energies"][t == 0]
        return BatchTelemetry(lattice_shape=rec.lattice_shape, start_mode=rec.start_mode,
                              plane_z=rec.plane_z, input_energy_range=(float(e0.min()), float(e0.max())),
                              aggregates=agg, plane_energy=plane_energy, plane_reached=plane_reached,
                              flows=flows, total_flows=f)

    def _check_parents(self, uid: np.ndarray, birth: np.ndarray, parent: np.ndarray) -> None:
        placed_with_parent = (birth == 0) & (parent != -1)
        if placed_with_parent.any():
            k = int(np.flatnonzero(placed_with_parent)[0])
            raise ValueError(f"{self.where}: flow {uid[k]} is placed at step 0 but has parent {parent[k]}; "
                             "flows on the start plane have parent -1")
        children = birth > 0
        orphan = children & (parent == -1)
        if orphan.any():
            k = int(np.flatnonzero(orphan)[0])
            raise ValueError(f"{self.where}: flow {uid[k]} appears at step {birth[k]} without a parent; "
                             "only step 0 places flows with parent -1")
        idx = np.searchsorted(uid, parent[children])
        known = (idx < uid.shape[0]) & (uid[np.minimum(idx, uid.shape[0] - 1)] == parent[children])
        if not known.all():
            k = int(np.flatnonzero(children)[np.flatnonzero(~known)[0]])
            raise ValueError(f"{self.where}: flow {uid[k]} names parent {parent[k]}, which is not a flow "
                             "of this batch")

    def _nearest_plane(self, z: np.ndarray) -> np.ndarray:
        planes = np.asarray(self.rec.plane_z, np.float64)
        return np.abs(z.astype(np.float64)[:, None] - planes[None, :]).argmin(axis=1)

    def _reasons(self, r: dict, last: np.ndarray, end: np.ndarray) -> np.ndarray:
        given = r["reasons"][last]
        z = r["positions"][last, 2].astype(np.float64)
        planes = np.asarray(self.rec.plane_z, np.float64)
        on_plane = (np.abs(z[:, None] - planes[None, :]) <= self.rec.plane_tolerance).any(axis=1)
        ended_dead = ~r["alive"][last]
        inferred = np.where(on_plane & ended_dead, REASON_LANDED,
                            np.where(ended_dead & (end < self.T), REASON_FADED, REASON_TIMED_OUT))
        return np.where(ended_dead & (given >= 0), given, inferred).astype(np.int64)

    def _aggregates(self, r, t, row, birth, end, reason, landed_plane, last, sample, num_samples):
        rec, T = self.rec, self.T
        planes, bins, k = len(rec.plane_z), rec.bins, len(PERCENTILES)
        width, height, _ = rec.lattice_shape
        steps = np.arange(T + 1)
        alive_after = t < end[row]
        active = np.bincount(t[alive_after], minlength=T + 1).astype(np.int64)
        active_energy = np.bincount(t[alive_after], weights=r["energies"][alive_after].astype(np.float64),
                                    minlength=T + 1).astype(np.float32)
        granted = np.bincount(birth[birth > 0], minlength=T + 1).astype(np.int64)
        requested, denied = self._spawn_counts(granted)
        faded = np.bincount(end[reason == REASON_FADED], minlength=T + 1).astype(np.int64)
        timed_out = np.bincount(end[reason == REASON_TIMED_OUT], minlength=T + 1).astype(np.int64)
        landed = np.zeros((T + 1, planes), np.int64)
        is_landed = reason == REASON_LANDED
        np.add.at(landed, (end[is_landed], landed_plane[is_landed]), 1)

        # processed at step t: placed flows at t = 0, flows that existed before t afterwards
        processed = np.where(t == 0, True, birth[row] < t)
        prev = np.r_[0, np.arange(t.shape[0] - 1)]          # previous record of the same flow
        delta = r["positions"].astype(np.float64) - r["positions"][prev].astype(np.float64)
        clamped = (np.abs(r["positions"]) >= 1.0).any(axis=1)
        hist = np.zeros((T + 1, bins), np.int64)
        e_pct = np.full((T + 1, k), np.nan, np.float32)
        d_min = np.full((T + 1, 3), np.nan, np.float32)
        d_max = np.full((T + 1, 3), np.nan, np.float32)
        d_pct = np.full((T + 1, 3, k), np.nan, np.float32)
        clamp = np.full(T + 1, np.nan, np.float32)
        for step in steps:
            sel = processed & (t == step)
            e = r["energies"][sel]
            hist[step] = np.histogram(e, bins=bins, range=(0.0, 1.0))[0]
            if e.size:
                e_pct[step] = np.percentile(e.astype(np.float64), PERCENTILES)
            if step == 0 or not sel.any():
                continue
            d = delta[sel]
            d_min[step], d_max[step] = d.min(axis=0), d.max(axis=0)
            d_pct[step] = np.percentile(d, PERCENTILES, axis=0).T
            clamp[step] = clamped[sel].mean()

        # landings: nearest cell of each landed flow's final (x, y)
        xy = r["positions"][last[is_landed], :2].astype(np.float64)
        gx = np.clip(np.rint((xy[:, 0] + 1.0) * 0.5 * (width - 1)), 0, width - 1).astype(np.int64)
        gy = np.clip(np.rint((xy[:, 1] + 1.0) * 0.5 * (height - 1)), 0, height - 1).astype(np.int64)
        lp, lt = landed_plane[is_landed], end[is_landed]
        le = r["energies"][last[is_landed]].astype(np.float64)
        ls = sample[is_landed]
        deposited = np.zeros((T + 1, planes), np.float64)
        np.add.at(deposited, (lt, lp), le)
        plane_energy = np.zeros((planes, height, width), np.float64)
        np.add.at(plane_energy, (lp, gy, gx), le)
        first_reach = np.full((num_samples, planes, height, width), T + 1, np.int64)
        np.minimum.at(first_reach, (ls, lp, gy, gx), lt)
        reached_by = (first_reach[None] <= steps[:, None, None, None, None])   # [T+1, S, P, H, W]
        coverage = reached_by.mean(axis=(1, 3, 4)).astype(np.float32)
        plane_reached = (first_reach <= T).mean(axis=0).astype(np.float32)

        agg = StepAggregates(
            active=active, spawn_requested=requested, spawn_granted=granted, spawn_denied=denied,
            landed=landed, faded=faded, timed_out=timed_out, energy_hist=hist,
            energy_bin_edges=np.linspace(0.0, 1.0, bins + 1, dtype=np.float32),
            energy_percentiles=e_pct, delta_min=d_min, delta_max=d_max, delta_percentiles=d_pct,
            clamp_fraction=clamp, coverage=coverage,
            deposited_energy=np.cumsum(deposited, axis=0).astype(np.float32), active_energy=active_energy)
        return agg, plane_energy.astype(np.float32), plane_reached

    def _spawn_counts(self, granted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        requested = granted.copy()
        denied = np.zeros_like(granted)
        for step, s in enumerate(self.steps):
            g = int(granted[step])
            if s.requested is not None and s.denied is not None and s.requested - s.denied != g:
                raise ValueError(f"{self.where}: step {step}: spawn_requested ({s.requested}) − spawn_denied "
                                 f"({s.denied}) must equal the children that appeared ({g})")
            if s.requested is not None:
                if s.requested < g:
                    raise ValueError(f"{self.where}: step {step}: spawn_requested = {s.requested} but {g} "
                                     "children appeared")
                requested[step], denied[step] = s.requested, s.requested - g
            elif s.denied is not None:
                requested[step], denied[step] = g + s.denied, s.denied
        return requested, denied
