"""The bundled teacher, its on-disk cache, and datasets built through it (real model, offline)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow.training.data import BUNDLED_CORPUS_SOURCE, build_dataset
from energy_flow.training.embedding_cache import EmbeddingCache, default_cache_dir
from energy_flow.training.teacher import TeacherEncoder, bundled_model_path
from energy_flow.training.text_bridge import TextBridge

TEXTS = [
    "The cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "Quarterly tax returns are due at the end of the month.",
    "How do I boil an egg?",
]


@pytest.fixture(scope="module")
def teacher() -> TeacherEncoder:
    """One uncached bundled teacher; the loaded model is shared process-wide by (path, device)."""
    t = TeacherEncoder()
    t.load()
    return t


@pytest.fixture
def model_calls(teacher: TeacherEncoder, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records the texts of every call into the real model's encode."""
    calls: list[list[str]] = []
    model_cls = type(teacher.load())
    original = model_cls.encode

    def counting(self, sentences, *args, **kwargs):
        calls.append(list(sentences))
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(model_cls, "encode", counting)
    return calls


def test_bundled_teacher_encodes_unit_vectors(teacher: TeacherEncoder) -> None:
    assert teacher.name == "all-MiniLM-L6-v2" and teacher.dim == 384
    emb = teacher.encode(TEXTS)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert os.environ.get("HF_HUB_OFFLINE") and os.environ.get("TRANSFORMERS_OFFLINE")
    assert teacher.encode([]).shape == (0, 384)


def test_paraphrase_is_closer_than_unrelated(teacher: TeacherEncoder) -> None:
    cat, kitten, taxes, egg = teacher.encode(TEXTS)
    assert cat @ kitten > cat @ taxes + 0.3
    assert cat @ kitten > cat @ egg


def test_explicit_path_to_bundled_model_has_same_name() -> None:
    assert TeacherEncoder(bundled_model_path()).name == "all-MiniLM-L6-v2"


def test_invalid_model_dirs_raise_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match="no_such_model"):
        TeacherEncoder(missing)
    plain = tmp_path / "not_st"
    plain.mkdir()
    with pytest.raises(ValueError, match=r"not_st.*modules\.json"):
        TeacherEncoder(plain)


def test_second_encode_comes_from_cache(teacher: TeacherEncoder, model_calls: list, tmp_path: Path) -> None:
    first = TeacherEncoder(cache_dir=tmp_path)
    a = first.encode(TEXTS + TEXTS[:2])                      # duplicates encoded once
    assert [len(c) for c in model_calls] == [4]
    assert first.last_stats.encoded == 4 and first.last_stats.from_cache == 0
    second = TeacherEncoder(cache_dir=tmp_path)              # a fresh encoder, same cache
    b = second.encode(TEXTS + TEXTS[:2])
    assert len(model_calls) == 1, "cached texts went through the model again"
    assert second.last_stats.from_cache == 4 and second.last_stats.encoded == 0
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, teacher.encode(TEXTS + TEXTS[:2]), atol=1e-6)
    model_calls.clear()
    second.encode(TEXTS + ["Something new entirely."])
    assert model_calls == [["Something new entirely."]]
    assert not list(second.cache.directory.glob(".tmp-*")), "temporary files left behind"


def test_corrupt_cache_file_is_a_logged_miss_and_overwritten(teacher: TeacherEncoder, model_calls: list,
                                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    enc = TeacherEncoder(cache_dir=tmp_path)
    good = enc.encode(TEXTS)
    victim = enc.cache.path_for(TEXTS[2])
    victim.write_bytes(b"\x93NUMPY garbage, truncated")
    model_calls.clear()
    with caplog.at_level(logging.WARNING, logger="energy_flow.training.embedding_cache"):
        again = enc.encode(TEXTS)
    assert model_calls == [[TEXTS[2]]]
    assert any(victim.name in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    np.testing.assert_allclose(again, good, atol=1e-6)
    assert np.array_equal(np.load(victim), again[2]), "corrupt file was not overwritten"


def test_cache_rejects_wrong_shapes_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path, "some/model key")
    cache.put_many(["a", "b"], np.ones((2, 3), dtype=np.float32))
    np.save(cache.path_for("b"), np.ones((2, 2), dtype=np.float32))
    with caplog.at_level(logging.WARNING):
        got = cache.get_many(["a", "b", "c"])
    assert np.array_equal(got[0], np.ones(3, dtype=np.float32)) and got[1] is None and got[2] is None
    assert any(cache.path_for("b").name in r.getMessage() for r in caplog.records)
    assert cache.directory.parent == tmp_path and "some_model_key" in cache.directory.name
    assert EmbeddingCache(tmp_path, "some_model key").directory != cache.directory
    with pytest.raises(ValueError):
        cache.put_many(["a"], np.full((1, 3), np.nan, dtype=np.float32))


def test_default_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENERGY_FLOW_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ENERGY_FLOW_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "energy_flow" / "embeddings"


def test_build_bundled_dataset_and_bridge(teacher: TeacherEncoder) -> None:
    ds = build_dataset(teacher=teacher)
    assert len(ds) >= 300 and ds.dim == 384 and ds.inputs.dtype == torch.float32
    assert ds.provenance.source == BUNDLED_CORPUS_SOURCE and ds.provenance.teacher == "all-MiniLM-L6-v2"
    assert ds.provenance.num_pairs == len(ds)
    bridge = TextBridge.from_dataset(ds)
    idx = torch.arange(len(ds))
    assert bridge.top1_accuracy_for_samples(ds.targets, idx) == 1.0
    shuffled = ds.targets[torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))]
    assert bridge.top1_accuracy_for_samples(shuffled, idx) < 0.05


def test_build_dataset_from_csv(teacher: TeacherEncoder, tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("input,target\nWhat colour is grass?,Green.\nName a large cat.,A tiger.\n", encoding="utf-8")
    ds = build_dataset(path, teacher)
    assert ds.input_texts == ["What colour is grass?", "Name a large cat."]
    assert ds.provenance.source == str(path) and ds.inputs.shape == (2, 384)
    np.testing.assert_allclose(ds.targets.numpy(), teacher.encode(["Green.", "A tiger."]), atol=1e-6)
    with pytest.raises(ValueError, match="cache_dir"):
        build_dataset(path, teacher, cache_dir=tmp_path)
