"""Health checks of one batch, computed from its snapshot (no Qt, so it is unit-testable).

Each check answers one question a researcher asks first when a run looks wrong, from the real
numbers of the batch, and says in one line why it passed or failed. A check that cannot be
answered (e.g. parameter gradients of a replayed recording, which stores no report) is
``ok=None`` and says so rather than guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.snapshot import Snapshot

#: A flow that moves less than this (normalised units, per axis, per step) is not moving.
#: Positions live in [-1, 1], so this is 1/20000 of the lattice width: ≤ 1/200 of a cell even
#: on the 100-cell "optimized" lattice (cell spacing 2/99 ≈ 0.02) and far below any
#: displacement_scale the config accepts (> 0). Tested on the 5th–95th displacement
#: percentiles, so "stuck" means at least 90 % of the flows moved less than this on every
#: axis at every step of the batch.
STUCK_DISPLACEMENT = 1e-4


@dataclass(frozen=True)
class HealthCheck:
    key: str            # stable identifier (for tests and the panel's layout)
    title: str          # badge label
    ok: bool | None     # True healthy, False a problem, None cannot be judged from this snapshot
    detail: str         # one-line explanation of the verdict, with the numbers
    tooltip: str = ""   # longer text (e.g. the names of parameters without gradient)


def compute_health(snapshot: Snapshot) -> tuple[HealthCheck, ...]:
    """All checks, in display order."""
    return (_finite(snapshot), _landed(snapshot), _moving(snapshot), _spawn_budget(snapshot),
            _gradients(snapshot))


def _nonfinite_fields(snapshot: Snapshot) -> list[str]:
    """Telemetry arrays holding NaN/inf where the format promises numbers.

    Legitimate NaNs are skipped: displacement statistics at step 0 (nothing moved yet) and the
    trajectory sample (NaN where a flow did not exist).
    """
    tel = snapshot.telemetry
    agg = tel.aggregates
    arrays = {
        "plane_energy": tel.plane_energy, "plane_reached": tel.plane_reached,
        "energy_percentiles": agg.energy_percentiles, "coverage": agg.coverage,
        "deposited_energy": agg.deposited_energy, "active_energy": agg.active_energy,
        "delta_min": agg.delta_min[1:], "delta_max": agg.delta_max[1:],
        "delta_percentiles": agg.delta_percentiles[1:], "clamp_fraction": agg.clamp_fraction[1:],
    }
    return [name for name, arr in arrays.items() if arr.size and not np.all(np.isfinite(arr))]


def _finite(snapshot: Snapshot) -> HealthCheck:
    report = snapshot.report
    bad = _nonfinite_fields(snapshot)
    problems = []
    if report is not None and report.nonfinite:
        problems.append(report.nonfinite)
    if report is not None and report.outputs.size and not np.all(np.isfinite(report.outputs)):
        problems.append("output embeddings")
    if bad:
        problems.append("telemetry: " + ", ".join(bad))
    if problems:
        return HealthCheck("finite", "Non-finite values", False,
                           "Non-finite: " + "; ".join(problems),
                           "NaN or infinite values appeared in this batch; the trainer skipped the update.")
    scope = "loss, gradients, outputs and telemetry" if report is not None else "telemetry (no report in a recording)"
    return HealthCheck("finite", "Finite values", True, f"All finite: {scope}")


def _landed(snapshot: Snapshot) -> HealthCheck:
    landed = snapshot.telemetry.aggregates.landed.sum(axis=0)  # per plane
    total = int(landed.sum())
    flows = snapshot.telemetry.total_flows
    per_plane = " / ".join(f"z={z:+g}: {int(n)}" for z, n in zip(snapshot.telemetry.plane_z, landed))
    if total == 0:
        return HealthCheck("landed", "No flow landed", False,
                           f"0 of {flows} flows reached an output plane: the output is empty",
                           "Nothing was deposited on the output planes, so the output embedding carries "
                           "no information from the flows.")
    share = f" ({total / flows:.0%})" if flows else ""
    return HealthCheck("landed", "Flows landed", True, f"{total} of {flows} flows landed{share}",
                       f"Landed per output plane: {per_plane}")


def _moving(snapshot: Snapshot) -> HealthCheck:
    pct = snapshot.telemetry.aggregates.delta_percentiles[1:]  # [T, 3, P]; step 0 has no motion
    finite = pct[np.isfinite(pct)]
    if finite.size == 0:
        return HealthCheck("moving", "Flow motion", None, "No displacement statistics in this batch")
    largest = float(np.abs(finite).max())
    if largest < STUCK_DISPLACEMENT:
        return HealthCheck("moving", "Flows stuck", False,
                           f"5th–95th percentile |Δ| ≤ {largest:.1e} < {STUCK_DISPLACEMENT:g} on every axis",
                           "At least 90 % of the flows barely moved at every step: the displacement head "
                           "has collapsed to zero.")
    return HealthCheck("moving", "Flows moving", True,
                       f"largest 5th–95th percentile |Δ| per step: {largest:.3g}")


def _spawn_budget(snapshot: Snapshot) -> HealthCheck:
    agg = snapshot.telemetry.aggregates
    denied = int(agg.spawn_denied.sum())
    requested = int(agg.spawn_requested.sum())
    if denied > 0:
        return HealthCheck("spawn_budget", "Spawn budget exhausted", False,
                           f"{denied} of {requested} spawn requests denied by max_active_flows",
                           "The flow budget (max_active_flows) was full when flows asked for children; "
                           "raise it or lower max_spawn_per_step.")
    return HealthCheck("spawn_budget", "Spawn budget", True,
                       f"all {requested} spawn requests granted")


def _gradients(snapshot: Snapshot) -> HealthCheck:
    report = snapshot.report
    if report is None:
        return HealthCheck("gradients", "Gradients", None, "Not recorded (replay has no gradients)")
    missing = report.params_without_grad
    if missing:
        return HealthCheck("gradients", "Params without gradient", False,
                           f"{len(missing)} trainable parameter(s) got no gradient",
                           "No gradient (None or all zero):\n" + "\n".join(missing))
    return HealthCheck("gradients", "Gradients", True,
                       f"every parameter got a gradient (norm {report.grad_norm:.3g})")
