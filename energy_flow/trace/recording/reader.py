"""Recording: the lazy, read-only reader of recordings (also while a writer appends).

Opening reads attributes and the commit flags only; a batch reads only its own chunks, so the
first batch of a gigabyte file shows as fast as that of a small one. Version-1 files open too:
what they lack (still fraction, saturation, per-step plane deposits, most training signals) is
given back as None, or absent from :meth:`Recording.report_fields`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from energy_flow.files.errors import reason
from energy_flow.trace.recording import bounds, report_columns
from energy_flow.trace.recording.containment import check_self_contained
from energy_flow.trace.recording.schema import (DATASET_SINCE, FLOW_FIELDS, STEP_TRAILING,
                                                RecordingError,
                                                RecordingLayout, check_root, count_complete,
                                                load_json_attr, reason_names_from_config, specs)
from energy_flow.trace.telemetry import BatchTelemetry, FlowSample, StepAggregates
from energy_flow.trace.training_signals import REPORT_FIELDS, is_training_step

_IMAGE_COLUMNS = ("batches/plane_energy", "batches/plane_reached")
_INFO_COLUMNS = tuple(f"batches/{name}" for name in (
    "step", "loss", "mse", "cosine_loss", "learning_rate", "landed_fraction", "num_steps", "total_flows",
    "has_flows", "num_flows", "traced_samples", "lattice_shape", "start_mode", "plane_z",
    "input_energy_range"))
_REPORT_COLUMNS = frozenset(REPORT_FIELDS)


@dataclass(frozen=True)
class BatchInfo:
    """One batch's metadata (the ``batches/*`` row), without its arrays."""

    index: int
    step: int | None            # training step; None when the model did not say
    loss: float                 # NaN when unknown (also mse, cosine_loss, learning_rate, landed_fraction)
    mse: float
    cosine_loss: float
    learning_rate: float
    landed_fraction: float
    num_steps: int              # T: propagation steps (arrays have T + 1 step rows)
    total_flows: int            # flows created in the batch
    has_flows: bool             # False when trajectories were not traced
    num_sampled_flows: int      # F: flows with stored trajectories
    traced_samples: int
    lattice_shape: tuple[int, int, int]
    start_mode: str
    plane_z: tuple[float, ...]
    input_energy_range: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if path.is_dir():
        raise RecordingError(f"{path}: is a directory, not a recording")
    if path.stat().st_size == 0:
        raise RecordingError(f"{path}: empty file, not an HDF5 file")
    if not h5py.is_hdf5(path):
        raise RecordingError(f"{path}: not an HDF5 file")
    # A plain open first: it is the one that checks the file's length against the end address
    # in its superblock (SWMR readers skip that check), so it catches truncated copies.
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        detail = str(exc)
        if "truncated" in detail:
            sizes = re.search(r"eof = (\d+).*stored_eof = (\d+)", detail)
            have = f"{sizes[1]} of {sizes[2]} bytes present" if sizes else detail
            raise RecordingError(f"{path}: truncated file ({have})") from exc
        if "already open for write" not in detail:
            raise RecordingError(f"{path}: cannot open the HDF5 file ({reason(exc)})") from exc
        # Otherwise a SWMR writer is appending to it, or was killed while it was: the status
        # flags it set stay until a clean close. SWMR readers are allowed in; they see every
        # committed batch.
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open the HDF5 file for reading ({reason(exc)})") from exc
    try:
        check_self_contained(f, path)   # before any data is read: nothing may lead to other files
    except BaseException:
        f.close()
        raise
    return f


