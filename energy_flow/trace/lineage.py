"""One flow of a traced batch, its family (ancestors and descendants), and their export.

Why here and not in the app: the family of a flow is a question about telemetry, answered
from a :class:`~energy_flow.trace.telemetry.FlowSample` alone (live, replayed, or recorded by
``FlowRecorder``), so the inspector panel, the 3D view's highlighting and any script get the
same answer, tested without a window.

Everything is vectorised over the sample: the walks up (ancestors) and down (descendants) loop
once per *generation* of the family tree, never once per flow. A parent that is not in the
sample (a capped sample, or a recorder that traced part of a batch) ends the walk up; the
record says so (``parent_in_sample``), it does not invent the missing flow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from energy_flow.trace.telemetry import REASON_NAMES, FlowSample

#: Columns of the CSV export, one row per (flow, step at which it existed).
CSV_COLUMNS = ("relation", "flow_id", "parent_id", "sample", "step", "x", "y", "z", "energy")


class FlowNotFound(KeyError):
    """The flow id is not in this batch's traced sample (message names the id and the sample)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


def row_of(flows: FlowSample, flow_id: int) -> int:
    """Row of ``flow_id`` in the sample; raises FlowNotFound naming the id and the sample."""
    rows = np.flatnonzero(flows.flow_id == int(flow_id))
    if rows.shape[0] == 0:
        lo = int(flows.flow_id.min()) if flows.num_flows else 0
        hi = int(flows.flow_id.max()) if flows.num_flows else -1
        raise FlowNotFound(f"flow {int(flow_id)} is not in this batch's traced sample "
                           f"({flows.num_flows:,} flows, ids {lo}–{hi})")
    return int(rows[0])


def ancestor_rows(flows: FlowSample, row: int) -> np.ndarray:
    """Rows of the flow's ancestors in the sample, parent first (one loop per generation)."""
    out: list[int] = []
    parent = int(flows.parent_id[row])
    while parent >= 0:
        found = np.flatnonzero(flows.flow_id == parent)
        if found.shape[0] == 0:
            break
        out.append(int(found[0]))
        parent = int(flows.parent_id[found[0]])
    return np.asarray(out, dtype=np.intp)


def descendant_rows(flows: FlowSample, row: int) -> np.ndarray:
    """Rows of every descendant in the sample, generation by generation (sorted within each)."""
    frontier = flows.flow_id[[row]]
    out: list[np.ndarray] = []
    while frontier.shape[0]:
        children = np.flatnonzero(np.isin(flows.parent_id, frontier))
        out.append(children)
        frontier = flows.flow_id[children]
    return np.concatenate(out).astype(np.intp) if out else np.zeros(0, np.intp)


def lineage_mask(flows: FlowSample, flow_id: int) -> np.ndarray:
    """[F] bool: the flow itself, its ancestors and its descendants."""
    row = row_of(flows, flow_id)
    mask = np.zeros(flows.num_flows, dtype=bool)
    mask[row] = True
    mask[ancestor_rows(flows, row)] = True
    mask[descendant_rows(flows, row)] = True
    return mask


@dataclass(frozen=True, eq=False)
class FlowRecord:
    """What the inspector shows about one flow, taken from the sample (copies, read-only)."""

    flow_id: int
    row: int
    sample: int
    parent_id: int                 # -1: placed on the start plane
    parent_in_sample: bool         # False when the parent exists but was not traced
    children: tuple[int, ...]      # ids of direct children, in spawn order
    birth_step: int
    end_step: int
    reason: str                    # termination reason's name
    energy: np.ndarray             # [T+1] NaN where the flow did not exist
    positions: np.ndarray          # [T+1, 3] NaN where the flow did not exist
    ancestors: tuple[int, ...]     # parent first
    descendants: tuple[int, ...]   # children first, then grandchildren, …

    @property
    def steps(self) -> np.ndarray:
        """Steps at which the flow existed (finite position)."""
        return np.flatnonzero(np.isfinite(self.positions[:, 0]))


def flow_record(flows: FlowSample, flow_id: int,
                reason_names: tuple[str, ...] = REASON_NAMES) -> FlowRecord:
    """The record of ``flow_id``; raises FlowNotFound when the sample does not hold it."""
    row = row_of(flows, flow_id)
    children = np.flatnonzero(flows.parent_id == flows.flow_id[row])
    children = children[np.lexsort((flows.flow_id[children], flows.birth_step[children]))]
    parent = int(flows.parent_id[row])
    ancestors = ancestor_rows(flows, row)
    code = int(flows.reason[row])
    energy = np.array(flows.energy[row], dtype=np.float64)
    positions = np.array(flows.positions[row], dtype=np.float64)
    energy.flags.writeable = positions.flags.writeable = False
    return FlowRecord(
        flow_id=int(flows.flow_id[row]), row=row, sample=int(flows.sample_index[row]),
        parent_id=parent, parent_in_sample=parent < 0 or ancestors.shape[0] > 0,
        children=tuple(int(i) for i in flows.flow_id[children]),
        birth_step=int(flows.birth_step[row]), end_step=int(flows.end_step[row]),
        reason=reason_names[code] if 0 <= code < len(reason_names) else f"reason {code}",
        energy=energy, positions=positions,
        ancestors=tuple(int(i) for i in flows.flow_id[ancestors]),
        descendants=tuple(int(i) for i in flows.flow_id[descendant_rows(flows, row)]),
    )


def _relation_rows(flows: FlowSample, record: FlowRecord) -> list[tuple[str, int]]:
    return ([("selected", record.row)] + [("ancestor", row_of(flows, i)) for i in record.ancestors]
            + [("descendant", row_of(flows, i)) for i in record.descendants])


def lineage_csv(flows: FlowSample, record: FlowRecord) -> str:
    """CSV text: one row per (flow of the lineage, step it existed at); see CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for relation, row in _relation_rows(flows, record):
        pos, energy = flows.positions[row], flows.energy[row]
        for t in np.flatnonzero(np.isfinite(pos[:, 0])):
            writer.writerow((relation, int(flows.flow_id[row]), int(flows.parent_id[row]),
                             int(flows.sample_index[row]), int(t), *(repr(float(v)) for v in pos[t]),
                             repr(float(energy[t]))))
    return out.getvalue()


def _json_number(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def lineage_json(flows: FlowSample, record: FlowRecord,
                 reason_names: tuple[str, ...] = REASON_NAMES) -> dict[str, Any]:
    """A JSON-ready dict: every flow of the lineage with its summary and per-step values.

    Steps at which a flow did not exist are left out (JSON has no NaN).
    """
    def describe(relation: str, row: int) -> dict[str, Any]:
        rec = flow_record(flows, int(flows.flow_id[row]), reason_names)
        steps = rec.steps
        return {"relation": relation, "flow_id": rec.flow_id, "parent_id": rec.parent_id,
                "sample": rec.sample, "children": list(rec.children), "birth_step": rec.birth_step,
                "end_step": rec.end_step, "reason": rec.reason, "steps": steps.tolist(),
                "energy": [_json_number(v) for v in rec.energy[steps]],
                "positions": [[_json_number(v) for v in p] for p in rec.positions[steps]]}

    return {"selected": record.flow_id, "ancestors": list(record.ancestors),
            "descendants": list(record.descendants),
            "flows": [describe(relation, row) for relation, row in _relation_rows(flows, record)]}


def lineage_json_text(flows: FlowSample, record: FlowRecord,
                      reason_names: tuple[str, ...] = REASON_NAMES) -> str:
    return json.dumps(lineage_json(flows, record, reason_names), indent=1)
