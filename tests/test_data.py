"""Loaders, dataset split and batching: strict errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow.training.data import (
    BUNDLED_CORPUS,
    Batch,
    DataFileError,
    PairDataset,
    TextPair,
    build_dataset,
    load_embedding_pairs,
    load_pairs,
)
from energy_flow.training.report import DataProvenance


# --------------------------------------------------------------------------- bundled corpus

def test_bundled_corpus_loads_with_distinct_nonempty_texts() -> None:
    pairs = load_pairs(BUNDLED_CORPUS)
    assert len(pairs) >= 300
    assert all(isinstance(p, TextPair) for p in pairs)
    inputs = [p.input for p in pairs]
    assert len(set(inputs)) == len(inputs), "bundled corpus has duplicate inputs"
    for p in pairs:
        assert p.input.strip() and p.target.strip()
        assert len(p.input) <= 200 and len(p.target) <= 200


def test_bundled_corpus_kinds() -> None:
    kinds = [json.loads(line)["kind"] for line in BUNDLED_CORPUS.read_text("utf-8").splitlines() if line.strip()]
    assert set(kinds) == {"qa", "paraphrase", "instruction"}


# --------------------------------------------------------------------------- malformed text files

GOOD = '{"input": "a", "target": "b"}'

JSONL_CASES = {
    "invalid_json": ([GOOD, GOOD, '{"input": "a", "target": }'], 3, "invalid JSON"),
    "not_object": ([GOOD, '["a", "b"]'], 2, "JSON object"),
    "missing_target": ([GOOD, '{"input": "x"}'], 2, '"target"'),
    "missing_input": (['{"target": "x"}'], 1, '"input"'),
    "empty_input": ([GOOD, GOOD, GOOD, '{"input": "  ", "target": "y"}'], 4, "empty"),
    "non_string_target": ([GOOD, '{"input": "x", "target": 5}'], 2, "int"),
    "blank_lines_counted": ([GOOD, "", "   ", '{"input": "x"}'], 4, '"target"'),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, case: str) -> None:
    lines, line, fragment = JSONL_CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        load_pairs(path)
    msg = str(info.value)
    assert path.name in msg and f"line {line}:" in msg and fragment in msg
    assert info.value.line == line


CSV_CASES = {
    "missing_header_column": ("input,answer\na,b\n", 1, "target"),
    "wrong_column_count": ("input,target\na,b\nc,d,e\n", 3, "3 columns"),
    "too_few_columns": ("input,target\na,b\nc,d\nonly\n", 4, "1 columns"),
    "empty_field": ("input,target\na,b\n,d\n", 3, "empty"),
    "after_multiline_field": ('input,target\n"multi\nline",b\nc\n', 4, "columns"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_malformed_csv_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, fragment = CSV_CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        load_pairs(path)
    msg = str(info.value)
    assert path.name in msg and f"line {line}:" in msg and fragment in msg


@pytest.mark.parametrize("name,text", [("empty.jsonl", ""), ("blank.jsonl", "\n  \n"),
                                       ("empty.csv", ""), ("header_only.csv", "input,target\n")])
def test_file_without_pairs_is_an_error(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError, match=name):
        load_pairs(path)


def test_valid_csv_with_extra_column_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text('\ufeffid,input,target\n1,"Hello, there",General Kenobi\n2,b,c\n', encoding="utf-8")
    assert load_pairs(path) == [TextPair("Hello, there", "General Kenobi"), TextPair("b", "c")]


def test_valid_jsonl_extra_keys_and_json_suffix(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('{"input": "x", "target": "y", "kind": "qa", "n": 3}\n\n', encoding="utf-8")
    assert load_pairs(path) == [TextPair("x", "y")]


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("a\tb\n")
    with pytest.raises(ValueError, match=r"pairs\.txt.*\.jsonl.*\.csv"):
        load_pairs(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_pairs(tmp_path / "nope.jsonl")


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"input": "\xff", "target": "b"}\n')
    with pytest.raises(DataFileError, match=r"bad\.jsonl, line 2: .*UTF-8"):
        load_pairs(path)


# --------------------------------------------------------------------------- embedding files

def _pair(n: int = 6, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def test_embedding_formats_load(tmp_path: Path) -> None:
    a, b = _pair()
    np.savez(tmp_path / "e.npz", inputs=a, targets=b)
    np.save(tmp_path / "e.npy", np.stack([a, b], axis=1))
    torch.save({"inputs": torch.from_numpy(a), "targets": torch.from_numpy(b), "meta": torch.tensor(1)},
               tmp_path / "e.pt")
    for name in ("e.npz", "e.npy", "e.pt"):
        x, y = load_embedding_pairs(tmp_path / name)
        assert x.dtype == np.float32 and y.dtype == np.float32
        np.testing.assert_allclose(x, a, rtol=1e-6)
        np.testing.assert_allclose(y, b, rtol=1e-6)


def test_embedding_shape_mismatch(tmp_path: Path) -> None:
    a, _ = _pair(6)
    np.savez(tmp_path / "m.npz", inputs=a, targets=np.zeros((5, 8)))
    with pytest.raises(DataFileError, match=r"m\.npz: targets has shape \(5, 8\) but inputs has \(6, 8\)"):
        load_embedding_pairs(tmp_path / "m.npz")


def test_embedding_nan_and_inf(tmp_path: Path) -> None:
    a, b = _pair()
    a[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", inputs=a, targets=b)
    with pytest.raises(DataFileError, match=r"nan\.npz: inputs row 3 .*NaN"):
        load_embedding_pairs(tmp_path / "nan.npz")
    a, b = _pair()
    b[1, 0] = np.inf
    torch.save({"inputs": torch.from_numpy(a), "targets": torch.from_numpy(b)}, tmp_path / "inf.pt")
    with pytest.raises(DataFileError, match=r"inf\.pt: targets row 1 .*infinite"):
        load_embedding_pairs(tmp_path / "inf.pt")


def test_embedding_missing_key_and_bad_layouts(tmp_path: Path) -> None:
    a, b = _pair()
    np.savez(tmp_path / "k.npz", inputs=a, outputs=b)
    with pytest.raises(DataFileError, match=r"k\.npz: missing array\(s\) targets"):
        load_embedding_pairs(tmp_path / "k.npz")
    torch.save({"inputs": torch.from_numpy(a)}, tmp_path / "k.pt")
    with pytest.raises(DataFileError, match=r"k\.pt: missing key\(s\) targets"):
        load_embedding_pairs(tmp_path / "k.pt")
    torch.save([torch.from_numpy(a)], tmp_path / "list.pt")
    with pytest.raises(DataFileError, match=r"list\.pt: holds a list"):
        load_embedding_pairs(tmp_path / "list.pt")
    np.save(tmp_path / "flat.npy", a)
    with pytest.raises(DataFileError, match=r"flat\.npy: array has shape \(6, 8\)"):
        load_embedding_pairs(tmp_path / "flat.npy")
    np.savez(tmp_path / "int.npz", inputs=np.ones((2, 3), dtype=np.int64), targets=np.ones((2, 3), dtype=np.int64))
    with pytest.raises(DataFileError, match=r"int\.npz: inputs has dtype int64"):
        load_embedding_pairs(tmp_path / "int.npz")
    np.savez(tmp_path / "empty.npz", inputs=np.zeros((0, 3)), targets=np.zeros((0, 3)))
    with pytest.raises(DataFileError, match=r"empty\.npz"):
        load_embedding_pairs(tmp_path / "empty.npz")
    for name in ("junk.npz", "junk.npy", "junk.pt"):
        (tmp_path / name).write_bytes(b"this is not an array file")
        with pytest.raises(DataFileError, match=name.replace(".", r"\.")):
            load_embedding_pairs(tmp_path / name)


# --------------------------------------------------------------------------- dataset

def _dataset(n: int = 23, d: int = 4, texts: bool = True) -> PairDataset:
    x = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    return PairDataset(
        x, -x,
        [f"in {i}" for i in range(n)] if texts else None,
        [f"out {i}" for i in range(n)] if texts else None,
        DataProvenance("test", n, "none", d),
    )


def test_split_disjoint_deterministic_and_nonempty() -> None:
    ds = _dataset(23)
    train, val = ds.split(0.2, seed=3)
    tr = {t for t in train.input_texts}
    va = {t for t in val.input_texts}
    assert tr.isdisjoint(va) and tr | va == set(ds.input_texts)
    assert len(val) == 5 and len(train) == 18
    assert "seed 3" in train.provenance.source and "validation" in val.provenance.source
    assert train.provenance.num_pairs == 18 and val.provenance.num_pairs == 5
    train2, val2 = ds.split(0.2, seed=3)
    assert val2.input_texts == val.input_texts and torch.equal(train2.inputs, train.inputs)
    _, val_other = ds.split(0.2, seed=4)
    assert val_other.input_texts != val.input_texts
    # tensors follow the texts
    for i, text in enumerate(val.input_texts):
        j = ds.input_texts.index(text)
        assert torch.equal(val.inputs[i], ds.inputs[j]) and torch.equal(val.targets[i], ds.targets[j])
    small_train, small_val = _dataset(2).split(0.01)
    assert len(small_train) == 1 and len(small_val) == 1
    with pytest.raises(ValueError):
        _dataset(1).split()
    with pytest.raises(ValueError):
        ds.split(1.0)


def test_batches_cover_every_index_once_per_epoch() -> None:
    ds = _dataset(23)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        batches = list(ds.batches(5, gen))
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        seen = torch.cat([b.indices for b in batches])
        assert seen.dtype == torch.int64
        assert sorted(seen.tolist()) == list(range(23))
        for b in batches:
            assert torch.equal(b.inputs, ds.inputs[b.indices])
            assert torch.equal(b.targets, ds.targets[b.indices])
            assert b.input_texts == tuple(ds.input_texts[i] for i in b.indices.tolist())
    order_a = torch.cat([b.indices for b in ds.batches(5, torch.Generator().manual_seed(7))])
    order_b = torch.cat([b.indices for b in ds.batches(5, torch.Generator().manual_seed(7))])
    assert torch.equal(order_a, order_b)
    plain = torch.cat([b.indices for b in ds.batches(4, shuffle=False)])
    assert plain.tolist() == list(range(23))
    assert all(b.input_texts is None for b in _dataset(4, texts=False).batches(3, gen))


def test_subset_and_validation() -> None:
    ds = _dataset(10)
    sub = ds.subset([7, 2])
    assert sub.input_texts == ["in 7", "in 2"] and len(sub) == 2 and sub.provenance.num_pairs == 2
    with pytest.raises(IndexError):
        ds.subset([10])
    with pytest.raises(ValueError, match="provenance"):
        PairDataset(ds.inputs, ds.targets, None, None, DataProvenance("x", 9, "t", 4))
    with pytest.raises(ValueError, match="input_texts"):
        PairDataset(ds.inputs, ds.targets, ["a"], None, ds.provenance)


def test_batch_from_tensors() -> None:
    b = Batch.from_tensors(torch.zeros(3, 5), torch.ones(3, 5))
    assert b.indices.tolist() == [0, 1, 2] and b.input_texts is None
    with pytest.raises(ValueError):
        Batch.from_tensors(torch.zeros(3, 5), torch.ones(2, 5))


def test_build_dataset_from_precomputed(tmp_path: Path) -> None:
    a, b = _pair(7, 16)
    np.savez(tmp_path / "pre.npz", inputs=a, targets=b)
    ds = build_dataset(tmp_path / "pre.npz")
    assert len(ds) == 7 and ds.inputs.dtype == torch.float32 and ds.input_texts is None
    assert ds.provenance == DataProvenance(str(tmp_path / "pre.npz"), 7, "precomputed embeddings", 16)
    with pytest.raises(ValueError, match="unsupported"):
        build_dataset(tmp_path / "pre.parquet")
