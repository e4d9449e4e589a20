"""What keeps a recording's file safe from its writers: which files may be replaced, how a full
disk is refused, and what happens to a file HDF5 can no longer close (docs/reliability.md).

HDF5 cannot recover from a write that hits a full disk: its flush and close then fail, and the
library crashes at exit on the unflushable file. So the writer refuses a batch the disk may not
hold before writing any of it (:class:`DiskFullError`), and a file that met a failed write
anyway is kept referenced and never closed (:func:`abandon`), so the program can end without
HDF5's shutdown (:func:`abandoned_writers`).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import h5py

from energy_flow.files.errors import os_error
from energy_flow.trace.recording.schema import FORMAT

#: Bytes reserved for HDF5 metadata (B-tree nodes, object headers) on top of a batch's chunks.
METADATA_HEADROOM = 1 << 20

_ABANDONED: list[h5py.File] = []


class DiskFullError(OSError):
    """A batch was refused because the disk may not hold it (errno ENOSPC); nothing was written."""


def disk_full(message: str) -> DiskFullError:
    err = DiskFullError(message)
    err.errno = errno.ENOSPC
    return err


def abandon(file: h5py.File) -> None:
    """Keep ``file`` alive and unclosed: closing it would fail, and a failed close crashes HDF5."""
    _ABANDONED.append(file)


def abandoned_writers() -> bool:
    """True if a writer's file could not be closed; end the process with ``os._exit`` then."""
    return bool(_ABANDONED)


def h5_errno(exc: BaseException) -> int | None:
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
    return isinstance(marker, str) and marker == FORMAT   # an array-valued marker is not ours


def refuse_to_replace_non_recording(path: Path) -> None:
    """A writer in mode "w" replaces a recording or an empty file, never anything else."""
    if path.is_dir():
        raise os_error(f"{path}: is a directory, not a recording", errno.EISDIR)
    if path.exists() and path.stat().st_size > 0 and not is_recording(path):
        raise os_error(f"{path}: exists and is not a recording; refusing to replace it", errno.EEXIST)
