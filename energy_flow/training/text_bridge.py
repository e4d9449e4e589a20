"""Text bridge: turns output embeddings back into the nearest known texts.

The network's outputs are embeddings; a researcher wants to read them. The bridge holds a
fixed set of candidate texts with their (unit-normalised) embeddings and answers, for each
output row, the top-k candidates by cosine similarity. It also measures top-1 retrieval
accuracy, which says more about whether the model learned the mapping than the loss alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from energy_flow.training.data import PairDataset


def _to_numpy_2d(name: str, value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"TextBridge: {name} must be 2-D [N, D], got shape {arr.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
    if bad.size:
        raise ValueError(f"TextBridge: {name} row {int(bad[0])} contains non-finite values")
    return arr


class TextBridge:
    """Cosine nearest-neighbour lookup from embeddings to a fixed list of texts."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray | torch.Tensor) -> None:
        emb = _to_numpy_2d("embeddings", embeddings)
        texts = list(texts)
        if len(texts) != emb.shape[0]:
            raise ValueError(f"TextBridge: {len(texts)} texts but {emb.shape[0]} embedding rows")
        if not texts:
            raise ValueError("TextBridge needs at least one text")
        norms = np.linalg.norm(emb, axis=1)
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(f"TextBridge: embedding row {int(zero[0])} ({texts[int(zero[0])]!r}) "
                             "is all zeros and has no direction")
        self.texts: list[str] = texts
        self.embeddings: np.ndarray = emb / norms[:, None]
        self.embeddings.flags.writeable = False
        #: For a bridge built by :meth:`from_dataset`: dataset index → index into ``texts``.
        self.text_index_of_sample: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_dataset(cls, ds: "PairDataset") -> "TextBridge":
        """A bridge over the distinct target texts of ``ds``.

        Duplicates: a target text that occurs in several pairs appears once, with the embedding
        of its first occurrence (the teacher gives equal texts equal embeddings anyway).
        ``text_index_of_sample[i]`` is the bridge index of pair ``i``'s target, so
        :meth:`top1_accuracy_for_samples` can score a batch by its dataset indices.
        """
        if ds.target_texts is None:
            raise ValueError(f"TextBridge.from_dataset: dataset from {ds.provenance.source} has no "
                             "target texts (precomputed embeddings cannot be decoded to text)")
        first: dict[str, int] = {}
        mapping = np.empty(len(ds.target_texts), dtype=np.int64)
        rows: list[int] = []
        for i, text in enumerate(ds.target_texts):
            j = first.get(text)
            if j is None:
                j = first[text] = len(rows)
                rows.append(i)
            mapping[i] = j
        bridge = cls([ds.target_texts[i] for i in rows], ds.targets[rows])
        mapping.flags.writeable = False
        bridge.text_index_of_sample = mapping
        return bridge

    def similarities(self, outputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Cosine similarity ``[B, M]`` of each output row to each text (zero rows score 0)."""
        out = _to_numpy_2d("outputs", outputs)
        if out.shape[1] != self.dim:
            raise ValueError(f"TextBridge: outputs have dimension {out.shape[1]} but the bridge's "
                             f"text embeddings have dimension {self.dim}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
        return out @ self.embeddings.T

    def decode(self, outputs: np.ndarray | torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per output row, up to ``k`` (text, cosine) pairs, best first (fewer if fewer texts)."""
        if k < 1:
            raise ValueError(f"decode: k must be >= 1, got {k}")
        sims = self.similarities(outputs)
        k = min(k, len(self.texts))
        result: list[list[tuple[str, float]]] = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k] if k < row.shape[0] else np.arange(row.shape[0])
            top = top[np.argsort(-row[top], kind="stable")]
            result.append([(self.texts[int(j)], float(row[j])) for j in top])
        return result

    def top1_accuracy(self, outputs: np.ndarray | torch.Tensor,
                      expected_indices: Sequence[int] | np.ndarray | torch.Tensor) -> float:
        """Share of output rows whose nearest text is the expected one (indices into ``texts``)."""
        sims = self.similarities(outputs)
        if isinstance(expected_indices, torch.Tensor):
            expected_indices = expected_indices.detach().cpu().numpy()
        expected = np.asarray(expected_indices, dtype=np.int64).reshape(-1)
        if expected.shape[0] != sims.shape[0]:
            raise ValueError(f"top1_accuracy: {sims.shape[0]} outputs but {expected.shape[0]} "
                             "expected indices")
        if expected.shape[0] == 0:
            raise ValueError("top1_accuracy: no outputs to score")
        if expected.min() < 0 or expected.max() >= len(self.texts):
            raise ValueError(f"top1_accuracy: expected indices must lie in [0, {len(self.texts)})")
        return float(np.mean(np.argmax(sims, axis=1) == expected))

    def ranks(self, outputs: np.ndarray | torch.Tensor,
              expected_indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """1-based rank of each row's expected text among all texts, by cosine (ties count
        against the output: rank = 1 + texts scoring at least as high, other than the expected).

        Top-k accuracy is ``mean(ranks <= k)`` and mean reciprocal rank ``mean(1 / ranks)``;
        counting ties against the output keeps a constant output (all scores equal) from
        looking perfect.
        """
        sims = self.similarities(outputs)
        if isinstance(expected_indices, torch.Tensor):
            expected_indices = expected_indices.detach().cpu().numpy()
        expected = np.asarray(expected_indices, dtype=np.int64).reshape(-1)
        if expected.shape[0] != sims.shape[0]:
            raise ValueError(f"ranks: {sims.shape[0]} outputs but {expected.shape[0]} expected indices")
        if expected.size and (expected.min() < 0 or expected.max() >= len(self.texts)):
            raise ValueError(f"ranks: expected indices must lie in [0, {len(self.texts)})")
        own = sims[np.arange(sims.shape[0]), expected]
        return (sims >= own[:, None]).sum(axis=1).astype(np.int64)

    def top1_accuracy_for_samples(self, outputs: np.ndarray | torch.Tensor,
                                  sample_indices: Sequence[int] | np.ndarray | torch.Tensor) -> float:
        """Top-1 accuracy against each sample's own target, by dataset index (from_dataset only)."""
        if self.text_index_of_sample is None:
            raise ValueError("top1_accuracy_for_samples needs a bridge built with from_dataset")
        if isinstance(sample_indices, torch.Tensor):
            sample_indices = sample_indices.detach().cpu().numpy()
        idx = np.asarray(sample_indices, dtype=np.int64).reshape(-1)
        n = self.text_index_of_sample.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"top1_accuracy_for_samples: sample indices must lie in [0, {n})")
        return self.top1_accuracy(outputs, self.text_index_of_sample[idx])
