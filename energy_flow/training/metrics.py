"""Held-out figures of a predictor: cosine, retrieval through the text bridge, and spread.

One function scores any predictor's output embeddings on a split, so the model and the
baselines are measured the same way. Retrieval asks, for each output, where its own target
ranks among all of the split's targets (cosine): top-1, top-5 and mean reciprocal rank. A
model that collapses towards the mean target can still reach a fair mean cosine (targets share
a common direction), but its retrieval falls and its *spread* — 1 − the mean off-diagonal
pairwise cosine of its outputs — drops far below the targets' own spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from energy_flow.training.data import PairDataset
from energy_flow.training.text_bridge import TextBridge


@dataclass(frozen=True)
class SplitScores:
    """What a predictor reaches on one split (every field computed from its outputs)."""

    mean_cosine: float   # mean cosine(output, own target)
    top1: float          # share of outputs whose own target ranks first among the split's targets
    top5: float          # ... among the first five
    mrr: float           # mean reciprocal rank of the own target
    spread: float        # 1 − mean off-diagonal pairwise cosine of the outputs

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(embeddings: torch.Tensor | np.ndarray) -> float:
    """1 − mean pairwise cosine over distinct rows: 0 when all rows point one way.

    Zero rows count as cosine 0 to everything (no direction). Needs at least two rows.
    """
    x = torch.as_tensor(np.asarray(embeddings) if isinstance(embeddings, np.ndarray) else embeddings)
    x = F.normalize(x.detach().double(), dim=1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"spread needs at least 2 rows, got {n}")
    s = x.sum(0)
    off_diagonal = float(s @ s) - float((x * x).sum())  # Σ_{i≠j} cos(i, j)
    return max(0.0, 1.0 - off_diagonal / (n * (n - 1)))  # ≥ 0 exactly; max() drops rounding


def bridge_for(split: PairDataset) -> TextBridge:
    """The text bridge over the split's targets; for data without texts (precomputed
    embeddings) every pair's target is its own entry, labelled by its index."""
    if split.target_texts is not None:
        return TextBridge.from_dataset(split)
    bridge = TextBridge([f"target {i}" for i in range(len(split))], split.targets)
    bridge.text_index_of_sample = np.arange(len(split), dtype=np.int64)
    return bridge


def score(outputs: torch.Tensor, split: PairDataset, bridge: TextBridge | None = None) -> SplitScores:
    """Scores of ``outputs`` (row i predicts pair i of ``split``) on that split."""
    outputs = torch.as_tensor(outputs, dtype=torch.float32).cpu()
    if outputs.shape != split.targets.shape:
        raise ValueError(f"score: outputs {tuple(outputs.shape)} do not match the split's targets "
                         f"{tuple(split.targets.shape)}")
    bridge = bridge or bridge_for(split)
    assert bridge.text_index_of_sample is not None
    ranks = bridge.ranks(outputs, bridge.text_index_of_sample[np.arange(len(split))])
    return SplitScores(
        mean_cosine=float(F.cosine_similarity(outputs, split.targets, dim=1).mean()),
        top1=float(np.mean(ranks <= 1)),
        top5=float(np.mean(ranks <= 5)),
        mrr=float(np.mean(1.0 / ranks)),
        spread=spread(outputs),
    )
