"""An exclusive, process-wide lock on an output file: one writer per recording.

HDF5's own file lock cannot do this job: a SWMR writer gives it up as soon as it starts SWMR
mode (so readers may open the file), after which a second writer could open the same file
and truncate it under the first. So each writer also holds ``fcntl.flock`` on a sidecar file
``<name>.lock`` next to the file, with its process id written in it. The kernel releases the
lock when the holder exits in any way (kill -9 included), so a stale sidecar never blocks
anyone; the next writer simply takes it. A second writer fails at once with a message naming
the file and the holder's process id.

The sidecar is removed on release. Because removing it while another process may have just
opened it would let two processes lock two different files of the same name, a lock is only
taken as held once the locked file is still the one under the sidecar name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from energy_flow.files.errors import os_error, reason


#: Never follow a symbolic link at the sidecar's name (0 where the platform has no such flag).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileLockedError(OSError):
    """Another process holds the lock; the message names the file and the holder's PID."""


def lock_path(path: Path) -> Path:
    return path.parent / f"{path.name}.lock"


class FileLock:
    """Hold with ``acquire()`` / ``release()`` or as a context manager; never blocks."""

    def __init__(self, path: str | os.PathLike, what: str = "file"):
        self.path = Path(path)
        self.what = what
        self.sidecar = lock_path(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FileLock":
        """Take the lock or fail at once. A failure (also Ctrl+C) leaves no descriptor open and
        no sidecar this call created."""
        if self._fd is not None:
            return self
        while True:
            fd, created = self._open_sidecar()
            locked = False
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_pid(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise FileLockedError(f"{self.path}: {self.what} is being written by {who} "
                                          f"(lock {self.sidecar.name}); wait for it to finish or choose "
                                          "another path") from None
                locked = True
                if not _same_file(fd, self.sidecar):
                    os.close(fd)  # the previous holder removed the sidecar after we opened it: retry
                    continue
                try:
                    _write_pid(fd)
                except OSError as exc:
                    raise self._cannot("write", exc) from None
            except BaseException:
                # Only a sidecar this call created and locked is removed: one still unlocked may
                # already be another writer's, and a stale one was there before.
                try:
                    if created and locked:
                        self.sidecar.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only folder: the unlocked sidecar is harmless
                finally:
                    os.close(fd)
                raise
            self._fd = fd
            return self

    def _open_sidecar(self) -> tuple[int, bool]:
        """A descriptor of the sidecar, and whether this call created it.

        The sidecar is never followed through a link, nor opened if it is anything but a
        regular file with one name: a ``<name>.lock`` planted as a symlink or hard link to
        another file would otherwise have that file's contents replaced by a process id, and a
        FIFO would block. O_EXCL never follows a link; the second open uses O_NOFOLLOW, and the
        descriptor itself is checked (no window for swapping the name).
        """
        while True:
            try:
                return os.open(self.sidecar, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644), True
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._cannot("create", exc) from None
            try:
                fd = os.open(self.sidecar, os.O_RDWR | _NOFOLLOW | os.O_NONBLOCK)
            except FileNotFoundError:
                continue  # its holder removed it between the two opens: create it
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._refused("is a symbolic link") from None
                raise self._cannot("open", exc) from None
            st = os.fstat(fd)
            problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode)
                       else f"has {st.st_nlink} names (a hard link to another file)" if st.st_nlink != 1
                       else None)
            if problem:
                os.close(fd)
                raise self._refused(problem)
            os.set_blocking(fd, True)
            return fd, False

    def _refused(self, problem: str) -> OSError:
        return os_error(f"cannot lock {self.what} {self.path}: {self.sidecar.name} {problem}; refusing "
                        "to use it (it may point at another file); remove it and try again", errno.EPERM)

    def _cannot(self, verb: str, exc: OSError) -> OSError:
        return os_error(f"cannot lock {self.what} {self.path}: cannot {verb} {self.sidecar.name} "
                        f"({reason(exc)})", exc.errno)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.sidecar.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the unlocked sidecar is harmless
        finally:
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _write_pid(fd: int) -> None:
    """Say who holds the lock (a full disk fails here; tests replace this to fake it)."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
