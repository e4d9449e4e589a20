"""Recordings: batch telemetry in one HDF5 file, appended while training and read back lazily.

The schema is specified in ``docs/recording-format.md`` (readable without this code); this
module is its only writer and reader in the project.

Why the file is laid out as it is: a recording must survive its writer being killed (a
headless ``--record`` run stopped with SIGKILL, a crash) and must be readable *while* it grows
(the app following a live run). HDF5's SWMR mode (single writer, multiple readers) gives both —
the file on disk is kept consistent after every flush, and readers in other processes may open
and refresh it — but a SWMR writer may not create groups, datasets or attributes. So every
dataset is created up front with an unlimited leading axis and grows by resizing:

* ``batches/*`` — one row per batch (metadata, offsets, plane images, the ``complete`` flag);
* ``steps/*`` — per-step aggregates of all batches, concatenated along the step axis;
* ``flows/*`` — sampled flows of all batches, concatenated; trajectories are stored flat, one
  row per (flow, step), ``F·(T+1)`` rows per batch.

Each batch's segment of ``steps/*`` and ``flows/*`` starts on a chunk boundary, so appending a
batch never rewrites a chunk holding an earlier batch: a writer killed mid-append cannot damage
what was already committed. A batch becomes visible when its ``batches/complete`` entry is set
to 1, which is written and flushed only after all its data has been flushed.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from energy_flow.atomic import atomic_write
from energy_flow.errors import os_error, reason
from energy_flow.filelock import FileLock
from energy_flow.trace.telemetry import PERCENTILES, BatchTelemetry, FlowSample, StepAggregates

FORMAT = "energy-flow-recording"
SCHEMA_VERSION = 1

# Rows per chunk along the growing axis. Segments of a batch start on these boundaries.
TABLE_CHUNK = 64
STEP_CHUNK = 64
FLOW_CHUNK = 8192
POINT_CHUNK = 16384
#: Default filter for the growing datasets. lzf: at the debug preset it writes a batch about
#: twice as fast as gzip level 1 for ~15 % more bytes (docs/recording-format.md, "Measured
#: figures"); the writer runs inside the training loop, so its time matters more than bytes.
COMPRESSION = "lzf"
#: Accepted by RecordingWriter(compression=...): what h5py is asked for.
COMPRESSIONS = {"lzf": ("lzf", None), "none": (None, None),
                **{f"gzip-{level}": ("gzip", level) for level in range(1, 10)}}

#: Keys accepted in ``report_fields`` (all optional; unknown ones are rejected).
REPORT_FIELDS = ("step", "loss", "mse", "cosine_loss", "learning_rate", "landed_fraction")

_START_MODE_BYTES = 32


class RecordingError(ValueError):
    """A file that cannot be read as a recording; the message names the file and the problem."""


class DiskFullError(OSError):
    """A batch was refused because the disk may not hold it (errno ENOSPC); nothing was written."""


# ---------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class RecordingLayout:
    """The dimensions every batch of one recording shares (fixed when the file is created)."""

    width: int
    height: int
    depth: int
    planes: int
    bins: int

    @property
    def lattice_shape(self) -> tuple[int, int, int]:
        return (self.width, self.height, self.depth)


@dataclass(frozen=True)
class _Spec:
    group: str          # "batches", "steps" or "flows"
    trailing: tuple[int, ...]
    dtype: str
    chunk_rows: int
    compressed: bool


_STEP_TRAILING = {  # StepAggregates fields stored in steps/*, by trailing shape kind
    "active": "", "spawn_requested": "", "spawn_granted": "", "spawn_denied": "",
    "landed": "P", "faded": "", "timed_out": "", "energy_hist": "B", "energy_percentiles": "K",
    "delta_min": "3", "delta_max": "3", "delta_percentiles": "3K", "clamp_fraction": "",
    "coverage": "P", "deposited_energy": "P", "active_energy": "",
}
_INT_STEP_FIELDS = {"active", "spawn_requested", "spawn_granted", "spawn_denied", "landed", "faded",
                    "timed_out", "energy_hist"}
_FLOW_FIELDS = {"flow_id": "i8", "parent_id": "i8", "sample_index": "i4", "birth_step": "i4",
                "end_step": "i4", "reason": "i1"}


def _specs(layout: RecordingLayout) -> dict[str, _Spec]:
    """Every dataset of schema 1, by path."""
    p, k = layout.planes, len(PERCENTILES)
    kinds = {"": (), "P": (p,), "B": (layout.bins,), "K": (k,), "3": (3,), "3K": (3, k)}
    specs: dict[str, _Spec] = {}
    table = {"complete": ("u1", ()), "step": ("i8", ()), "loss": ("f8", ()), "mse": ("f8", ()),
             "cosine_loss": ("f8", ()), "learning_rate": ("f8", ()), "landed_fraction": ("f8", ()),
             "num_steps": ("i4", ()), "total_flows": ("i8", ()), "lattice_shape": ("i4", (3,)),
             "start_mode": (f"S{_START_MODE_BYTES}", ()), "plane_z": ("f8", (p,)),
             "input_energy_range": ("f8", (2,)), "energy_bin_edges": ("f4", (layout.bins + 1,)),
             "step_start": ("i8", ()), "has_flows": ("u1", ()), "flow_start": ("i8", ()),
             "num_flows": ("i8", ()), "point_start": ("i8", ()), "sample_total_flows": ("i8", ()),
             "traced_samples": ("i4", ())}
    for name, (dtype, trailing) in table.items():
        # Uncompressed: these chunks are rewritten in place by later batches, and an in-place
        # rewrite of an uncompressed chunk leaves the bytes of committed rows unchanged.
        specs[f"batches/{name}"] = _Spec("batches", trailing, dtype, TABLE_CHUNK, False)
    plane = (p, layout.height, layout.width)
    specs["batches/plane_energy"] = _Spec("batches", plane, "f4", 1, True)
    specs["batches/plane_reached"] = _Spec("batches", plane, "f4", 1, True)
    for name, kind in _STEP_TRAILING.items():
        dtype = "i8" if name in _INT_STEP_FIELDS else "f4"
        specs[f"steps/{name}"] = _Spec("steps", kinds[kind], dtype, STEP_CHUNK, True)
    for name, dtype in _FLOW_FIELDS.items():
        specs[f"flows/{name}"] = _Spec("flows", (), dtype, FLOW_CHUNK, True)
    specs["flows/positions"] = _Spec("flows", (3,), "f4", POINT_CHUNK, True)
    specs["flows/energy"] = _Spec("flows", (), "f4", POINT_CHUNK, True)
    return specs


def layout_from_config(config: Mapping[str, Any], source: str = "config") -> RecordingLayout:
    """The recording's dimensions from its config dict.

    Any other model's dict gives ``lattice_shape`` ``[W, H, D]``, ``plane_z`` (z of each output
    plane) and ``energy_hist_bins``; a dict without ``lattice_shape`` must be an
    :class:`~energy_flow.config.EnergyConfig` dict and is validated as one.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: config must be a dict, got {type(config).__name__}")
    if "lattice_shape" not in config and "lattice_width" in config:
        from energy_flow.config import EnergyConfig  # torch-free; imported only when needed
        c = EnergyConfig.from_dict(dict(config), source=source)
        return RecordingLayout(c.lattice_width, c.lattice_height, c.lattice_depth,
                               c.num_output_planes, c.energy_hist_bins)
    for key, what in (("lattice_shape", "[width, height, depth]"), ("plane_z", "z of each output plane"),
                      ("energy_hist_bins", "number of energy histogram bins")):
        if key not in config:
            raise ValueError(f"{source}: config needs {key!r} ({what})")
    shape = config["lattice_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in shape)):
        raise ValueError(f"{source}: lattice_shape must be three integers ≥ 2, got {shape!r}")
    planes = config["plane_z"]
    if (not isinstance(planes, (list, tuple)) or not planes
            or not all(isinstance(z, (int, float)) and not isinstance(z, bool) and -1 <= z <= 1
                       for z in planes)):
        raise ValueError(f"{source}: plane_z must be a non-empty list of numbers in [-1, 1], got {planes!r}")
    bins = config["energy_hist_bins"]
    if isinstance(bins, bool) or not isinstance(bins, int) or bins <= 0:
        raise ValueError(f"{source}: energy_hist_bins must be a positive integer, got {bins!r}")
    return RecordingLayout(shape[0], shape[1], shape[2], len(planes), bins)


def _align(n: int, chunk: int) -> int:
    return -(-n // chunk) * chunk


# ---------------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the repository this package runs from, or None when unknown.

    Unknown means: no git executable, not a git checkout (an installed wheel), or git did not
    answer within 2 s. Looked up once per process.
    """
    repo = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=2.0, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_provenance() -> dict[str, Any]:
    """What the writer adds to every recording's provenance: time, versions, git commit."""
    from energy_flow import __version__
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "packages": {"python": platform.python_version(), "energy_flow": __version__,
                     "numpy": np.__version__, "h5py": h5py.__version__,
                     "torch": _package_version("torch")},
        "git_commit": git_commit(),
    }


def report_fields_from(report: Any) -> dict[str, Any]:
    """``report_fields`` for :meth:`RecordingWriter.append_batch` from a TrainReport."""
    return {"step": report.step, "loss": report.loss, "mse": report.mse,
            "cosine_loss": report.cosine_loss, "learning_rate": report.learning_rate,
            "landed_fraction": report.flow_stats.landed_fraction}


def _to_json(value: Any, what: str, path: Path) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {what} is not JSON-serialisable: {exc}") from exc


# ---------------------------------------------------------------------------------- writer
class RecordingWriter:
    """Appends batches to a recording; each batch is durable once ``append_batch`` returns.

    ``mode``: ``"w"`` create, replacing an existing *recording* (any other non-empty file is
    refused: a writer never destroys what it cannot recreate), ``"x"`` create (fail if the file
    exists), ``"a"`` append to an existing recording made with the same config (an incomplete
    trailing batch left by a killed writer is overwritten). Readers in other processes may open
    the file at any time (SWMR) and call :meth:`Recording.refresh` to see new batches.
    ``compression`` (one of :data:`COMPRESSIONS`) only matters when the file is created;
    readers need no setting for it.

    One writer per file: the writer holds an exclusive lock (:mod:`energy_flow.filelock`) from
    before it opens the file until it is closed, and a second writer fails at once naming the
    holder's process id. A batch that would not fit on the disk is refused before any of it is
    written, so the file stays whole and closes cleanly (see :meth:`append_batch`).
    """

    def __init__(self, path: str | os.PathLike, config_dict: Mapping[str, Any],
                 provenance: Mapping[str, Any], mode: str = "w", compression: str = COMPRESSION):
        self.path = Path(path)
        if mode not in ("w", "x", "a"):
            raise ValueError(f"{self.path}: RecordingWriter mode must be 'w', 'x' or 'a', got {mode!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"{self.path}: compression must be one of {', '.join(COMPRESSIONS)}, "
                             f"got {compression!r}")
        self._compression = COMPRESSIONS[compression]
        if not isinstance(provenance, Mapping):
            raise ValueError(f"{self.path}: provenance must be a dict, got {type(provenance).__name__}")
        self.layout = layout_from_config(config_dict, source=f"{self.path}: config")
        config_json = _to_json(dict(config_dict), "config", self.path)
        self._specs = _specs(self.layout)
        self._file = None
        self._broken: str | None = None
        self._lock = FileLock(self.path, "recording").acquire()
        try:
            if mode == "w":
                _refuse_to_replace_non_recording(self.path)
        except BaseException:
            self._lock.release()
            raise
        try:
            # No raw-data chunk cache: every batch starts on fresh chunks and writes each dataset
            # once, so a cache never saves a read, yet HDF5 kept filling one per dataset — the
            # writer's memory grew ~0.04 MiB per tiny append without bound, and appends were
            # ~12 % slower with it (docs/reliability.md, "Memory while recording").
            self._file = h5py.File(self.path, "r+" if mode == "a" else mode, libver="latest",
                                   rdcc_nbytes=0)
        except OSError as exc:
            self._lock.release()
            if mode == "a" and "already open for write" in str(exc):
                raise RecordingError(
                    f"{self.path}: cannot append: its writer was killed before closing it (it stays "
                    "readable; `h5clear -s` clears the flag that blocks appending)") from None
            if mode == "x" and self.path.exists():
                raise os_error(f"{self.path}: cannot create recording: the file exists", exc.errno) from None
            raise os_error(f"{self.path}: cannot open recording for writing: {reason(exc)}", exc.errno) from None
        except BaseException:
            self._lock.release()
            raise
        try:
            if mode == "a":
                self._check_appendable(config_json)
            else:
                self._create(config_json, {**environment_provenance(), **provenance})
            self._ds = {name: self._file[name] for name in self._specs}
            self._rows = _count_complete(self._ds["batches/complete"][:])
            self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            self._lock.release()
            raise

    # -------------------------------------------------------------- structure
    def _create(self, config_json: str, provenance: dict) -> None:
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        f.attrs["config"] = config_json
        f.attrs["provenance"] = _to_json(provenance, "provenance", self.path)
        f.attrs["percentiles"] = np.asarray(PERCENTILES, dtype=np.float64)
        for name, spec in self._specs.items():
            filt, level = self._compression
            kwargs = {"compression": filt, "compression_opts": level} if spec.compressed and filt else {}
            f.create_dataset(name, shape=(0, *spec.trailing), maxshape=(None, *spec.trailing),
                             chunks=(spec.chunk_rows, *spec.trailing), dtype=spec.dtype, **kwargs)

    def _check_appendable(self, config_json: str) -> None:
        f = self._file
        _check_root(f, self.path)
        if json.loads(f.attrs["config"]) != json.loads(config_json):
            raise ValueError(f"{self.path}: cannot append: the config differs from the recording's; "
                             "start a new recording")
        for name, spec in self._specs.items():
            if name not in f:
                raise RecordingError(f"{self.path}: missing dataset {name!r}")
            if f[name].shape[1:] != spec.trailing or f[name].dtype != np.dtype(spec.dtype):
                raise RecordingError(f"{self.path}: dataset {name!r} has shape {f[name].shape[1:]} "
                                     f"{f[name].dtype}, this config needs {spec.trailing} {spec.dtype}")

    # -------------------------------------------------------------- appending
    @property
    def num_batches(self) -> int:
        return self._rows

    def append_batch(self, telemetry: BatchTelemetry, report_fields: Mapping[str, Any] | None = None) -> int:
        """Write one batch and flush it; returns its index.

        Everything is validated before the first byte is written, so a rejected batch leaves
        the file untouched. So is the free space of the disk: a batch that may not fit raises
        an OSError (errno ENOSPC) naming the file before anything is written, and the writer
        can still be closed cleanly. Should the disk fill anyway (another process writing to
        it meanwhile), HDF5 cannot flush or close the file any more: the writer is marked
        broken, its committed batches stay readable, and :func:`abandoned_writers` tells the
        program to end without HDF5's shutdown (which would crash on the unflushable file).
        """
        if self._file is None:
            raise ValueError(f"{self.path}: recording is closed")
        if self._broken:
            raise os_error(f"{self.path}: recording stopped after a failed write ({self._broken})", None)
        try:
            return self._append(telemetry, report_fields)
        except DiskFullError:
            raise  # refused before writing: the file is whole
        except (OSError, RuntimeError) as exc:
            code = _h5_errno(exc)
            self._broken = reason(exc)
            raise os_error(f"{self.path}: cannot write batch {self._rows}: {self._broken}", code) from None

    def _append(self, telemetry: BatchTelemetry, report_fields: Mapping[str, Any] | None) -> int:
        row = self._row_values(telemetry, report_fields or {})
        steps, flows, points = self._segments(telemetry)
        self._ensure_space([*steps.items(), *flows.items(), *points.items(),
                            *((f"batches/{k}", np.asarray(v)[None]) for k, v in row.items())])
        n = self._rows
        ds = self._ds
        starts = {"steps": _align(ds["steps/active"].shape[0], STEP_CHUNK),
                  "flows": _align(ds["flows/flow_id"].shape[0], FLOW_CHUNK),
                  "points": _align(ds["flows/energy"].shape[0], POINT_CHUNK)}
        row["step_start"] = starts["steps"]
        row["flow_start"] = starts["flows"]
        row["point_start"] = starts["points"]
        for name, values in steps.items():
            self._write(name, starts["steps"], values)
        for name, values in flows.items():
            self._write(name, starts["flows"], values)
        for name, values in points.items():
            self._write(name, starts["points"], values)
        for name, value in row.items():
            self._write(f"batches/{name}", n, np.asarray(value)[None])
        self._write("batches/complete", n, np.zeros(1, np.uint8))
        self._file.flush()
        ds["batches/complete"][n] = 1   # the commit: only now may readers use the batch
        self._file.flush()
        self._rows = n + 1
        return n

    def _write(self, name: str, start: int, values: np.ndarray) -> None:
        ds = self._ds[name]
        end = start + values.shape[0]
        if ds.shape[0] != end:
            ds.resize(end, axis=0)
        if values.shape[0]:
            ds[start:end] = values

    def _row_values(self, tel: BatchTelemetry, report: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(report) - set(REPORT_FIELDS))
        if unknown:
            raise ValueError(f"{self.path}: unknown report field(s) {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(REPORT_FIELDS)}")
        lay = self.layout
        if tuple(tel.lattice_shape) != lay.lattice_shape:
            raise ValueError(f"{self.path}: batch lattice_shape {tuple(tel.lattice_shape)} differs from "
                             f"the recording's {lay.lattice_shape}")
        if len(tel.plane_z) != lay.planes:
            raise ValueError(f"{self.path}: batch has {len(tel.plane_z)} output planes, the recording "
                             f"{lay.planes}")
        mode = tel.start_mode.encode("utf-8")
        if len(mode) > _START_MODE_BYTES:
            raise ValueError(f"{self.path}: start_mode {tel.start_mode!r} is longer than "
                             f"{_START_MODE_BYTES} bytes")
        step = report.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0):
            raise ValueError(f"{self.path}: report field 'step' must be an integer ≥ 0 or None, got {step!r}")
        row: dict[str, Any] = {"step": np.int64(-1 if step is None else step)}
        for key in REPORT_FIELDS[1:]:
            value = report.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise ValueError(f"{self.path}: report field {key!r} must be a number or None, got {value!r}")
            row[key] = np.float64(math.nan if value is None else value)
        flows = tel.flows
        edges = self._checked(tel.aggregates.energy_bin_edges, "aggregates.energy_bin_edges",
                              (lay.bins + 1,), "f4")
        row.update({
            "num_steps": np.int32(tel.num_steps), "total_flows": np.int64(tel.total_flows),
            "lattice_shape": np.asarray(tel.lattice_shape, np.int32), "start_mode": np.bytes_(mode),
            "plane_z": np.asarray(tel.plane_z, np.float64),
            "input_energy_range": np.asarray(tel.input_energy_range, np.float64),
            "energy_bin_edges": edges,
            "has_flows": np.uint8(flows is not None),
            "num_flows": np.int64(0 if flows is None else flows.num_flows),
            "sample_total_flows": np.int64(0 if flows is None else flows.total_flows),
            "traced_samples": np.int32(0 if flows is None else flows.traced_samples),
            "plane_energy": self._checked(tel.plane_energy, "plane_energy",
                                          self._specs["batches/plane_energy"].trailing, "f4"),
            "plane_reached": self._checked(tel.plane_reached, "plane_reached",
                                           self._specs["batches/plane_reached"].trailing, "f4"),
        })
        return row

    def _segments(self, tel: BatchTelemetry) -> tuple[dict, dict, dict]:
        rows = tel.num_steps + 1
        steps = {}
        for name in _STEP_TRAILING:
            spec = self._specs[f"steps/{name}"]
            steps[f"steps/{name}"] = self._checked(getattr(tel.aggregates, name), f"aggregates.{name}",
                                                   (rows, *spec.trailing), spec.dtype)
        flows: dict[str, np.ndarray] = {}
        points: dict[str, np.ndarray] = {}
        if tel.flows is not None:
            fs = tel.flows
            for name, dtype in _FLOW_FIELDS.items():
                flows[f"flows/{name}"] = self._checked(getattr(fs, name), f"flows.{name}",
                                                       (fs.num_flows,), dtype)
            pos = self._checked(fs.positions, "flows.positions", (fs.num_flows, rows, 3), "f4")
            energy = self._checked(fs.energy, "flows.energy", (fs.num_flows, rows), "f4")
            points["flows/positions"] = pos.reshape(-1, 3)
            points["flows/energy"] = energy.reshape(-1)
        return steps, flows, points

    def _checked(self, value: Any, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != shape:
            raise ValueError(f"{self.path}: telemetry field {name} has shape {arr.shape}, expected {shape}")
        if not np.can_cast(arr.dtype, np.dtype(dtype), casting="same_kind"):
            raise ValueError(f"{self.path}: telemetry field {name} has dtype {arr.dtype}, "
                             f"which cannot be stored as {np.dtype(dtype)}")
        return arr.astype(dtype, copy=False)

    def _ensure_space(self, writes: list[tuple[str, np.ndarray]]) -> None:
        """Refuse a batch the disk may not hold: an upper bound of the bytes it adds (every
        chunk it touches stored uncompressed, plus room for HDF5's metadata) against the free
        space. Writing into a full disk is what HDF5 cannot recover from."""
        need = _METADATA_HEADROOM
        for name, values in writes:
            ds = self._ds[name]
            chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
            need += (-(-max(values.shape[0], 1) // ds.chunks[0]) + 1) * chunk_bytes
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            err = DiskFullError(f"{self.path}: disk full: batch {self._rows} needs up to {need / 2**20:.1f} "
                                f"MiB, {free / 2**20:.1f} MiB free; the recording keeps its {self._rows} "
                                "complete batches")
            err.errno = errno.ENOSPC
            raise err

    # -------------------------------------------------------------- closing
    @property
    def broken(self) -> bool:
        """True after a write failed inside HDF5 (the file can no longer be closed)."""
        return self._broken is not None

    def close(self) -> None:
        """Close the file (clearing its open-for-write flag) and release the lock."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            if self._broken:
                _ABANDONED.append(file)  # closing would fail, and a failed close crashes HDF5 later
                return
            try:
                file.close()
            except (OSError, RuntimeError) as exc:
                _ABANDONED.append(file)
                raise os_error(f"{self.path}: cannot close recording: {reason(exc)}", _h5_errno(exc)) from None
        finally:
            self._lock.release()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Bytes reserved for HDF5 metadata (B-tree nodes, object headers) on top of a batch's chunks.
_METADATA_HEADROOM = 1 << 20
#: Files whose flush failed: never closed nor garbage-collected (either crashes HDF5).
_ABANDONED: list[h5py.File] = []


def abandoned_writers() -> bool:
    """True if a writer's file could not be closed; end the process with ``os._exit`` then."""
    return bool(_ABANDONED)


def _h5_errno(exc: BaseException) -> int | None:
    """The errno of an OS error, or the one HDF5 quotes inside its message (``errno = 28``)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = re.search(r"errno = (\d+)", str(exc))
    return int(found[1]) if found else None


def is_recording(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HDF5 file carrying this format's marker (also one left open by a
    killed writer). Never raises for a file that is simply something else."""
    path = Path(path)
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r", swmr=True) as f:
            marker = f.attrs.get("format")
    except (OSError, RuntimeError):
        return False
    if isinstance(marker, bytes):
        marker = marker.decode("utf-8", "replace")
    return marker == FORMAT


def _refuse_to_replace_non_recording(path: Path) -> None:
    if path.is_dir():
        raise os_error(f"{path}: is a directory, not a recording", errno.EISDIR)
    if path.exists() and path.stat().st_size > 0 and not is_recording(path):
        raise os_error(f"{path}: exists and is not a recording; refusing to replace it", errno.EEXIST)


def export_snapshot(path: str | os.PathLike, telemetry: BatchTelemetry,
                    report_fields: Mapping[str, Any] | None, config_dict: Mapping[str, Any],
                    provenance: Mapping[str, Any]) -> Path:
    """Write a one-batch recording atomically: ``path`` is either the complete file or untouched.

    The file is written next to ``path`` under a temporary name, fsynced and renamed over it,
    so a crash never leaves a half-written snapshot under the requested name. Raises OSError
    naming ``path`` when its directory cannot be written (no temporary file is left behind).
    """
    path = Path(path)
    with atomic_write(path, "snapshot") as tmp:
        with RecordingWriter(tmp, config_dict, provenance, mode="w") as writer:
            writer.append_batch(telemetry, report_fields)
    return path


# ---------------------------------------------------------------------------------- reader
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


def _count_complete(flags: np.ndarray) -> int:
    """Batches committed: the leading run of ``complete == 1``."""
    incomplete = np.flatnonzero(flags != 1)
    return int(incomplete[0]) if incomplete.size else int(flags.shape[0])


def _check_root(f: h5py.File, path: Path) -> None:
    marker = f.attrs.get("format")
    if isinstance(marker, bytes):
        marker = marker.decode("utf-8", "replace")
    if marker != FORMAT:
        found = "no format marker" if marker is None else f"format marker {marker!r}"
        raise RecordingError(f"{path}: not an energy-flow recording ({found}, expected {FORMAT!r})")
    version = f.attrs.get("schema_version")
    if version is None:
        raise RecordingError(f"{path}: missing attribute 'schema_version'")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise RecordingError(f"{path}: schema version {version} is newer than this program's "
                             f"{SCHEMA_VERSION}; upgrade energy-flow-studio")
    if version < 1:
        raise RecordingError(f"{path}: invalid schema version {version}")


def _load_json_attr(f: h5py.File, name: str, path: Path) -> dict:
    if name not in f.attrs:
        raise RecordingError(f"{path}: missing attribute {name!r}")
    try:
        value = json.loads(f.attrs[name])
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"{path}: attribute {name!r} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise RecordingError(f"{path}: attribute {name!r} must hold a JSON object")
    return value


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
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open the HDF5 file for reading ({reason(exc)})") from exc


class Recording:
    """Read-only, lazy view of a recording: opening reads attributes and the commit flags only.

    Use :func:`open_recording`. Arrays are read from disk when :meth:`batch` asks for them,
    one batch at a time, so the first batch of a large file shows as fast as a small one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = _open_h5(self.path)
        try:
            _check_root(self._file, self.path)
            self.schema_version = int(self._file.attrs["schema_version"])
            self.config: dict = _load_json_attr(self._file, "config", self.path)
            self.provenance: dict = _load_json_attr(self._file, "provenance", self.path)
            self._ds = self._datasets()
            self._check_shapes()
            self.num_batches = _count_complete(self._read("batches/complete", slice(None)))
        except BaseException:
            self._file.close()
            raise

    def _datasets(self) -> dict[str, h5py.Dataset]:
        names = _specs(RecordingLayout(2, 2, 2, 1, 1)).keys()  # names do not depend on the layout
        out = {}
        for name in names:
            obj = self._file.get(name)
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
        expected = _specs(RecordingLayout(image[2], image[1], 2, p, b))
        for name, spec in expected.items():
            got = ds[name].shape[1:]
            if got != spec.trailing:
                raise RecordingError(f"{self.path}: inconsistent shapes: {name} has rows of shape {got}, "
                                     f"expected {spec.trailing} (planes={p}, bins={b}, "
                                     f"plane image {image[1]}×{image[2]})")

    def _read(self, name: str, index: Any) -> np.ndarray:
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
        self.num_batches = _count_complete(self._read("batches/complete", slice(None)))
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
        """One ``batches/*`` column over all complete batches (e.g. ``"loss"`` for a timeline)."""
        key = f"batches/{name}"
        if key not in self._ds or self._ds[key].ndim != 1:
            raise KeyError(f"{self.path}: no per-batch scalar column {name!r}")
        return self._read(key, slice(0, self.num_batches))

    def batch_info(self, i: int) -> BatchInfo:
        i = self._check_index(i)
        r = {name.split("/", 1)[1]: self._read(name, i) for name in self._ds
             if name.startswith("batches/") and name not in ("batches/plane_energy", "batches/plane_reached")}
        step = int(r["step"])
        return BatchInfo(
            index=i, step=None if step < 0 else step, loss=float(r["loss"]), mse=float(r["mse"]),
            cosine_loss=float(r["cosine_loss"]), learning_rate=float(r["learning_rate"]),
            landed_fraction=float(r["landed_fraction"]), num_steps=int(r["num_steps"]),
            total_flows=int(r["total_flows"]), has_flows=bool(r["has_flows"]),
            num_sampled_flows=int(r["num_flows"]), traced_samples=int(r["traced_samples"]),
            lattice_shape=tuple(int(v) for v in r["lattice_shape"]),
            start_mode=bytes(r["start_mode"]).decode("utf-8"),
            plane_z=tuple(float(v) for v in r["plane_z"]),
            input_energy_range=(float(r["input_energy_range"][0]), float(r["input_energy_range"][1])),
        )

    def _segment(self, name: str, start: int, count: int, i: int) -> np.ndarray:
        size = self._ds[name].shape[0]
        if start < 0 or start + count > size:
            raise RecordingError(f"{self.path}: inconsistent shapes: batch {i} needs rows "
                                 f"{start}..{start + count} of {name}, which has {size}")
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
        s0 = int(self._read("batches/step_start", i))
        agg = {name: self._segment(f"steps/{name}", s0, t1, i) for name in _STEP_TRAILING}
        agg["energy_bin_edges"] = self._read("batches/energy_bin_edges", i)
        flows = None
        if info.has_flows:
            f0 = int(self._read("batches/flow_start", i))
            p0 = int(self._read("batches/point_start", i))
            n = info.num_sampled_flows
            cols = {name: self._segment(f"flows/{name}", f0, n, i) for name in _FLOW_FIELDS}
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
            flows=flows, total_flows=info.total_flows,
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
