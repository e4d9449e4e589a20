"""TextBridge: cosine top-k decoding and top-1 retrieval accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.training.data import PairDataset
from energy_flow.training.report import DataProvenance
from energy_flow.training.text_bridge import TextBridge


def _bridge(n: int = 12, d: int = 32) -> tuple[TextBridge, np.ndarray]:
    emb = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32) * 3.0
    return TextBridge([f"text {i}" for i in range(n)], emb), emb


def test_decoding_own_embedding_returns_that_text_first() -> None:
    bridge, emb = _bridge()
    decoded = bridge.decode(emb, k=3)
    for i, row in enumerate(decoded):
        assert len(row) == 3
        text, score = row[0]
        assert text == f"text {i}" and score == pytest.approx(1.0, abs=1e-5)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
    assert len(bridge.decode(torch.from_numpy(emb[:2]), k=50)[0]) == 12   # at most k: only 12 texts


def test_top1_accuracy_targets_vs_shuffled() -> None:
    bridge, emb = _bridge()
    idx = np.arange(12)
    assert bridge.top1_accuracy(emb, idx) == 1.0
    assert bridge.top1_accuracy(torch.from_numpy(emb), torch.from_numpy(idx)) == 1.0
    perm = np.roll(idx, 1)
    assert bridge.top1_accuracy(emb[perm], idx) == 0.0
    with pytest.raises(ValueError):
        bridge.top1_accuracy(emb, idx[:3])
    with pytest.raises(ValueError):
        bridge.top1_accuracy(emb, idx + 1)


def test_dimension_mismatch_names_both_dims() -> None:
    bridge, _ = _bridge(d=32)
    with pytest.raises(ValueError, match=r"(?=.*\b16\b)(?=.*\b32\b)"):
        bridge.decode(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="3 texts but 2"):
        TextBridge(["a", "b", "c"], np.ones((2, 4)))
    with pytest.raises(ValueError, match="all zeros"):
        TextBridge(["a"], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        bridge.decode(np.full((1, 32), np.nan))


def test_from_dataset_dedupes_targets_and_maps_samples() -> None:
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.standard_normal((3, 8)).astype(np.float32))
    targets = base[[0, 1, 0, 2]]                       # pairs 0 and 2 share a target
    texts = ["zero", "one", "zero", "two"]
    ds = PairDataset(torch.zeros(4, 8) + 1, targets, ["a", "b", "c", "d"], texts,
                     DataProvenance("test", 4, "none", 8))
    bridge = TextBridge.from_dataset(ds)
    assert bridge.texts == ["zero", "one", "two"]
    assert bridge.text_index_of_sample.tolist() == [0, 1, 0, 2]
    assert bridge.top1_accuracy_for_samples(targets, torch.arange(4)) == 1.0
    assert bridge.top1_accuracy_for_samples(targets[[1]], [0]) == 0.0
    assert bridge.decode(targets[2:3], k=1)[0][0][0] == "zero"
    no_text = PairDataset(ds.inputs, ds.targets, None, None, ds.provenance)
    with pytest.raises(ValueError, match="no target texts"):
        TextBridge.from_dataset(no_text)
    with pytest.raises(ValueError, match="from_dataset"):
        TextBridge(["x"], np.ones((1, 8))).top1_accuracy_for_samples(np.ones((1, 8)), [0])
