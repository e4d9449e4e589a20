"""Training signals ↔ ``batches/*`` columns: how a ``report_fields`` dict is stored and read back.

Unknown values have one stored form each (NaN for numbers, ``-1`` for ``step``, ``skipped`` and
``params_without_grad_count``, an empty string for ``nonfinite``), so a reader gives back the
dict :func:`~energy_flow.trace.training_signals.report_fields_from` produced, with NaN/None
where the writer was not told.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from energy_flow.trace.figures import BATCH
from energy_flow.trace.recording.schema import NONFINITE_BYTES, PARAM_NAMES_BYTES
from energy_flow.trace.training_signals import (MODULE_FIELDS, MODULES, PLANE_FIELDS, REPORT_FIELDS,
                                               SCALAR_FIELDS)

_ELLIPSIS = "…".encode("utf-8")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def _utf8(text: str, limit: int) -> bytes:
    """UTF-8 of ``text``, cut at a character boundary and ended with "…" when over ``limit``."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    cut = data[:limit - len(_ELLIPSIS)].decode("utf-8", "ignore").encode("utf-8")
    return cut + _ELLIPSIS


def encode(report: Mapping[str, Any], path: Path, planes: int) -> dict[str, Any]:
    """Column values (name without ``batches/``) for one batch; raises ValueError naming the field.

    ``planes``: the recording's output planes (the length of every per-plane figure)."""
    unknown = sorted(set(report) - set(REPORT_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown report field(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(REPORT_FIELDS)}")
    step = report.get(BATCH.step.key)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0):
        raise ValueError(f"{path}: report field 'step' must be an integer ≥ 0 or None, got {step!r}")
    row: dict[str, Any] = {BATCH.step.key: np.int64(-1 if step is None else step)}
    for key in SCALAR_FIELDS:
        value = report.get(key)
        if value is not None and not _is_number(value):
            raise ValueError(f"{path}: report field {key!r} must be a number or None, got {value!r}")
        row[key] = np.float64(math.nan if value is None else value)
    for key in MODULE_FIELDS:
        value = report.get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping) or set(value) - set(MODULES) or not all(
                v is None or _is_number(v) for v in value.values()):
            raise ValueError(f"{path}: report field {key!r} must map modules of {MODULES} to numbers, "
                             f"got {value!r}")
        row[key] = np.asarray([math.nan if value.get(m) is None else float(value[m]) for m in MODULES],
                              np.float64)
    for key in PLANE_FIELDS:
        value = report.get(key)
        values = np.full(planes, math.nan) if value is None else np.asarray(value, dtype=object)
        if values.shape != (planes,) or not all(v is None or _is_number(v) for v in values):
            raise ValueError(f"{path}: report field {key!r} must hold {planes} numbers (one per output "
                             f"plane) or None, got {value!r}")
        row[key] = np.asarray([math.nan if v is None else float(v) for v in values], np.float64)
    skipped = report.get(BATCH.skipped.key)
    if skipped is not None and not isinstance(skipped, (bool, np.bool_)):
        raise ValueError(f"{path}: report field 'skipped' must be True, False or None, got {skipped!r}")
    row[BATCH.skipped.key] = np.int8(-1 if skipped is None else int(skipped))
    nonfinite = report.get(BATCH.nonfinite.key)
    if nonfinite is not None and not isinstance(nonfinite, str):
        raise ValueError(f"{path}: report field 'nonfinite' must be a string or None, got {nonfinite!r}")
    row[BATCH.nonfinite.key] = np.bytes_(_utf8(nonfinite or "", NONFINITE_BYTES))
    names = report.get(BATCH.params_without_grad.key)
    count = report.get(BATCH.params_without_grad_count.key)
    if names is not None and (not isinstance(names, (list, tuple))
                              or not all(isinstance(n, str) and n and "," not in n for n in names)):
        raise ValueError(f"{path}: report field 'params_without_grad' must be a list of parameter names "
                         f"(no commas), got {names!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0):
        raise ValueError(f"{path}: report field 'params_without_grad_count' must be an integer ≥ 0, "
                         f"got {count!r}")
    if names is not None and count is not None and count < len(names):   # a stored list may be cut
        raise ValueError(f"{path}: params_without_grad_count ({count}) is less than the "
                         f"{len(names)} names given")
    row[BATCH.params_without_grad_count.key] = np.int32(-1 if names is None and count is None
                                                else count if count is not None else len(names))
    row[BATCH.params_without_grad.key] = np.bytes_(_fit_names(names or ()))
    return row


def _fit_names(names: tuple[str, ...] | list[str]) -> bytes:
    """Comma-separated names, as many whole ones as fit (the count column keeps the total)."""
    out = b""
    for name in names:
        data = name.encode("utf-8")
        joined = data if not out else out + b"," + data
        if len(joined) > PARAM_NAMES_BYTES:
            break
        out = joined
    return out


def decode(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``report_fields`` dict from one batch's column values; keys whose column is missing
    (a version-1 file) are left out."""
    out: dict[str, Any] = {}
    if BATCH.step.key in row:
        step = int(row[BATCH.step.key])
        out[BATCH.step.key] = None if step < 0 else step
    for key in SCALAR_FIELDS:
        if key in row:
            out[key] = float(row[key])
    for key in MODULE_FIELDS:
        if key in row:
            out[key] = {m: float(v) for m, v in zip(MODULES, row[key])}
    for key in PLANE_FIELDS:
        if key in row:
            out[key] = tuple(float(v) for v in row[key])
    if BATCH.skipped.key in row:
        skipped = int(row[BATCH.skipped.key])
        out[BATCH.skipped.key] = None if skipped < 0 else bool(skipped)
    if BATCH.nonfinite.key in row:
        out[BATCH.nonfinite.key] = bytes(row[BATCH.nonfinite.key]).decode("utf-8", "replace") or None
    if BATCH.params_without_grad_count.key in row:
        count = int(row[BATCH.params_without_grad_count.key])
        text = bytes(row[BATCH.params_without_grad.key]).decode("utf-8", "replace")
        out[BATCH.params_without_grad_count.key] = None if count < 0 else count
        out[BATCH.params_without_grad.key] = None if count < 0 else tuple(n for n in text.split(",") if n)
    return out
