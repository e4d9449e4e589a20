"""Input files are opened as regular files or not at all.

A FIFO given as ``--config`` or ``--resume`` made the run wait forever for a writer, and
``/dev/zero`` was read until memory ran out (issue 31). So an input is opened without blocking
(``O_NONBLOCK``: a FIFO opens at once instead of waiting), checked to be a regular file on the
descriptor itself (no window in which the name could be swapped), and only then read, with a
size limit where the whole file is read into memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from energy_flow.files.errors import reason

#: The largest config file read (a config is a few kB; anything bigger is not one).
CONFIG_MAX_BYTES = 16 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """``path`` opened for reading (binary) if it is a regular file; ValueError naming ``what``
    and the path otherwise (missing, unreadable, a FIFO, a device, a directory)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ValueError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {p} is a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"{what} {p} cannot be opened ({reason(exc)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ValueError(f"{what} {p} is {kind}, not a regular file; refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit``."""
    with open_regular(path, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit >> 20} MiB; it is not one")
    return data
