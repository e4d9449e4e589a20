"""RecordingWriter: appends batches to a recording (SWMR), and one-batch snapshot exports.

Why it writes the way it does (see also ``docs/recording-format.md``): every dataset exists from
creation (a SWMR writer may not create any), each batch's segments start on chunk boundaries
(appending never rewrites a chunk of a committed batch), and a batch is committed by setting its
``batches/complete`` flag only after all its data is flushed, so a writer killed at any moment
leaves every committed batch readable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from energy_flow.files.atomic import atomic_write, move_into_place, remove_orphans, temp_name
from energy_flow.files.errors import os_error, reason
from energy_flow.files.filelock import FileLock
from energy_flow.trace.recording import bounds, report_columns
from energy_flow.trace.recording.containment import check_self_contained
from energy_flow.trace.recording.guards import (METADATA_HEADROOM, DiskFullError, abandon, disk_full,
                                                h5_errno, refuse_to_replace_non_recording)
from energy_flow.trace.recording.provenance import environment_provenance
from energy_flow.trace.recording.schema import (COMPRESSION, COMPRESSIONS, FLOW_CHUNK, FLOW_FIELDS, FORMAT,
                                                OPTIONAL_STEP_FIELDS, POINT_CHUNK, SCHEMA_VERSION,
                                                START_MODE_BYTES, STEP_CHUNK, STEP_TRAILING,
                                                RecordingError, align, check_root, count_complete,
                                                layout_from_config, load_json_attr, specs)
from energy_flow.trace.telemetry import PERCENTILES, SATURATION_NAMES, BatchTelemetry
from energy_flow.trace.training_signals import MODULES


#: No raw-data chunk cache: every batch starts on fresh chunks and writes each dataset once, so a
#: cache never saves a read, yet HDF5 kept filling one per dataset — the writer's memory grew with
#: every append (docs/reliability.md, "Memory while recording").
_CHUNK_CACHE_BYTES = 0


@contextmanager
def _stage(path: Path, action: str, stage: str, passes: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Name the file, the action and its stage in any error raised inside; OSErrors keep their
    errno, anything else becomes a :class:`RecordingError` (a ValueError, which callers report in
    one line). Errors of the types in ``passes`` already name the file and go through as they are;
    so does Ctrl+C (KeyboardInterrupt)."""
    try:
        yield
    except passes:
        raise
    except OSError as exc:
        raise os_error(f"{path}: cannot {action}: {stage}: {reason(exc)}", h5_errno(exc)) from exc
    except Exception as exc:
        raise RecordingError(f"{path}: cannot {action}: {stage} failed: {type(exc).__name__}: "
                             f"{reason(exc)}") from exc


def _to_json(value: Any, what: str, path: Path) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {what} is not JSON-serialisable: {exc}") from exc


