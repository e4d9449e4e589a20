"""Atomic file writes: under its real name a file is either complete or untouched.

Checkpoints, exported recordings and exported images are all written the same way: to a
temporary file in the target's directory (so the rename cannot cross file systems), flushed to
disk, renamed over the target, and the directory entry flushed too. A failure at any point
removes the temporary file and raises an OSError that names the target.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write(path: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (``what`` names it in errors)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
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


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(exc: OSError, what: str, path: Path) -> OSError:
    message = f"cannot write {what} {path}: {exc.strerror or exc}"
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)
