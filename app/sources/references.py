"""Reference runs: recordings opened beside the run on screen, to compare with it.

A reference is read once, completely, when it is opened (its per-batch columns, its config and
the verdicts of its last batch) and the file is closed again: nothing here touches the
training worker or the replay source, so live training and a replayed recording go on while
references are added, hidden or closed. Reading is a few small column reads (the last batch's
telemetry for its verdicts included), well under a frame for the recordings this app writes.

This module is the data side, without Qt: :class:`~app.panels.reference_curves.ComparisonSet`
keeps the open references and draws their curves into the training panel, and the comparison
panel lists them and shows verdicts and config differences side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from energy_flow.diagnostics import HealthReport
from energy_flow.diagnostics.sources import assess_recording_batch
from energy_flow.trace.figures import BATCH
from energy_flow.trace.recording import open_recording, recorded_series

#: Config keys not compared (they say where a run ran, not what it is).
IGNORED_CONFIG_KEYS = frozenset({"device"})
#: Shown where a run has no value.
MISSING = "—"


@dataclass(frozen=True, eq=False)
class ReferenceRun:
    """Everything shown about one reference recording (read-only copies)."""

    path: Path
    name: str
    x: np.ndarray               # training step per batch (1-based batch position when unknown)
    loss: np.ndarray            # per batch, NaN unknown
    landed_fraction: np.ndarray
    config: dict[str, Any]
    health: HealthReport | None  # verdicts of its last batch; None for an empty recording
    num_batches: int


def load_reference(path: str | Path) -> ReferenceRun:
    """Read a recording as a reference; raises RecordingError/OSError naming the file."""
    with open_recording(path) as rec:
        n = rec.num_batches
        steps = recorded_series(rec, BATCH.step)
        x = steps if n and np.isfinite(steps).all() else np.arange(1, n + 1, dtype=np.float64)
        health = assess_recording_batch(rec, n - 1) if n else None
        return ReferenceRun(path=Path(rec.path), name=Path(rec.path).stem, x=x,
                            loss=recorded_series(rec, BATCH.loss).astype(np.float64),
                            landed_fraction=recorded_series(rec, BATCH.landed_fraction).astype(np.float64),
                            config=dict(rec.config), health=health, num_batches=n)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config_differences(configs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Keys whose values differ between the runs: (key, one text per run, "—" where absent)."""
    keys = sorted(set().union(*(c.keys() for c in configs.values())) - IGNORED_CONFIG_KEYS) if configs else []
    out = []
    for key in keys:
        values = [_text(c[key]) if key in c else MISSING for c in configs.values()]
        if len(set(values)) > 1:
            out.append((key, values))
    return out
