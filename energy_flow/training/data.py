"""Pair datasets: text pairs (JSONL/CSV) or precomputed embeddings (npz/npy/pt) as tensors.

A run trains on ``[N, D]`` input and target embeddings. They come either from text pairs run
through the teacher, or from a file of precomputed embeddings (any D). Loaders are strict: a
malformed file raises :class:`DataFileError` naming the file and, for text files, the 1-based
line, because a silently skipped row would change what a run trained on without anyone knowing.
Every dataset carries a :class:`DataProvenance` so reports and recordings say where the data
came from.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from energy_flow.files.errors import reason
from energy_flow.training.datasets import load_named_pairs, parse_named_source
from energy_flow.training.pairs import DataFileError, TextPair
from energy_flow.training.report import DataProvenance

if TYPE_CHECKING:
    from energy_flow.training.teacher import TeacherEncoder

# inside the package, so that an installed (not only a checked-out) energy_flow has it
BUNDLED_CORPUS = Path(__file__).resolve().parent / "corpus" / "pairs.jsonl"
BUNDLED_CORPUS_SOURCE = "bundled corpus (energy_flow/training/corpus/pairs.jsonl)"
PRECOMPUTED_TEACHER = "precomputed embeddings"

TEXT_SUFFIXES = (".jsonl", ".json", ".csv")
EMBEDDING_SUFFIXES = (".npz", ".npy", ".pt")


# --------------------------------------------------------------------------- text pairs

def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"Data file {path} does not exist")
    if not path.is_file():
        raise DataFileError(path, "is not a regular file")


def _pair_from_fields(path: Path, line: int, get) -> TextPair:
    values = []
    for name in ("input", "target"):
        value = get(name)
        if value is None:
            raise DataFileError(path, f'missing field "{name}"', line)
        if not isinstance(value, str):
            raise DataFileError(path, f'field "{name}" is {type(value).__name__}, expected a string', line)
        if not value.strip():
            raise DataFileError(path, f'field "{name}" is empty', line)
        values.append(value)
    return TextPair(values[0], values[1])


def _load_jsonl(path: Path) -> list[TextPair]:
    pairs: list[TextPair] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataFileError(path, f"is not valid UTF-8 ({exc.reason})", lineno) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                # json's messages may end in "at" ("Unterminated string starting at"): one "at" only
                where = f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else \
                    f"{exc.msg} at column {exc.colno}"
                raise DataFileError(path, f"invalid JSON ({where}); each line "
                                          "must be one JSON object (JSON Lines)", lineno) from None
            except RecursionError:
                raise DataFileError(path, "invalid JSON (nested too deeply)", lineno) from None
            if not isinstance(obj, dict):
                raise DataFileError(path, f"expected a JSON object per line (JSON Lines), got "
                                          f"{type(obj).__name__}", lineno)
            pairs.append(_pair_from_fields(path, lineno, obj.get))
    return pairs


def _load_csv(path: Path) -> list[TextPair]:
    pairs: list[TextPair] = []
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        columns: dict[str, int] = {}
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise DataFileError(path, f"is not valid UTF-8 ({exc.reason})", start) from None
            except csv.Error as exc:
                raise DataFileError(path, f"malformed CSV ({exc})", start) from None
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                missing = [c for c in ("input", "target") if c not in header]
                if missing:
                    raise DataFileError(path, f"header row lacks column(s) {', '.join(missing)} "
                                              f"(found: {', '.join(header)})", start)
                columns = {name: header.index(name) for name in ("input", "target")}
                continue
            if len(row) != len(header):
                raise DataFileError(path, f"has {len(row)} columns, the header has {len(header)}", start)
            pairs.append(_pair_from_fields(path, start, lambda name: row[columns[name]]))
    if header is None:
        raise DataFileError(path, "is empty (no header row, no pairs)")
    return pairs


def load_pairs(path: str | Path) -> list[TextPair]:
    """Read text pairs from JSON Lines (``.jsonl``/``.json``) or CSV (``.csv``, header row).

    Each JSON line is an object with string fields ``input`` and ``target`` (other keys are
    allowed); a CSV needs ``input`` and ``target`` columns. Blank lines are skipped.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unsupported text-pair file type {path.suffix!r}; "
                         f"allowed: {', '.join(TEXT_SUFFIXES)}")
    _check_exists(path)
    pairs = _load_csv(path) if suffix == ".csv" else _load_jsonl(path)
    if not pairs:
        raise DataFileError(path, "contains no pairs")
    return pairs


