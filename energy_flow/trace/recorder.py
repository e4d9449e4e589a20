"""FlowRecorder: lets any flow model write the recording format, from its flows' states per step.

Why it exists: recordings are how trajectories get into the app, and other implementations of
the energy-flow idea (the original research code, experiments) should be viewable and
comparable in the same app without adopting our model. Such a model only has to report, at
every step, where its flows are, their energy, their parent and whether they are still alive;
the recorder derives everything else the format holds — the per-step aggregates the panels draw
— from exactly that data, and writes it through :class:`~energy_flow.trace.recording.RecordingWriter`.

Steps are recorded as the model runs, one :meth:`FlowRecorder.record_step` call per step; each
call is aggregated at once (:mod:`energy_flow.trace.recorder_steps`), so memory holds one row
of state per flow and the traced samples' points, never the whole batch.

Conventions (the same as :mod:`energy_flow.trace.telemetry`): positions are normalised to
[-1, 1] on every axis; step 0 is the placement on the start plane, step ``t`` the state after
``t`` propagation steps. A flow is *alive after step t* while ``alive`` is True; the first step
at which it is reported with ``alive == False`` is the step it ended, and its position and
energy there are its final ones. Rows of flows that ended earlier may keep appearing (with
``alive == False``); they are ignored.

What is derived, and how (documented in ``docs/recording-format.md`` too):

* termination reason — ``reasons`` when given (the built-in codes, or the model's own codes
  4, 5, … named by ``reason_names``); otherwise *landed* if the final position lies on an output
  plane (``|z − plane_z| ≤ plane_tolerance``), *timed out* if the flow ended off-plane at the
  last recorded step or never ended, *faded* if it ended off-plane earlier;
* spawns granted — flows that first appear at step ``t > 0``; requested / denied — the counts
  the model passes to :meth:`FlowRecorder.record_step`, otherwise requested = granted and
  denied = 0 (a model that does not report requests cannot show refusals);
* displacement — the change of the recorded (already clamped) position; *clamped* means the new
  position lies on the boundary of the cube (some coordinate is ±1); *still* (``still_fraction``)
  means its largest component is below STILL_EPSILON; head saturation is unknown (NaN);
* energy histogram — over ``energy_range`` when given, else over the data's range widened to
  include [0, 1] (so signed energies and energies above 1 land in a bin, never outside);
* coverage, deposits, plane images (per step too) — from each landed flow's nearest cell and
  final energy, whatever its sign (no bilinear splatting; our model splats, so its coverage is
  slightly higher).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from energy_flow.trace.figures import BATCH
from energy_flow.trace.recorder_steps import RecorderGeometry, StepAccumulator, StepRecord
from energy_flow.trace.recording import RecordingWriter
from energy_flow.trace.recording.schema import layout_from_config, reason_names_from_config
from energy_flow.trace.telemetry import REASON_NAMES, BatchTelemetry

_RESERVED_CONFIG_KEYS = ("model_name", "model_version", "lattice_shape", "plane_z", "start_mode",
                         "energy_hist_bins", "reason_names")


class FlowRecorder:
    """Writes another flow model's batches as a recording (see the module docstring).

    ``lattice_shape`` is ``(width, height, depth)``; ``plane_z`` the z of each output plane in
    [-1, 1]; ``model_name`` / ``model_version`` name the recorded model (kept in
    ``provenance["model"]``, apart from the recorder's own package versions); ``config`` any
    further JSON-serialisable settings of the model, stored with the recording; ``provenance``
    what the model knows of its run (teacher, data source, device…). ``reason_names`` names the
    reason codes when the model has its own: the built-in four first, then its own (codes 4, 5,
    …). ``energy_range`` fixes the histogram range (energies outside it are an error); None bins
    each batch over its data's range widened to [0, 1]. ``traced_samples`` keeps trajectories of
    samples ``0 … traced_samples − 1`` only (None: every flow), which bounds memory per batch.
    """

    def __init__(self, path: str | os.PathLike, *, lattice_shape: Sequence[int],
                 plane_z: Sequence[float], start_mode: str, model_name: str,
                 model_version: str | None = None, provenance: Mapping[str, Any] | None = None,
                 config: Mapping[str, Any] | None = None, energy_hist_bins: int = 32,
                 plane_tolerance: float = 1e-6, reason_names: Sequence[str] | None = None,
                 energy_range: tuple[float, float] | None = None, traced_samples: int | None = None,
                 mode: str = "w"):
        self.path = Path(path)
        extra = dict(config or {})
        clash = [k for k in _RESERVED_CONFIG_KEYS if k in extra]
        if clash:
            raise ValueError(f"{self.path}: config must not contain {', '.join(map(repr, clash))}; "
                             "pass them as FlowRecorder arguments")
        if not isinstance(start_mode, str) or not start_mode:
            raise ValueError(f"{self.path}: start_mode must be a non-empty string, got {start_mode!r}")
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"{self.path}: model_name must be a non-empty string, got {model_name!r}")
        if model_version is not None and not isinstance(model_version, str):
            raise ValueError(f"{self.path}: model_version must be a string or None, got {model_version!r}")
        if energy_range is not None:
            lo, hi = (float(v) for v in energy_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{self.path}: energy_range must be two finite numbers lo < hi, "
                                 f"got {energy_range!r}")
            energy_range = (lo, hi)
        if traced_samples is not None and (isinstance(traced_samples, bool) or not isinstance(traced_samples, int)
                                           or traced_samples < 1):
            raise ValueError(f"{self.path}: traced_samples must be an integer ≥ 1 or None, got {traced_samples!r}")
        config_dict = {**extra, "model_name": model_name, "lattice_shape": [int(v) for v in lattice_shape],
                       "plane_z": [float(z) for z in plane_z], "start_mode": start_mode,
                       "energy_hist_bins": energy_hist_bins}
        if model_version is not None:
            config_dict["model_version"] = model_version
        if reason_names is not None and tuple(reason_names) != REASON_NAMES:
            config_dict["reason_names"] = list(reason_names)
        names = reason_names_from_config(config_dict, f"{self.path}: reason_names")
        model = {"name": model_name, "version": model_version}
        self.geometry = RecorderGeometry(
            lattice_shape=layout_from_config(config_dict, f"{self.path}: config").lattice_shape,
            plane_z=tuple(config_dict["plane_z"]), start_mode=start_mode, bins=energy_hist_bins,
            plane_tolerance=float(plane_tolerance), energy_range=energy_range, reason_names=names,
            traced_samples=traced_samples)
        self._report: dict[str, Any] | None = None
        self._batch: StepAccumulator | None = None
        # Last: every argument is checked before the file exists, and a failed open of the
        # writer leaves nothing behind (RecordingWriter), so neither does a failed FlowRecorder.
        self._writer = RecordingWriter(self.path, config_dict, {**(provenance or {}), "model": model}, mode=mode)

    # -------------------------------------------------------------- batches
    @property
    def num_batches(self) -> int:
        return self._writer.num_batches

    @property
    def reason_names(self) -> tuple[str, ...]:
        return self.geometry.reason_names

    def begin_batch(self, step: int | None = None, loss: float | None = None, mse: float | None = None,
                    cosine_loss: float | None = None, learning_rate: float | None = None,
                    landed_fraction: float | None = None, **training: Any) -> None:
        """Start a batch; the training metadata is optional (unknown values are stored as NaN).

        ``landed_fraction`` defaults to the share of the batch's flows that landed. Further
        training signals (``grad_norm``, ``grad_norms``, … see ``REPORT_FIELDS``) may be passed
        by name. A batch with none of them is a batch without a training step.
        """
        if self._report is not None:
            raise ValueError(f"{self.path}: begin_batch called twice; end_batch the previous batch first")
        self._report = {"step": step, "loss": loss, "mse": mse, "cosine_loss": cosine_loss,
                        "learning_rate": learning_rate, "landed_fraction": landed_fraction, **training}
        self._batch = StepAccumulator(self.geometry, f"{self.path}: batch {self.num_batches}")

    def record_step(self, positions: np.ndarray, energies: np.ndarray, parent_ids: np.ndarray,
                    alive: np.ndarray, flow_ids: np.ndarray | None = None,
                    sample_index: np.ndarray | None = None, reasons: np.ndarray | None = None,
                    spawn_requested: int | None = None, spawn_denied: int | None = None) -> None:
        """Record the flows present at the next step (the first call is step 0, the placement).

        Arrays have one row per flow: ``positions`` [N, 3] in [-1, 1], ``energies`` [N],
        ``parent_ids`` [N] (−1 for flows placed at step 0), ``alive`` [N] bool (still alive after
        this step). ``flow_ids`` default to the row index, so rows must keep their flow from step
        to step; ``sample_index`` (default 0) says which sample of the batch a flow serves;
        ``reasons`` (codes of ``reason_names``: 1 landed, 2 faded, 3 timed out, 4… the model's
        own) states why flows ending at this step ended. The spawn counts are the children this
        step asked for and the ones the model refused. Energies may be signed or exceed 1; they
        are recorded as given. The step is aggregated at once and the arrays are not kept.
        """
        if self._report is None:
            raise ValueError(f"{self.path}: record_step called outside a batch; call begin_batch first")
        t = self._batch.t + 1
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
        codes = np.full(n, -1, np.int64)
        if reasons is not None:
            codes = self._ints(reasons, n, "reasons", where)
            bad = ~live & ((codes < 1) | (codes >= len(self.reason_names)))
            if bad.any():
                raise ValueError(f"{where}: reasons of ended flows must be codes 1…{len(self.reason_names) - 1} "
                                 f"of {self.reason_names}; got {int(codes[bad][0])}")
            codes = np.where(live, -1, codes)
        for name, value in (("spawn_requested", spawn_requested), ("spawn_denied", spawn_denied)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise ValueError(f"{where}: {name} must be an integer ≥ 0 or None, got {value!r}")
            if value and t == 0:
                raise ValueError(f"{where}: {name} must be 0 at step 0 (placement spawns nothing)")
        self._batch.add(StepRecord(ids, pos, energy, parents, live.copy(), samples, codes,
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
        telemetry = self._batch.finish()
        report = {k: v for k, v in self._report.items() if v is not None}
        if BATCH.landed_fraction.key not in report:
            landed = int(telemetry.aggregates.landed.sum())
            report[BATCH.landed_fraction.key] = landed / telemetry.total_flows if telemetry.total_flows else 0.0
        self._writer.append_batch(telemetry, report)
        self._report, self._batch = None, None
        return telemetry

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the file; a batch begun but not ended is not written, and that is an error."""
        pending = self._report is not None
        self._report, self._batch = None, None
        self._writer.close()
        if pending:
            raise ValueError(f"{self.path}: closed with a batch begun but not ended; it was not written")

    def __enter__(self) -> "FlowRecorder":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None:
            self._report = None   # the exception in flight explains the missing batch
        self.close()
