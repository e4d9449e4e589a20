"""Output paths are checked before the first batch, not after the last.

A run that trains for an hour and then cannot write its checkpoint (a missing folder, a path
that is a directory, a read-only mount) has lost the hour. So every path a run will write —
checkpoint, summary, recording — is checked when the run starts: its folder exists and
accepts a new file (tested by creating and removing one, which is the only check that is
right for read-only mounts, ACLs and root alike), and the path itself is not a directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from energy_flow.files.errors import reason


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, or ValueError naming ``what``, the path and the problem."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; give a file path")
    if p.exists() and not p.is_file():
        raise ValueError(f"{what} {p} exists and is not a regular file")
    folder = p.parent
    if not folder.exists():
        raise ValueError(f"{what} {p}: folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{what} {p}: {folder} is not a folder")
    probe = folder / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise ValueError(f"{what} {p}: cannot create files in {folder} ({reason(exc)})") from None
    probe.unlink(missing_ok=True)
    return p


def check_distinct(paths: dict[str, str | os.PathLike | None],
                   allowed: frozenset[frozenset[str]] = frozenset()) -> None:
    """Refuse two roles given the same file (e.g. ``--summary`` equal to ``--config``: the run
    would overwrite its own input). Files are compared by identity — the same file reached
    through a symlink, a hard link or another spelling is the same file — and, where a path
    does not exist yet, by its resolved name. ``allowed`` holds pairs of roles that may share a
    file (``--resume`` and ``--checkpoint``: continue a run and keep saving to its file)."""
    seen: list[tuple[str, tuple, str | os.PathLike]] = []
    for what, path in paths.items():
        if path is None:
            continue
        key = _identity(Path(path))
        for other, other_key, _ in seen:
            if key == other_key and frozenset((what, other)) not in allowed:
                raise ValueError(f"{what} and {other} are the same file ({path}); give each its own path")
        seen.append((what, key, path))


def _identity(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ("name", str(path.resolve()))
    return ("file", st.st_dev, st.st_ino)
