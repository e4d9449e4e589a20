"""Every command fails by name: one line naming the flag, field or file, and exit status 2.

The sweep of issue 31 found ``evaluate`` and ``scripts/export_embeddings.py`` giving tracebacks
for almost every bad input, and argparse printing its whole usage before the one line that
matters. Entry points build their parser as a :class:`OneLineParser` and run their body through
:func:`fails_by_name`, which turns the errors this project raises for bad input (ValueError with
its subclasses — config, data, checkpoint and recording errors — and OSError naming a file) into
``PROG: error: MESSAGE`` on stderr and :data:`EXIT_BAD_INPUT`. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from energy_flow.files.errors import reason

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end with one line naming the problem (and exit status 2)."""

    def error(self, message: str) -> NoReturn:  # argparse's default prints the whole usage first
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def fails_by_name(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; bad input (ValueError, OSError) becomes one line on stderr and status 2."""
    try:
        code = body()
    except BrokenPipeError:
        raise   # a closed stdout is not bad input: energy_flow.runtime.broken_pipe ends the run quietly
    except (ValueError, OSError) as exc:
        text = reason(exc) if isinstance(exc, OSError) else (str(exc).strip().splitlines() or [repr(exc)])[0]
        print(f"{prog}: error: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if code is None else code
