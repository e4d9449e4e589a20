"""Short, one-line error texts from the OS and from HDF5.

Errors reach the user as one line (``main.py: error: ...``). Python's ``str(OSError)`` starts
with ``[Errno N]``, so wrapping one OSError in another repeats it ("[Errno 28] ...: [Errno 28]
..."), and h5py's messages carry HDF5's internals (file descriptors, buffer addresses, byte
counts). These helpers keep the reason a user can act on and drop the rest, while the errno
stays available to code as ``exc.errno``.
"""

from __future__ import annotations

import re

_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")
_H5_ERROR_MESSAGE = re.compile(r"error message = '([^']*)'")


def reason(exc: BaseException) -> str:
    """The user-facing reason of ``exc``: no ``[Errno N]`` prefix, no HDF5 internals."""
    if isinstance(exc, OSError) and exc.strerror and len(exc.args) == 2:
        text = exc.strerror  # callers name the path themselves (a temporary's name helps no one)
    else:
        text = _ERRNO_PREFIX.sub("", str(exc))
    # h5py: "Unable to synchronously create file (unable to truncate a file which is already open)"
    text = re.sub(r"\bsynchronously ", "", text)
    found = _H5_ERROR_MESSAGE.search(text)
    if found:  # HDF5 wraps the OS's own message in a long parenthesis of internals
        head = text.split(" (", 1)[0]
        return f"{head}: {found[1]}"
    return text.splitlines()[0] if text else type(exc).__name__


def os_error(message: str, errno: int | None) -> OSError:
    """An OSError whose text is ``message`` alone, with ``errno`` kept as an attribute."""
    err = OSError(message)
    err.errno = errno
    return err
