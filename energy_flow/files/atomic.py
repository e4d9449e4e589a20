"""Atomic file writes: under its real name a file is either complete or untouched.

Checkpoints, summaries, exported recordings and exported images are all written the same way:
to a temporary file in the target's directory (so the rename cannot cross file systems),
flushed to disk, renamed over the target, and the directory entry flushed too. A failure at
any point removes the temporary file and raises an OSError that names the target. A new
recording is built the same way (under :func:`temp_name`, then :func:`move_into_place`), but
stays open for appending once it has its name.

A process killed mid-write (kill -9, power loss) cannot remove its temporary file; the next
save to the same path removes such orphans — temporaries of that target whose writer process
no longer exists — so repeated crashes do not fill the disk.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from energy_flow.files.errors import os_error, reason


def temp_name(path: Path) -> Path:
    """The temporary name a write to ``path`` by this process uses (one per call)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


@contextmanager
def atomic_write(path: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (``what`` names it in errors)."""
    path = Path(path)
    remove_orphans(path)
    tmp = temp_name(path)
    try:
        # Created up front (usual umask permissions), so an unwritable place fails before any work.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise _named(exc, what, path) from exc
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _named(exc, what, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY)  # make the rename itself durable


#: Errors of ``os.link`` meaning "this file system has no hard links", not "the name is taken".
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


def move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    """Give the complete file ``tmp`` its real name ``path`` (same folder) in one step.

    ``replace``: whatever is under ``path`` is replaced at once (``os.replace``). Otherwise an
    existing ``path`` is never replaced: a hard link gives the file the name only if the name is
    free (FileExistsError otherwise), then the temporary name goes. Where the file system has no
    hard links, the existence check and the rename are two steps. A temporary name that cannot
    be removed once the file has its name is left to :func:`remove_orphans`: the file is in
    place, and that is what the caller asked for.
    """
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    try:
        tmp.unlink()
    except OSError:
        pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    path = Path(path)
    with atomic_write(path, what) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return path


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer than asked). Tests replace this to fake ENOSPC."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove_orphans(path: Path) -> list[Path]:
    """Remove temporaries of ``path`` left by writers that no longer run; returns what was removed.

    Only names of the exact form :func:`temp_name` gives are considered, and a temporary whose
    process still exists is kept (it may be a save in progress in another process).
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed  # an unreadable folder: the write itself will report the problem
    for entry in entries:
        found = pattern.match(entry.name)
        if found and not _process_exists(int(found[1])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # raced with another cleaner, or not ours to remove: nothing lost
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(exc: OSError, what: str, path: Path) -> OSError:
    return os_error(f"cannot write {what} {path}: {reason(exc)}", exc.errno)
