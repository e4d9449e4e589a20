"""How a headless run stops: after the current batch, whatever asked it to.

Ctrl+C (SIGINT), SIGTERM (a scheduler's or ``kill``'s polite stop), SIGHUP (the terminal
closed) and a failed write (a full disk under the recording or the checkpoint) all end a run
the same way: the batch in progress finishes, then the run writes the checkpoint and summary
it can, closes the recording cleanly, says in one line what was saved where, and exits with a
non-zero status that tells the causes apart. A second signal means "now": the default behaviour is restored and the signal re-raised.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

#: Exit statuses of a stopped run (129, 130 and 143 follow the shell's 128 + signal number).
#: SIGHUP (the terminal or ssh session closed) is a polite stop like SIGTERM: before, it killed
#: the run with nothing saved and the recording left open-for-write.
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
#: A checkpoint, summary or recording write failed (EX_IOERR of sysexits.h).
EXIT_WRITE_FAILED = 74

_SIGNAL_EXITS = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM,
                 **({signal.SIGHUP: EXIT_SIGHUP} if hasattr(signal, "SIGHUP") else {})}


@dataclass(frozen=True)
class StopRequest:
    why: str          # "SIGINT", "SIGTERM", or what failed to be written
    exit_code: int


class RunControl:
    """Collects the first stop request; installs the signal handlers while used as a context."""

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self._previous: dict[int, object] = {}
        self._signalled = False

    @property
    def stopping(self) -> bool:
        return self.request is not None

    def stop(self, why: str, exit_code: int) -> None:
        """Ask the run to stop after the current batch (the first request wins)."""
        if self.request is None:
            self.request = StopRequest(why, exit_code)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self._signalled:
            # The second signal: give it its default meaning and deliver it again.
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self._signalled = True
        self.stop(name, _SIGNAL_EXITS[signum])

    def __enter__(self) -> "RunControl":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in _SIGNAL_EXITS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
