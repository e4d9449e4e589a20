"""The display budget: which flows of a batch's traced sample the 3D view draws.

Software OpenGL draws a few thousand trajectories per frame at interactive rates (docs/architecture.md,
"Rendering budget"), a batch traces tens of thousands. The budget samples whole flow families
(a placed flow and all its descendants) evenly over flow ids, then trims the youngest children
if the last family overshoots, so exactly ``min(budget, F)`` flows are drawn — a drawn child
always has its parent drawn — and the view writes "showing N of M flows" on screen.
"""

from __future__ import annotations

import numpy as np

from energy_flow.trace.telemetry import FlowSample


def family_roots(flow_id: np.ndarray, parent_id: np.ndarray) -> np.ndarray:
    """Row of each flow's family root (its placed ancestor), by pointer jumping.

    A flow whose parent is not in the sample (the sample was capped) is its own root. The loop
    runs once per generation of the family tree, never once per flow.
    """
    n = flow_id.shape[0]
    order = np.argsort(flow_id, kind="stable")
    sorted_ids = flow_id[order]
    at = np.clip(np.searchsorted(sorted_ids, parent_id), 0, max(n - 1, 0))
    found = (parent_id >= 0) & (sorted_ids[at] == parent_id) if n else np.zeros(0, bool)
    parent_row = np.where(found, order[at], np.arange(n))
    root = parent_row
    while True:
        nxt = parent_row[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def sample_flows(flows: FlowSample, budget: int, include: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows of the ``min(budget, F)`` flows to draw, chosen deterministically.

    Families are picked evenly over flow-id order (ids run sample-major over the start plane,
    so the pick covers every traced sample and the whole plane); just enough families are
    taken to reach the budget, then the youngest children overall are trimmed to hit it
    exactly, so parents are kept before their late descendants. ``include`` (rows) are drawn
    on top of the budget: the selected flow's lineage is always shown.
    """
    if include is not None and include.shape[0]:
        return np.union1d(sample_flows(flows, budget), include).astype(np.intp)
    n = flows.num_flows
    if budget >= n:
        return np.arange(n)
    if budget <= 0:
        return np.zeros(0, dtype=np.intp)
    root = family_roots(flows.flow_id, flows.parent_id)
    roots, inverse, counts = np.unique(root, return_inverse=True, return_counts=True)
    k = max(1, int(np.ceil(budget * roots.shape[0] / n)))
    while True:
        picked = np.unique(np.linspace(0, roots.shape[0] - 1, k).round().astype(np.intp))
        total = int(counts[picked].sum())
        if total >= budget or k >= roots.shape[0]:
            break
        k = min(roots.shape[0], max(k + 1, int(np.ceil(k * budget / max(total, 1)))))
    chosen = np.flatnonzero(np.isin(inverse, picked))
    keep = np.lexsort((flows.flow_id[chosen], flows.birth_step[chosen]))[:budget]
    return np.sort(chosen[keep])
