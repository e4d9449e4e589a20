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

from energy_flow.trace.recording.schema import NONFINITE_BYTES, PARAM_NAMES_BYTES
from energy_flow.trace.training_signals import MODULE_FIELDS, MODULES, REPORT_FIELDS, SCALAR_FIELDS

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


def encode(report: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Column values (name without ``batches/``) for one batch; raises ValueError naming the field."""
    unknown = sorted(set(report) - set(REPORT_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown report field(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(REPORT_FIELDS)}")
    step = report.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0):
        raise ValueError(f"{path}: report field 'step' must be an integer ≥ 0 or None, got {step!r}")
    row: dict[str, Any] = {"step": np.int64(-1 if step is None else step)}
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
    skipped = report.get("skipped")
    if skipped is not None and not isinstance(skipped, (bool, np.bool_)):
        raise ValueError(f"{path}: report field 'skipped' must be True, False or None, got {skipped!r}")
    row["skipped"] = np.int8(-1 if skipped is None else int(skipped))
    nonfinite = report.get("nonfinite")
    if nonfinite is not None and not isinstance(nonfinite, str):
        raise ValueError(f"{path}: report field 'nonfinite' must be a string or None, got {nonfinite!r}")
    row["nonfinite"] = np.bytes_(_utf8(nonfinite or "", NONFINITE_BYTES))
    names = report.get("params_without_grad")
    count = report.get("params_without_grad_count")
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
    row["params_without_grad_count"] = np.int32(-1 if names is None and count is None
                                                else count if count is not None else len(names))
    row["params_without_grad"] = np.bytes_(_fit_names(names or ()))
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
    if "step" in row:
        step = int(row["step"])
        out["step"] = None if step < 0 else step
    for key in SCALAR_FIELDS:
        if key in row:
            out[key] = float(row[key])
    for key in MODULE_FIELDS:
        if key in row:
            out[key] = {m: float(v) for m, v in zip(MODULES, row[key])}
    if "skipped" in row:
        skipped = int(row["skipped"])
        out["skipped"] = None if skipped < 0 else bool(skipped)
    if "nonfinite" in row:
        out["nonfinite"] = bytes(row["nonfinite"]).decode("utf-8", "replace") or None
    if "params_without_grad_count" in row:
        count = int(row["params_without_grad_count"])
        text = bytes(row["params_without_grad"]).decode("utf-8", "replace")
        out["params_without_grad_count"] = None if count < 0 else count
        out["params_without_grad"] = None if count < 0 else tuple(n for n in text.split(",") if n)
    return out