class RecordingWriter:
    """Appends batches to a recording; each batch is durable once ``append_batch`` returns.

    ``mode``: ``"w"`` create, replacing an existing *recording* (any other non-empty file is
    refused: a writer never destroys what it cannot recreate), ``"x"`` create (fail if the file
    exists), ``"a"`` append to an existing recording made with the same config (an incomplete
    trailing batch left by a killed writer is overwritten). Readers in other processes may open
    the file at any time (SWMR) and call :meth:`Recording.refresh` to see new batches.
    ``compression`` (one of :data:`COMPRESSIONS`) only matters when the file is created;
    readers need no setting for it.

    A new file appears under ``path`` complete: it is built under a temporary name in the same
    folder (header, provenance, every dataset, SWMR on) and then renamed into place. A failed
    open — at any stage, Ctrl+C included — leaves nothing it created: no file, no temporary, no
    lock sidecar; an existing file (the recording "w" would replace, the one "a" appends to)
    stays byte for byte as it was. Its error names the file and the stage that failed.

    One writer per file: the writer holds an exclusive lock (:mod:`energy_flow.files.filelock`) from
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
        self._specs = specs(self.layout)
        self._file: h5py.File | None = None
        self._broken: str | None = None
        if mode != "a":
            # Whatever can fail without the disk fails before the disk is touched.
            with _stage(self.path, "create recording", "collecting provenance"):
                environment = environment_provenance()
            provenance_json = _to_json({**environment, **provenance}, "provenance", self.path)
        self._lock = FileLock(self.path, "recording").acquire()
        try:
            if mode == "a":
                self._open_existing(config_json)
            else:
                self._create_new(mode, config_json, provenance_json)
        except BaseException:
            self._lock.release()
            raise

    # -------------------------------------------------------------- opening
    def _create_new(self, mode: str, config_json: str, provenance_json: str) -> None:
        """Build the file under a temporary name in the same folder and give it its name only
        once its header and every dataset exist and SWMR is on. So a reader never finds a
        half-made recording under ``path``, and a failure at any stage (also Ctrl+C) leaves
        ``path`` as it was: absent, or the recording that "w" would have replaced."""
        if mode == "w":
            refuse_to_replace_non_recording(self.path)
        elif os.path.lexists(self.path):
            raise os_error(f"{self.path}: cannot create recording: the file exists", errno.EEXIST)
        remove_orphans(self.path)   # temporaries of creations that were killed
        tmp = temp_name(self.path)
        try:
            with _stage(self.path, "create recording", "creating the file"):
                self._file = h5py.File(tmp, "x", libver="latest", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            self._create(config_json, provenance_json)
            with _stage(self.path, "create recording", "starting SWMR mode"):
                self._attach()
            try:
                move_into_place(tmp, self.path, replace=mode == "w")
            except FileExistsError:
                raise os_error(f"{self.path}: cannot create recording: the file exists (it appeared "
                               "while the recording was being made)", errno.EEXIST) from None
            except OSError as exc:
                raise os_error(f"{self.path}: cannot create recording: cannot give it its name: "
                               f"{reason(exc)}", exc.errno) from None
        except BaseException:
            self._discard()
            tmp.unlink(missing_ok=True)
            raise

    def _open_existing(self, config_json: str) -> None:
        """Append mode: the file is checked read-only, and opened for writing only once it is
        known to be an appendable recording of this config. Opening and closing it changes no
        byte, so a failure at any stage leaves it as it was."""
        with self._open_for_append("r") as f:
            with _stage(self.path, "append to recording", "reading it", passes=(ValueError,)):
                check_self_contained(f, self.path)   # or the batches would land in another file
                self._check_appendable(f, config_json)
        self._file = self._open_for_append("r+")
        try:
            with _stage(self.path, "append to recording", "reading it", passes=(ValueError,)):
                check_self_contained(self._file, self.path)   # the file may have been swapped meanwhile
            with _stage(self.path, "append to recording", "starting SWMR mode"):
                self._attach()
        except BaseException:
            self._discard()
            raise

    def _open_for_append(self, how: str) -> h5py.File:
        try:
            return h5py.File(self.path, how, libver="latest", rdcc_nbytes=_CHUNK_CACHE_BYTES)
        except OSError as exc:
            if "already open for write" in str(exc):
                raise RecordingError(
                    f"{self.path}: cannot append: its writer was killed before closing it (it stays "
                    "readable; `h5clear -s` clears the flag that blocks appending)") from None
            raise os_error(f"{self.path}: cannot append to recording: {reason(exc)}", exc.errno) from None

    def _attach(self) -> None:
        self._ds = {name: self._file[name] for name in self._specs}
        plane = self._ds["batches/plane_energy"]
        self._rows = count_complete(self._ds["batches/complete"][bounds.flag_rows(plane)])
        bounds.check_batch_count(plane, self._rows, self.path)
        self._file.swmr_mode = True

    def _discard(self) -> None:
        """Close a file whose opening failed (a file HDF5 cannot close is abandoned, as in close)."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except (OSError, RuntimeError):
            abandon(file)

    # -------------------------------------------------------------- structure
    def _create(self, config_json: str, provenance_json: str) -> None:
        f = self._file
        with _stage(self.path, "create recording", "writing the root attributes"):
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            f.attrs["config"] = config_json
            f.attrs["provenance"] = provenance_json
            f.attrs["percentiles"] = np.asarray(PERCENTILES, dtype=np.float64)
            f.attrs["modules"] = json.dumps(list(MODULES))
            f.attrs["saturation_names"] = json.dumps(list(SATURATION_NAMES))
        filt, level = self._compression
        for name, spec in self._specs.items():
            kwargs = {"compression": filt, "compression_opts": level} if spec.compressed and filt else {}
            with _stage(self.path, "create recording", f"creating dataset {name}"):
                f.create_dataset(name, shape=(0, *spec.trailing), maxshape=(None, *spec.trailing),
                                 chunks=(spec.chunk_rows, *spec.trailing), dtype=spec.dtype, **kwargs)

    def _check_appendable(self, f: h5py.File, config_json: str) -> None:
        version = check_root(f, self.path)
        if version != SCHEMA_VERSION:
            raise RecordingError(f"{self.path}: cannot append: the recording has schema version {version}, "
                                 f"this program writes {SCHEMA_VERSION}; start a new recording")
        if load_json_attr(f, "config", self.path) != json.loads(config_json):
            raise ValueError(f"{self.path}: cannot append: the config differs from the recording's; "
                             "start a new recording")
        for name, spec in self._specs.items():
            if not isinstance(f.get(name), h5py.Dataset):
                raise RecordingError(f"{self.path}: missing dataset {name!r}")
            if f[name].shape[1:] != spec.trailing or f[name].dtype != np.dtype(spec.dtype):
                raise RecordingError(f"{self.path}: dataset {name!r} has shape {f[name].shape[1:]} "
                                     f"{f[name].dtype}, this config needs {spec.trailing} {spec.dtype}")
        bounds.check_datasets({name: f[name] for name in self._specs}, self._specs, self.path)

    # -------------------------------------------------------------- appending
    @property
    def num_batches(self) -> int:
        return self._rows

    def append_batch(self, telemetry: BatchTelemetry, report_fields: Mapping[str, Any] | None = None) -> int:
        """Write one batch and flush it; returns its index.

        Everything is validated before the first byte is written, so a rejected batch leaves
        the file untouched. So is the free space of the disk: a batch that may not fit raises
        :class:`~energy_flow.trace.recording.guards.DiskFullError` (errno ENOSPC) naming the
        file before anything is written, and the writer can still be closed cleanly. Should
        the disk fill anyway (another process writing to it meanwhile), HDF5 cannot flush or
        close the file any more: the writer is marked broken, its committed batches stay
        readable, and ``guards.abandoned_writers()`` tells the program to end without HDF5's
        shutdown (which would crash on the unflushable file).
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
            code = h5_errno(exc)
            self._broken = reason(exc)
            raise os_error(f"{self.path}: cannot write batch {self._rows}: {self._broken}", code) from None

    def _append(self, telemetry: BatchTelemetry, report_fields: Mapping[str, Any] | None) -> int:
        row = self._row_values(telemetry, report_fields or {})
        steps, flows, points = self._segments(telemetry)
        self._ensure_space([*steps.items(), *flows.items(), *points.items(),
                            *((f"batches/{k}", np.asarray(v)[None]) for k, v in row.items())])
        n = self._rows
        ds = self._ds
        starts = {"steps": align(ds["steps/active"].shape[0], STEP_CHUNK),
                  "flows": align(ds["flows/flow_id"].shape[0], FLOW_CHUNK),
                  "points": align(ds["flows/energy"].shape[0], POINT_CHUNK)}
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
        lay = self.layout
        if tuple(tel.lattice_shape) != lay.lattice_shape:
            raise ValueError(f"{self.path}: batch lattice_shape {tuple(tel.lattice_shape)} differs from "
                             f"the recording's {lay.lattice_shape}")
        if len(tel.plane_z) != lay.planes:
            raise ValueError(f"{self.path}: batch has {len(tel.plane_z)} output planes, the recording "
                             f"{lay.planes}")
        if tuple(tel.reason_names) != lay.reason_names:
            raise ValueError(f"{self.path}: batch reason_names {tuple(tel.reason_names)} differ from the "
                             f"recording's {lay.reason_names} (set them once, in the config)")
        mode = tel.start_mode.encode("utf-8")
        if len(mode) > START_MODE_BYTES:
            raise ValueError(f"{self.path}: start_mode {tel.start_mode!r} is longer than "
                             f"{START_MODE_BYTES} bytes")
        row = report_columns.encode(report, self.path, lay.planes)
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
            "has_plane_energy_steps": np.uint8(tel.plane_energy_steps is not None),
        })
        return row

    def _segments(self, tel: BatchTelemetry) -> tuple[dict, dict, dict]:
        rows = tel.num_steps + 1
        steps = {}
        for name in STEP_TRAILING:
            spec = self._specs[f"steps/{name}"]
            value = getattr(tel.aggregates, name)
            if value is None and name in OPTIONAL_STEP_FIELDS:   # not measured: NaN rows
                value = np.full((rows, *spec.trailing), np.nan, np.float32)
            steps[f"steps/{name}"] = self._checked(value, f"aggregates.{name}", (rows, *spec.trailing),
                                                   spec.dtype)
        if tel.plane_energy_steps is not None:
            spec = self._specs["steps/plane_energy"]
            steps["steps/plane_energy"] = self._checked(tel.plane_energy_steps, "plane_energy_steps",
                                                        (rows, *spec.trailing), "f4")
        flows: dict[str, np.ndarray] = {}
        points: dict[str, np.ndarray] = {}
        if tel.flows is not None:
            fs = tel.flows
            for name, dtype in FLOW_FIELDS.items():
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
        need = METADATA_HEADROOM
        for name, values in writes:
            ds = self._ds.get(name)
            if ds is None:
                continue
            chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
            need += (-(-max(values.shape[0], 1) // ds.chunks[0]) + 1) * chunk_bytes
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise disk_full(f"{self.path}: disk full: batch {self._rows} needs up to {need / 2**20:.1f} MiB, "
                            f"{free / 2**20:.1f} MiB free; the recording keeps its {self._rows} complete "
                            "batches")

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
                abandon(file)
                return
            try:
                file.close()
            except (OSError, RuntimeError) as exc:
                abandon(file)
                raise os_error(f"{self.path}: cannot close recording: {reason(exc)}", h5_errno(exc)) from None
        finally:
            self._lock.release()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_snapshot(path: str | os.PathLike, telemetry: BatchTelemetry,
                    report_fields: Mapping[str, Any] | None, config_dict: Mapping[str, Any],
                    provenance: Mapping[str, Any]) -> Path:
    """Write a one-batch recording atomically: ``path`` is either the complete file or untouched.

    The file is written next to ``path`` under a temporary name, fsynced and renamed over it,
    so a crash never leaves a half-written snapshot under the requested name. Raises OSError
    naming ``path`` when its directory cannot be written (no temporary file is left behind).
    """
    path = Path(path)
    refuse_to_replace_non_recording(path)   # an export replaces a recording, never another file
    with atomic_write(path, "snapshot") as tmp:
        with RecordingWriter(tmp, config_dict, provenance, mode="w") as writer:
            writer.append_batch(telemetry, report_fields)
    return path
