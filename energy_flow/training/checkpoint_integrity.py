"""What makes a checkpoint trustworthy: a checksum of its contents, finite values throughout,
every value of the kind the model expects, and a file that is one before it is replaced.

Why each exists (issue 31): ``torch.load`` checks no checksum, so 64 flipped bytes in a tensor
loaded silently; non-finite optimizer state resumed, turned the weights to NaN a few batches
later, and the run then saved those weights over the only good copy; a string where a number
belongs ended in a traceback deep inside the optimizer; and ``--checkpoint PATH`` replaced
whatever was at PATH, a recording included.

The checksum is SHA-256 over a canonical encoding of everything the checkpoint holds (every
tensor's dtype, shape and bytes; every plain value's type and text; keys in order), stored
under ``checksum``. It is computed from the values, not from the file's bytes, so it needs no
second pass over the file and is independent of how torch lays out its zip archive: loading
gives back the same values or the checksum names the file as changed.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

#: What a checkpoint's ``format`` entry says.
FORMAT = "energy-flow-checkpoint"
#: The key the checksum is stored under (it is not part of what it covers).
CHECKSUM_KEY = "checksum"
#: The largest pickle (``data.pkl``) read to tell whether a file is a checkpoint; the tensors
#: live in other members, so a real checkpoint's is a few hundred kB.
_PICKLE_LIMIT = 64 << 20


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``state`` without its checksum entry, in a canonical encoding."""
    h = hashlib.sha256()
    for chunk in _encode({k: v for k, v in state.items() if k != CHECKSUM_KEY}):
        h.update(chunk)
    return h.hexdigest()


def _encode(value: Any) -> Iterator[bytes]:
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        yield f"T{t.dtype}{tuple(t.shape)}:".encode()
        yield t.reshape(-1).view(torch.uint8).numpy().tobytes()
    elif isinstance(value, dict):
        yield f"D{len(value)}:".encode()
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            yield from _encode(key)
            yield from _encode(value[key])
    elif isinstance(value, (list, tuple)):
        yield f"{'L' if isinstance(value, list) else 'U'}{len(value)}:".encode()
        for item in value:
            yield from _encode(item)
    else:
        text = repr(value)
        yield f"S{type(value).__name__}{len(text)}:{text}".encode()


def nonfinite_entries(tensors: dict[str, Any], what: str) -> list[str]:
    """Dotted names (``what`` first) of the floating tensors, and NaN floats, in a nested dict
    that hold NaN or inf, e.g. ``optimizer state.0.exp_avg (3 non-finite)``."""
    found: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                found.append(f"{where} ({int((~torch.isfinite(value)).sum())} non-finite)")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}.{i}" if where else str(i))
        elif isinstance(value, float) and math.isnan(value):
            found.append(f"{where} (NaN)")

    walk(tensors, what)
    return found


def check_like(loaded: Any, reference: Any, where: str) -> None:
    """ValueError naming ``where`` if ``loaded`` holds a value of another kind than the model's
    own ``reference`` (a string where a number belongs, a list of another length, ...)."""
    if isinstance(reference, dict):
        if not isinstance(loaded, dict):
            raise ValueError(f"{where} holds a {type(loaded).__name__}, expected a dict")
        for key, ref in reference.items():
            if key in loaded:
                check_like(loaded[key], ref, f"{where}[{key!r}]")
    elif isinstance(reference, (list, tuple)):
        if not isinstance(loaded, (list, tuple)) or len(loaded) != len(reference):
            raise ValueError(f"{where} holds {_describe(loaded)}, expected a list of {len(reference)}")
        for i, (item, ref) in enumerate(zip(loaded, reference)):
            check_like(item, ref, f"{where}[{i}]")
    elif _kind(reference) != "none" and _kind(loaded) != _kind(reference):
        raise ValueError(f"{where} holds {_describe(loaded)}, expected a {_kind(reference)}")


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _describe(value: Any) -> str:
    return f"a {_kind(value)} ({value!r:.40})" if not isinstance(value, torch.Tensor) else "a tensor"


def is_checkpoint_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a zip archive as ``torch.save`` writes whose pickle names this
    project's checkpoint format. Nothing is unpickled; never raises for another kind of file."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or pickles[0].file_size > _PICKLE_LIMIT:
                return False
            return FORMAT.encode() in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, EOFError):
        return False


def refuse_to_replace_non_checkpoint(path: str | os.PathLike, what: str) -> None:
    """ValueError if ``path`` exists, is not empty, and is not a checkpoint: a checkpoint path
    given by mistake (a recording, the config, data) must not be replaced by the run."""
    p = Path(path)
    try:
        size = p.stat().st_size if p.is_file() else None
    except OSError:
        return
    if size and not is_checkpoint_file(p):
        raise ValueError(f"{what} {p}: the file exists and is not a checkpoint; refusing to replace it; "
                         "choose another path")
