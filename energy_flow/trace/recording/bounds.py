"""Readers are bounded: what a recording declares is checked against what it really holds before
anything is allocated for it.

An HDF5 file declares its datasets' shapes, dtypes and chunk shapes in a few bytes of metadata,
and h5py allocates whatever a read of them asks for. A 346 KB crafted recording declaring
10¹⁰ rows, 10⁹ histogram bins or a 60,000² plane made the readers ask for 9–295 GiB (the app
froze at 6.5 GB; issue 31). So, when a recording is opened:

* every dataset must have the dtype the schema gives it (a string where a count belongs is
  refused by name, not met in ``int()`` later), one row at most :data:`MAX_READ_BYTES`, and
  chunks of at most :data:`MAX_CHUNK_BYTES` (HDF5 decompresses a whole chunk to read any of it);
* the number of complete batches may not exceed the rows the file really stores for
  ``batches/plane_energy`` (every committed batch wrote its own chunk there): a flag column of
  ones cannot make a small file claim a million batches;

and every read a reader makes is checked first (:func:`check_read`): no single read asks for
more than :data:`MAX_READ_BYTES`, and row ranges must lie inside their dataset with
non-negative counts. A crafted file therefore costs at most about ``MAX_READ_BYTES`` plus one
chunk per read, whatever it declares; the app and the command lines name the problem instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from energy_flow.trace.recording.schema import RecordingError, Spec

#: The most one read of a recording may ask for. The largest real reads are a batch's
#: trajectories (a few MB at the largest preset) and one per-batch column over every batch
#: (8 bytes × batches): 256 MiB is 32 million batches of a column.
MAX_READ_BYTES = 256 << 20
#: The most one chunk may hold uncompressed (the writer's largest is a few MB).
MAX_CHUNK_BYTES = 64 << 20


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_datasets(datasets: Mapping[str, h5py.Dataset], expected: Mapping[str, Spec], path: Path) -> None:
    """Dtype, row size and chunk size of every dataset, from metadata alone."""
    for name, ds in datasets.items():
        spec = expected.get(name)
        if spec is not None and ds.dtype != np.dtype(spec.dtype):
            raise RecordingError(f"{path}: dataset {name} has dtype {ds.dtype}, the format stores "
                                 f"{np.dtype(spec.dtype)}")
        if ds.ndim == 0:
            raise RecordingError(f"{path}: dataset {name} is a scalar; the format stores rows")
        row = _row_bytes(ds)
        if row > MAX_READ_BYTES:
            raise RecordingError(f"{path}: dataset {name} declares rows of {_size(row)} (shape "
                                 f"{ds.shape[1:]}), more than a reader allocates ({_size(MAX_READ_BYTES)})")
        if ds.chunks is not None:
            chunk = int(np.prod(ds.chunks, dtype=np.float64)) * ds.dtype.itemsize
            if chunk > MAX_CHUNK_BYTES:
                raise RecordingError(f"{path}: dataset {name} declares chunks of {_size(chunk)}, more than "
                                     f"a reader decompresses ({_size(MAX_CHUNK_BYTES)})")


def flag_rows(plane: h5py.Dataset) -> slice:
    """The rows of ``batches/complete`` worth reading: one more than the plane images the file
    stores (every committed batch stored its own), so a flag column declaring a billion rows
    costs a read of the real ones only."""
    return slice(0, stored_rows(plane) + 1)


def check_batch_count(plane: h5py.Dataset, batches: int, path: Path) -> None:
    """``batches`` complete batches must each have their plane image stored in the file."""
    stored = stored_rows(plane)
    if batches > stored:
        raise RecordingError(f"{path}: more batches are marked complete than the file stores plane "
                             f"images for ({stored}); it is damaged or crafted")


def check_batch_bytes(parts: list[tuple[h5py.Dataset, int]], path: Path, i: int) -> None:
    """All the reads of one batch together (``(dataset, rows)`` pairs) within :data:`MAX_READ_BYTES`:
    counts a file declares (steps, flows) cannot add up many bounded reads to an unbounded one."""
    need = sum(rows * _row_bytes(ds) for ds, rows in parts)
    if need > MAX_READ_BYTES:
        raise RecordingError(f"{path}: batch {i} would take {_size(need)} to read, more than a reader "
                             f"allocates ({_size(MAX_READ_BYTES)}); its step or flow counts are damaged")


def stored_rows(ds: h5py.Dataset) -> int:
    """Rows of ``ds`` whose bytes the file really holds (allocated chunks × rows per chunk)."""
    if ds.chunks is not None:
        return min(ds.shape[0], ds.id.get_num_chunks() * ds.chunks[0])
    row = _row_bytes(ds)
    return ds.shape[0] if row == 0 else min(ds.shape[0], ds.id.get_storage_size() // row)


def check_read(ds: h5py.Dataset, index: Any, path: Path, name: str) -> None:
    """Refuse a read of ``ds[index]`` (an int or a slice along rows) asking for more than
    :data:`MAX_READ_BYTES`."""
    if isinstance(index, slice):
        rows = len(range(*index.indices(ds.shape[0])))
    else:
        rows = 1
    need = rows * _row_bytes(ds)
    if need > MAX_READ_BYTES:
        raise RecordingError(f"{path}: reading {rows} rows of {name} would take {_size(need)}, more than a "
                             f"reader allocates ({_size(MAX_READ_BYTES)}); the file declares more than it holds")


def check_rows(ds: h5py.Dataset, start: int, count: int, path: Path, name: str, what: str) -> None:
    """Rows ``start .. start+count`` of ``ds`` must exist (counts and offsets come from the file)."""
    size = ds.shape[0]
    if start < 0 or count < 0 or start + count > size:
        raise RecordingError(f"{path}: inconsistent shapes: {what} needs rows {start}..{start + count} of "
                             f"{name}, which has {size}")
    check_read(ds, slice(start, start + count), path, name)


def _row_bytes(ds: h5py.Dataset) -> int:
    return int(np.prod(ds.shape[1:], dtype=np.float64)) * ds.dtype.itemsize