class Recording:
    """Read-only, lazy view of a recording: opening reads attributes and the commit flags only.

    Use :func:`open_recording`. Arrays are read from disk when :meth:`batch` asks for them,
    one batch at a time, so the first batch of a large file shows as fast as a small one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = _open_h5(self.path)
        try:
            self.schema_version = check_root(self._file, self.path)
            self.config: dict = load_json_attr(self._file, "config", self.path)
            self.provenance: dict = load_json_attr(self._file, "provenance", self.path)
            try:
                self.reason_names = reason_names_from_config(self.config, f"{self.path}: config")
            except ValueError as exc:
                raise RecordingError(str(exc)) from exc
            self._ds = self._datasets()
            self._check_shapes()
            self.num_batches = self._count()
        except BaseException:
            self._file.close()
            raise

    def _datasets(self) -> dict[str, h5py.Dataset]:
        names = specs(RecordingLayout(2, 2, 2, 1, 1)).keys()  # names do not depend on the layout
        out = {}
        for name in names:
            obj = self._file.get(name)
            if obj is None and self.schema_version < DATASET_SINCE.get(name, 1):
                continue    # an older file: the reader gives None/NaN for these
            if not isinstance(obj, h5py.Dataset):
                raise RecordingError(f"{self.path}: missing dataset {name!r}")
            out[name] = obj
        return out

    def _check_shapes(self) -> None:
        """Trailing dimensions must agree with each other (metadata only, no data read)."""
        ds = self._ds
        planes = ds["batches/plane_z"].shape[1:]
        image = ds["batches/plane_energy"].shape[1:]
        bins = ds["steps/energy_hist"].shape[1:]
        if len(planes) != 1 or len(image) != 3 or len(bins) != 1:
            raise RecordingError(f"{self.path}: inconsistent shapes: batches/plane_z {planes}, "
                                 f"batches/plane_energy {image}, steps/energy_hist {bins}")
        p, b = planes[0], bins[0]
        expected = specs(RecordingLayout(image[2], image[1], 2, p, b))
        bounds.check_datasets(ds, expected, self.path)   # dtypes, row and chunk sizes: before any read
        for name, spec in expected.items():
            if name not in ds:
                continue
            got = ds[name].shape[1:]
            if got != spec.trailing:
                raise RecordingError(f"{self.path}: inconsistent shapes: {name} has rows of shape {got}, "
                                     f"expected {spec.trailing} (planes={p}, bins={b}, "
                                     f"plane image {image[1]}×{image[2]})")

    def _count(self) -> int:
        """Complete batches, each of which must be stored in the file (not just flagged)."""
        plane = self._ds["batches/plane_energy"]
        n = count_complete(self._read("batches/complete", bounds.flag_rows(plane)))
        bounds.check_batch_count(plane, n, self.path)
        return n

    def _read(self, name: str, index: Any) -> np.ndarray:
        bounds.check_read(self._ds[name], index, self.path, name)
        try:
            return self._ds[name][index]
        except (OSError, ValueError, KeyError) as exc:
            raise RecordingError(f"{self.path}: cannot read {name} ({reason(exc)})") from exc

    # -------------------------------------------------------------- following
    def refresh(self) -> int:
        """Pick up batches a live writer committed since opening; returns ``num_batches``."""
        if self._file is None:
            raise ValueError(f"{self.path}: recording is closed")
        try:
            self._ds["batches/complete"].refresh()   # first: the data it vouches for is older
            for name, ds in self._ds.items():
                if name != "batches/complete":
                    ds.refresh()
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{self.path}: cannot refresh ({reason(exc)})") from exc
        self.num_batches = self._count()
        return self.num_batches

    # -------------------------------------------------------------- reading
    def _check_index(self, i: int) -> int:
        if self._file is None:
            raise ValueError(f"{self.path}: recording is closed")
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{self.path}: batch index must be an integer, got {i!r}")
        n = self.num_batches
        if not -n <= i < n:
            raise IndexError(f"{self.path}: batch {i} out of range ({n} complete batches)")
        return int(i) % n

    def batch_column(self, name: str) -> np.ndarray:
        """One ``batches/*`` column over all complete batches (e.g. ``"loss"`` for a timeline).

        Scalars give ``[N]``, per-module columns (``grad_norms``, ``update_ratios``,
        ``weight_norms``) ``[N, 4]`` in MODULES order, text columns (``nonfinite``,
        ``params_without_grad``) an object array of str. Raises KeyError for a column the file
        does not have (the training signals of a version-1 file) and for the plane images.
        """
        key = f"batches/{name}"
        if key not in self._ds or key in _IMAGE_COLUMNS:
            raise KeyError(f"{self.path}: no per-batch column {name!r}")
        values = self._read(key, slice(0, self.num_batches))
        if values.dtype.kind == "S":
            return np.array([bytes(v).decode("utf-8", "replace") for v in values], dtype=object)
        return values

    def dataset(self, name: str) -> h5py.Dataset:
        """The open dataset ``name`` (e.g. ``"steps/landed"``), for bulk reads over batches
        through the ``batches/*_start`` offsets; KeyError when the file does not have it."""
        if name not in self._ds:
            raise KeyError(f"{self.path}: no dataset {name!r}")
        return self._ds[name]

    def batch_reasons(self, i: int) -> np.ndarray:
        """[F] int8 reason codes of batch ``i``'s sampled flows (empty when none were traced);
        names in :attr:`reason_names`."""
        i = self._check_index(i)
        info = self.batch_info(i)
        if not info.has_flows:
            return np.zeros(0, np.int8)
        return self._segment("flows/reason", int(self._read("batches/flow_start", i)), info.num_sampled_flows, i)

    def report_fields(self, i: int) -> dict[str, Any] | None:
        """Batch ``i``'s training signals, in the shape ``report_fields_from(TrainReport)`` gives.

        None when the batch had no training step (every training signal unknown, e.g. a
        ``FlowRecorder`` batch without loss). NaN/None mark values the writer was not told;
        keys whose column a version-1 file lacks are absent.
        """
        i = self._check_index(i)
        row = {name.split("/", 1)[1]: self._read(name, i) for name in self._ds
               if name.startswith("batches/") and name.split("/", 1)[1] in _REPORT_COLUMNS}
        fields = report_columns.decode(row)
        return fields if is_training_step(fields) else None

    def step_starts(self, name: str) -> np.ndarray:
        """One scalar ``steps/*`` series at step 0 of every complete batch (``"active"``: the
        flows placed on the start plane), as float64; one read of the column."""
        values, starts, _ = self._step_rows(name)
        return values[starts]

    def step_totals(self, name: str) -> np.ndarray:
        """Per-batch sums of one scalar ``steps/*`` series (e.g. ``"spawn_granted"``) for every
        complete batch: one read of the column, so a replay can plot totals over the whole run
        without decoding each batch."""
        values, starts, stops = self._step_rows(name)
        running = np.concatenate([[0.0], np.cumsum(values)])
        return running[stops] - running[starts]

    def _step_rows(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scalar ``steps/{name}`` column up to the last complete batch's end (float64), and
        each complete batch's first row and one-past-last row in it."""
        key = f"steps/{name}"
        if key not in self._ds or self._ds[key].ndim != 1:
            raise KeyError(f"{self.path}: no per-step scalar series {name!r}")
        n = self.num_batches
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return np.zeros(0, dtype=np.float64), empty, empty
        starts = self._read("batches/step_start", slice(0, n)).astype(np.int64)
        stops = starts + self._read("batches/num_steps", slice(0, n)).astype(np.int64) + 1
        if starts.min() < 0 or (stops <= starts).any():
            raise RecordingError(f"{self.path}: inconsistent shapes: negative step offsets or counts in "
                                 "batches/step_start or batches/num_steps")
        end = int(stops.max())
        if end > self._ds[key].shape[0]:
            raise RecordingError(f"{self.path}: inconsistent shapes: batches need rows up to {end} "
                                 f"of {key}, which has {self._ds[key].shape[0]}")
        return np.asarray(self._read(key, slice(0, end)), dtype=np.float64), starts, stops

    def batch_info(self, i: int) -> BatchInfo:
        i = self._check_index(i)
        r = {name.split("/", 1)[1]: self._read(name, i) for name in _INFO_COLUMNS}
        step = int(r["step"])
        return BatchInfo(
            index=i, step=None if step < 0 else step, loss=float(r["loss"]), mse=float(r["mse"]),
            cosine_loss=float(r["cosine_loss"]), learning_rate=float(r["learning_rate"]),
            landed_fraction=float(r["landed_fraction"]), num_steps=int(r["num_steps"]),
            total_flows=int(r["total_flows"]), has_flows=bool(r["has_flows"]),
            num_sampled_flows=int(r["num_flows"]), traced_samples=int(r["traced_samples"]),
            lattice_shape=tuple(int(v) for v in r["lattice_shape"]),
            start_mode=bytes(r["start_mode"]).decode("utf-8", "replace"),
            plane_z=tuple(float(v) for v in r["plane_z"]),
            input_energy_range=(float(r["input_energy_range"][0]), float(r["input_energy_range"][1])),
        )

    def _segment(self, name: str, start: int, count: int, i: int) -> np.ndarray:
        bounds.check_rows(self._ds[name], start, count, self.path, name, f"batch {i}")
        return self._read(name, slice(start, start + count))

    def batch(self, i: int) -> BatchTelemetry:
        """The batch's telemetry, rebuilt exactly as it was recorded (flows included)."""
        i = self._check_index(i)
        rows = self._ds["batches/step_start"].shape[0]
        if rows <= i:
            raise RecordingError(f"{self.path}: inconsistent shapes: batch {i} is marked complete "
                                 f"but batches/step_start has {rows} rows")
        info = self.batch_info(i)
        t1 = info.num_steps + 1
        n = info.num_sampled_flows if info.has_flows else 0
        ds = self._ds
        has_plane_steps = ("batches/has_plane_energy_steps" in ds
                           and bool(self._read("batches/has_plane_energy_steps", i)))
        bounds.check_batch_bytes([*((d, t1) for k, d in ds.items() if k.startswith("steps/")
                                    and (has_plane_steps or k != "steps/plane_energy")),
                                  *((ds[f"flows/{k}"], n) for k in FLOW_FIELDS),
                                  (ds["flows/positions"], n * t1), (ds["flows/energy"], n * t1)], self.path, i)
        s0 = int(self._read("batches/step_start", i))
        agg = {name: self._segment(f"steps/{name}", s0, t1, i) for name in STEP_TRAILING
               if f"steps/{name}" in self._ds}
        agg["energy_bin_edges"] = self._read("batches/energy_bin_edges", i)
        plane_steps = self._segment("steps/plane_energy", s0, t1, i) if has_plane_steps else None
        flows = None
        if info.has_flows:
            f0 = int(self._read("batches/flow_start", i))
            p0 = int(self._read("batches/point_start", i))
            cols = {name: self._segment(f"flows/{name}", f0, n, i) for name in FLOW_FIELDS}
            flows = FlowSample(
                **cols,
                positions=self._segment("flows/positions", p0, n * t1, i).reshape(n, t1, 3),
                energy=self._segment("flows/energy", p0, n * t1, i).reshape(n, t1),
                total_flows=int(self._read("batches/sample_total_flows", i)),
                traced_samples=info.traced_samples,
            )
        return BatchTelemetry(
            lattice_shape=info.lattice_shape, start_mode=info.start_mode, plane_z=info.plane_z,
            input_energy_range=info.input_energy_range, aggregates=StepAggregates(**agg),
            plane_energy=self._read("batches/plane_energy", i),
            plane_reached=self._read("batches/plane_reached", i),
            flows=flows, total_flows=info.total_flows, plane_energy_steps=plane_steps,
            reason_names=self.reason_names,
        )

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_batches


def open_recording(path: str | os.PathLike) -> Recording:
    """Open a recording read-only; raises :class:`RecordingError` naming the file and the problem."""
    return Recording(path)
