"""Provenance the writer adds to every recording: creation time, package versions, git commit.

Kept apart from the provenance of the *recorded model* (``provenance["model"]``, given by the
caller, e.g. :class:`~energy_flow.trace.recorder.FlowRecorder`): ``packages`` always describes
the program that wrote the file.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import h5py
import numpy as np


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the repository this package runs from, or None when unknown.

    Unknown means: no git executable, not a git checkout (an installed wheel), or git did not
    answer within 2 s. Looked up once per process.
    """
    repo = Path(__file__).resolve().parents[3]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=2.0, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_provenance() -> dict[str, Any]:
    """What the writer adds to every recording's provenance: time, versions, git commit."""
    from energy_flow import __version__
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "packages": {"python": platform.python_version(), "energy_flow": __version__,
                     "numpy": np.__version__, "h5py": h5py.__version__,
                     "torch": _package_version("torch")},
        "git_commit": git_commit(),
    }

