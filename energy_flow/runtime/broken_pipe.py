"""What every command line does when its reader goes away (``… | head -1``): end quietly.

Python ignores SIGPIPE, so a write to a pipe whose reader has exited raises BrokenPipeError —
a traceback on the terminal, or, when the output was still buffered, "Exception ignored …"
from the interpreter's last flush and exit status 120. Every entry point (``main.py``,
``python -m energy_flow.trace``, ``python -m energy_flow.evaluate``) runs through
:func:`run_cli`, which ends such a run without a word on stderr and with
:data:`EXIT_BROKEN_PIPE`, the status a shell reports for a tool killed by SIGPIPE.

A long run that writes files is not cut short mid-batch: the headless trainer writes its lines
through :class:`StopOnBrokenPipe`, which turns the closed pipe into a stop request, so the run
stops after its batch and saves everything, as on SIGTERM (docs/reliability.md).
"""

from __future__ import annotations

import io
import os
import sys
from typing import Callable, TextIO

#: Exit status when stdout was closed early: 128 + SIGPIPE (13), as for a tool the signal killed.
EXIT_BROKEN_PIPE = 141


def run_cli(main: Callable[[], int | str | None]) -> int | str | None:
    """Run ``main`` (an entry point) and return its exit status, for ``sys.exit(run_cli(main))``.

    Output still buffered is flushed here, where a closed pipe can be caught, not in the
    interpreter's shutdown, where it cannot; SystemExit (argparse's ``--help``, its errors) is
    caught for the same reason and its status returned. On a closed pipe stdout is pointed at
    /dev/null (so nothing more can fail on it) and the status is :data:`EXIT_BROKEN_PIPE`.
    """
    try:
        try:
            code = main()
        except SystemExit as exc:
            code = exc.code
        sys.stdout.flush()
    except BrokenPipeError:
        silence(sys.stdout)
        return EXIT_BROKEN_PIPE
    return code


def silence(stream: TextIO) -> None:
    """Point the descriptor under ``stream`` at /dev/null; what is buffered or written later goes
    there. A stream without a descriptor (a StringIO) is left as it is."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class StopOnBrokenPipe(io.TextIOBase):
    """A text stream for a long run's lines that survives its reader going away.

    Each write is flushed at once, so the closed pipe is noticed at the next line (and ``| tee``
    shows the lines as they come). Then, instead of raising, the stream is silenced and
    ``on_close`` is called, once; later writes are dropped.
    """

    def __init__(self, stream: TextIO, on_close: Callable[[], None]):
        super().__init__()
        self._stream = stream
        self._on_close = on_close
        self.broken = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
                self._stream.flush()
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed()

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def _closed(self) -> None:
        self.broken = True
        silence(self._stream)
        self._on_close()