# --------------------------------------------------------------------------- embeddings

def _as_float_array(path: Path, name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise DataFileError(path, f"{name} has dtype {value.dtype}, expected a floating dtype")
        value = value.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataFileError(path, f"{name} has dtype {arr.dtype}, expected a floating dtype")
    return arr


def _validate_embedding_pair(path: Path, inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for name, arr in (("inputs", inputs), ("targets", targets)):
        if arr.ndim != 2:
            raise DataFileError(path, f"{name} has shape {arr.shape}, expected 2-D [N, D]")
    if targets.shape != inputs.shape:
        raise DataFileError(path, f"targets has shape {targets.shape} but inputs has {inputs.shape}")
    n, d = inputs.shape
    if n < 1 or d < 1:
        raise DataFileError(path, f"inputs has shape {inputs.shape}; need at least one row and one column")
    out = []
    for name, arr in (("inputs", inputs), ("targets", targets)):
        arr32 = np.ascontiguousarray(arr, dtype=np.float32)
        for kind, bad in (("NaN", np.isnan(arr)), ("an infinite value", np.isinf(arr))):
            rows = np.flatnonzero(bad.any(axis=1))
            if rows.size:
                raise DataFileError(path, f"{name} row {int(rows[0])} (0-based) contains {kind}"
                                          + (f" ({rows.size} rows in all)" if rows.size > 1 else ""))
        if not np.all(np.isfinite(arr32)):
            raise DataFileError(path, f"{name} has values outside the float32 range")
        out.append(arr32)
    return out[0], out[1]


def load_embedding_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read precomputed ``(inputs, targets)``, each float32 ``[N, D]``.

    Formats: ``.npz`` with arrays ``inputs`` and ``targets``; ``.npy`` of shape ``[N, 2, D]``
    (axis 1: input, target); ``.pt`` holding a dict with tensors ``inputs`` and ``targets``
    (loaded with ``weights_only=True``, so no code in the file runs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ValueError(f"{path}: unsupported embedding file type {path.suffix!r}; "
                         f"allowed: {', '.join(EMBEDDING_SUFFIXES)}")
    _check_exists(path)
    _check_magic(path, suffix)
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataFileError(path, f"cannot be read as .npy ({exc})") from None
        arr = _as_float_array(path, "array", arr)
        if arr.ndim != 3 or arr.shape[1] != 2:
            raise DataFileError(path, f"array has shape {arr.shape}, expected [N, 2, D] "
                                      "(axis 1: input, target)")
        return _validate_embedding_pair(path, arr[:, 0, :], arr[:, 1, :])
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                missing = [k for k in ("inputs", "targets") if k not in keys]
                if missing:
                    raise DataFileError(path, f"missing array(s) {', '.join(missing)} "
                                              f"(found: {', '.join(keys) or 'none'})")
                inputs, targets = npz["inputs"], npz["targets"]
        except DataFileError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataFileError(path, f"cannot be read as .npz ({exc})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types (pickle, zip, RuntimeError)
            raise DataFileError(path, f"cannot be read as a torch file ({type(exc).__name__}: "
                                      f"{reason(exc)})") from None
        if not isinstance(obj, dict):
            raise DataFileError(path, f"holds a {type(obj).__name__}, expected a dict with "
                                      "tensors 'inputs' and 'targets'")
        missing = [k for k in ("inputs", "targets") if k not in obj]
        if missing:
            raise DataFileError(path, f"missing key(s) {', '.join(missing)} "
                                      f"(found: {', '.join(map(str, obj.keys())) or 'none'})")
        for k in ("inputs", "targets"):
            if not isinstance(obj[k], torch.Tensor):
                raise DataFileError(path, f"{k} is a {type(obj[k]).__name__}, expected a tensor")
        inputs, targets = obj["inputs"], obj["targets"]
    return _validate_embedding_pair(path, _as_float_array(path, "inputs", inputs),
                                    _as_float_array(path, "targets", targets))


#: How each binary format starts, and what a file that starts otherwise is not. Checked first:
#: numpy reads anything else as a pickle and reports random bytes as "pickled (object) data",
#: which sends the user the wrong way.
_MAGIC = {".npy": (b"\x93NUMPY", "not a valid .npy file (no .npy header)"),
          ".npz": (b"PK\x03\x04", "not a valid .npz file (not a zip archive of .npy arrays)"),
          ".pt": (b"PK\x03\x04", "not a valid torch file (not the zip archive torch.save writes)")}


def _check_magic(path: Path, suffix: str) -> None:
    magic, problem = _MAGIC[suffix]
    try:
        with path.open("rb") as fh:
            head = fh.read(len(magic))
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({reason(exc)})") from None
    if suffix == ".pt" and head[:1] == b"\x80":
        return  # torch's legacy (non-zip) format is a bare pickle; the safe loader judges it
    if head != magic:
        raise DataFileError(path, f"is {problem}")


# --------------------------------------------------------------------------- dataset

@dataclass(frozen=True)
class Batch:
    """One training batch; ``indices`` are positions in the dataset it came from."""

    inputs: torch.Tensor                     # [B, D] float32
    targets: torch.Tensor                    # [B, D] float32
    indices: torch.Tensor                    # [B] int64
    input_texts: tuple[str, ...] | None = None
    target_texts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @classmethod
    def from_tensors(cls, inputs: torch.Tensor, targets: torch.Tensor) -> "Batch":
        """Wrap raw ``[B, D]`` tensors (no texts); indices are ``0..B-1``."""
        if inputs.ndim != 2 or inputs.shape != targets.shape:
            raise ValueError(f"Batch.from_tensors needs two [B, D] tensors of equal shape, got "
                             f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}")
        return cls(inputs, targets, torch.arange(inputs.shape[0], dtype=torch.int64))


@dataclass
class PairDataset:
    """Input/target embeddings ``[N, D]`` (float32, CPU), optional texts, and provenance."""

    inputs: torch.Tensor
    targets: torch.Tensor
    input_texts: list[str] | None
    target_texts: list[str] | None
    provenance: DataProvenance

    def __post_init__(self) -> None:
        if self.inputs.ndim != 2 or self.inputs.shape != self.targets.shape:
            raise ValueError(f"PairDataset needs inputs and targets of equal shape [N, D], got "
                             f"{tuple(self.inputs.shape)} and {tuple(self.targets.shape)}")
        n = self.inputs.shape[0]
        for name, texts in (("input_texts", self.input_texts), ("target_texts", self.target_texts)):
            if texts is not None and len(texts) != n:
                raise ValueError(f"PairDataset: {name} has {len(texts)} entries for {n} pairs")
        if self.provenance.num_pairs != n or self.provenance.dim != self.inputs.shape[1]:
            raise ValueError(f"PairDataset: provenance says {self.provenance.num_pairs} pairs of dim "
                             f"{self.provenance.dim}, tensors are {tuple(self.inputs.shape)}")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def dim(self) -> int:
        return int(self.inputs.shape[1])

    def subset(self, indices: Sequence[int] | torch.Tensor, note: str | None = None) -> "PairDataset":
        """The pairs at ``indices`` (in that order); ``note`` is appended to the provenance source."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"subset: indices must lie in [0, {n}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        pick = idx.tolist()
        source = self.provenance.source if note is None else f"{self.provenance.source} [{note}]"
        return PairDataset(
            inputs=self.inputs[idx].clone(),
            targets=self.targets[idx].clone(),
            input_texts=None if self.input_texts is None else [self.input_texts[i] for i in pick],
            target_texts=None if self.target_texts is None else [self.target_texts[i] for i in pick],
            provenance=DataProvenance(source, len(pick), self.provenance.teacher, self.provenance.dim),
        )

    def split_indices(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of :meth:`split`'s (train, validation) parts, each sorted."""
        n = len(self)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"split: val_fraction must be in (0, 1), got {val_fraction}")
        if n < 2:
            raise ValueError(f"split: need at least 2 pairs to split, the dataset has {n}")
        n_val = min(max(1, round(n * val_fraction)), n - 1)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return perm[n_val:].sort().values, perm[:n_val].sort().values

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["PairDataset", "PairDataset"]:
        """Deterministic disjoint (train, validation) split; both non-empty for N >= 2."""
        train_idx, val_idx = self.split_indices(val_fraction, seed)
        n, n_val = len(self), int(val_idx.numel())
        return (self.subset(train_idx, f"train split: {n - n_val} of {n}, seed {seed}"),
                self.subset(val_idx, f"validation split: {n_val} of {n}, seed {seed}"))

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[Batch]:
        """One epoch of batches covering every pair exactly once; the last may be smaller."""
        if batch_size < 1:
            raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            if generator is None:
                raise ValueError("batches: shuffle=True needs a torch.Generator (for reproducible runs)")
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n, dtype=torch.int64)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            pick = idx.tolist()
            yield Batch(
                inputs=self.inputs[idx],
                targets=self.targets[idx],
                indices=idx,
                input_texts=None if self.input_texts is None else tuple(self.input_texts[i] for i in pick),
                target_texts=None if self.target_texts is None else tuple(self.target_texts[i] for i in pick),
            )

    def num_batches(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


def _dataset_from_texts(pairs: list[TextPair], source: str, teacher: "TeacherEncoder") -> PairDataset:
    input_texts = [p.input for p in pairs]
    target_texts = [p.target for p in pairs]
    emb = teacher.encode(input_texts + target_texts)
    n = len(pairs)
    inputs = torch.from_numpy(np.ascontiguousarray(emb[:n]))
    targets = torch.from_numpy(np.ascontiguousarray(emb[n:]))
    return PairDataset(inputs, targets, input_texts, target_texts,
                       DataProvenance(source, n, teacher.name, int(emb.shape[1])))


def build_dataset(source: str | Path | None = None, teacher: "TeacherEncoder | None" = None,
                  cache_dir: Path | None = None) -> PairDataset:
    """The dataset a run trains on.

    ``source`` None: the bundled corpus through the teacher. A dataset name such as
    ``"wordnet"`` or ``"wordnet:3000"`` (see :mod:`energy_flow.training.datasets`): its pairs
    through the teacher. A ``.jsonl``/``.json``/``.csv``
    path: its texts through the teacher. A ``.npz``/``.npy``/``.pt`` path: precomputed
    embeddings (no teacher, no texts). ``teacher`` None creates the bundled teacher, caching
    embeddings under ``cache_dir`` (None: no on-disk cache; pass
    :func:`energy_flow.training.embedding_cache.default_cache_dir` for the usual one).
    """
    if teacher is not None and cache_dir is not None:
        raise ValueError("build_dataset: cache_dir only applies to a teacher it creates; "
                         "give the TeacherEncoder its cache_dir instead")
    named = parse_named_source(source)
    if named is not None:
        pairs, label = load_named_pairs(named)
    elif source is not None:
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in EMBEDDING_SUFFIXES:
            inputs, targets = load_embedding_pairs(path)
            return PairDataset(torch.from_numpy(inputs), torch.from_numpy(targets), None, None,
                               DataProvenance(str(path), int(inputs.shape[0]), PRECOMPUTED_TEACHER,
                                              int(inputs.shape[1])))
        if suffix not in TEXT_SUFFIXES:
            raise ValueError(f"{path}: unsupported data file type {path.suffix!r}; allowed: "
                             f"{', '.join(TEXT_SUFFIXES + EMBEDDING_SUFFIXES)}")
        pairs, label = load_pairs(path), str(path)
    else:
        pairs, label = load_pairs(BUNDLED_CORPUS), BUNDLED_CORPUS_SOURCE
    if teacher is None:
        from energy_flow.training.teacher import TeacherEncoder

        teacher = TeacherEncoder(cache_dir=cache_dir)
    return _dataset_from_texts(pairs, label, teacher)
