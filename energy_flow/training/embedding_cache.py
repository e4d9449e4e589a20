"""On-disk cache of teacher embeddings, keyed by model and text.

Encoding the bundled corpus with the teacher takes seconds on a CPU; every app start and every
headless run needs the same embeddings again. The cache keeps one small ``.npy`` file per text
(``<root>/<model dir>/<sha256(text)>.npy``): loading 600 of them takes a few tens of
milliseconds, writes never rewrite a shared shard, and concurrent writers cannot corrupt each
other because every file is written to a temporary name in the same directory and then moved
into place with :func:`os.replace` (atomic on POSIX and Windows).

A damaged file (truncated, not an ``.npy``, wrong shape, non-finite) is never fatal: it is
reported with a logged warning naming the file, treated as a miss, and overwritten by the next
:meth:`EmbeddingCache.put_many` for that text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Environment variable that overrides the default cache root.
CACHE_ENV_VAR = "ENERGY_FLOW_CACHE"


def default_cache_dir() -> Path:
    """``$ENERGY_FLOW_CACHE`` if set, else ``~/.cache/energy_flow/embeddings``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "energy_flow" / "embeddings"


def text_key(text: str) -> str:
    """The file stem of a text's entry: sha256 of its UTF-8 bytes (texts may be any length)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_dir_name(model_key: str) -> str:
    """A readable, filesystem-safe directory name that is still unique per model key.

    The sanitised key alone could collide (``a/b`` and ``a_b``), so a short hash of the exact
    key is appended.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("._-")[-60:] or "model"
    digest = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:12]
    return f"{safe}-{digest}"


class EmbeddingCache:
    """Embeddings of one model, one ``.npy`` file per text, under ``root``."""

    def __init__(self, root: Path | str, model_key: str) -> None:
        if not model_key:
            raise ValueError("EmbeddingCache needs a non-empty model_key")
        self.root = Path(root).expanduser()
        self.model_key = model_key
        self.directory = self.root / model_dir_name(model_key)

    def path_for(self, text: str) -> Path:
        """Where the embedding of ``text`` is (or would be) stored."""
        return self.directory / f"{text_key(text)}.npy"

    def get_many(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Cached float32 vectors, or None per text that is missing or whose file is damaged."""
        if not self.directory.is_dir():
            return [None] * len(texts)
        return [self._load(self.path_for(text)) for text in texts]

    def put_many(self, texts: Sequence[str], embeddings: np.ndarray) -> None:
        """Store one row of ``embeddings`` per text (atomically, replacing any old file)."""
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            raise ValueError(
                f"put_many got {len(texts)} texts but embeddings of shape {emb.shape}; "
                f"expected ({len(texts)}, D)"
            )
        if not np.all(np.isfinite(emb)):
            raise ValueError("put_many refuses to cache non-finite embeddings")
        self.directory.mkdir(parents=True, exist_ok=True)
        emb = emb.astype(np.float32, copy=False)
        for text, row in zip(texts, emb):
            self._write(self.path_for(text), row)

    def _load(self, path: Path) -> np.ndarray | None:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("Embedding cache file %s is unreadable (%s); treating it as a miss "
                           "and re-encoding", path, exc)
            return None
        if arr.ndim != 1 or arr.shape[0] == 0 or arr.dtype != np.float32:
            logger.warning("Embedding cache file %s holds an array of shape %s and dtype %s, "
                           "expected a 1-D float32 vector; treating it as a miss and re-encoding",
                           path, arr.shape, arr.dtype)
            return None
        if not np.all(np.isfinite(arr)):
            logger.warning("Embedding cache file %s contains non-finite values; treating it as "
                           "a miss and re-encoding", path)
            return None
        return arr

    def _write(self, path: Path, row: np.ndarray) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(row, dtype=np.float32), allow_pickle=False)
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
