"""Checks of where the flows went in one batch, from its telemetry (all flows, on the device).

Each function takes an :class:`Evidence` and returns one :class:`Verdict` whose detail line
carries the numbers its level was decided from.
"""

from __future__ import annotations

import numpy as np

from energy_flow.diagnostics.evidence import Evidence
from energy_flow.diagnostics.thresholds import MAX_BORDER_CELL_SHARE, THRESHOLDS
from energy_flow.diagnostics.verdict import Level, Verdict
from energy_flow.trace.figures import step_weights
from energy_flow.trace.telemetry import SATURATION_NAMES, STILL_EPSILON, BatchTelemetry

NO_TELEMETRY = "no telemetry for this batch (tracing off)"


def _unknown(key: str, title: str, why: str, advice: str = "") -> Verdict:
    return Verdict(key, title, Level.UNKNOWN, why, advice)


def _share(n: float, total: float) -> float:
    return n / total if total > 0 else float("nan")


def percent(x: float) -> str:
    """A share as a percentage that never rounds a non-zero share to "0 %"."""
    if x == 0 or x >= 0.01:
        return f"{x:.0%}"
    return f"{x:.2%}" if x >= 0.0001 else f"{x:.1e}"


def _stepped_weights(tel: BatchTelemetry) -> np.ndarray:
    """Flows stepped at steps 1…T: those alive after the step before (the merge's weights)."""
    return step_weights(tel.aggregates.active)[1:]


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Mean of per-step shares weighted by the flows stepped; NaN rows are skipped."""
    ok = np.isfinite(values) & (weights > 0)
    return float(np.sum(values[ok] * weights[ok]) / np.sum(weights[ok])) if ok.any() else float("nan")


# ---------------------------------------------------------------------------------- landing
def landing(ev: Evidence) -> Verdict:
    title, th = "Landing", THRESHOLDS["landing"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("landing", title, NO_TELEMETRY)
    per_plane = tel.aggregates.landed.sum(axis=0)
    share = _share(float(per_plane.sum()), float(tel.total_flows))
    planes = ", ".join(f"z={z:+g}: {int(n)}" for z, n in zip(tel.plane_z, per_plane))
    detail = f"{int(per_plane.sum())} of {tel.total_flows} flows landed ({percent(share)}; {planes})"
    return Verdict("landing", title, th.level(share), detail,
                   "Flows that never reach an output plane carry nothing to the output embedding. "
                   "Usual causes: displacement too small for the lattice depth (displacement_scale, "
                   "max_steps), Δz that does not commit to a direction, energy fading before arrival.",
                   share)


def timeouts(ev: Evidence) -> Verdict:
    title, th = "Timeouts", THRESHOLDS["timeouts"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("timeouts", title, NO_TELEMETRY)
    n = int(tel.aggregates.timed_out.sum())
    share = _share(n, float(tel.total_flows))
    return Verdict("timeouts", title, th.level(share),
                   f"{n} of {tel.total_flows} flows timed out after {tel.num_steps} steps ({percent(share)})",
                   "Timed-out flows were still travelling when max_steps ran out; their deposit (with "
                   "timeout_policy='project') comes from a projection rule, not from the model. Raise "
                   "max_steps or displacement_scale, or look at the motion and landing checks.",
                   share)


# ---------------------------------------------------------------------------------- motion
def motion(ev: Evidence) -> Verdict:
    title, th = "Motion", THRESHOLDS["motion"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("motion", title, NO_TELEMETRY)
    advice = ("Flows that stand still never land. Usual causes: a displacement head collapsed to "
              "zero (tanh saturated at 0 output, weights decayed), displacement_scale too small, "
              "or a model that only moves a few flows per step.")
    still = tel.aggregates.still_fraction
    if still is not None and np.isfinite(still[1:]).any():
        share = _weighted_mean(np.asarray(still[1:], dtype=np.float64), _stepped_weights(tel))
        worst = float(np.nanmax(still[1:]))
        detail = (f"{percent(share)} of flow-steps moved < {STILL_EPSILON:g} (worst step {percent(worst)}), "
                  f"all {tel.total_flows} flows")
        return Verdict("motion", title, th.level(share), detail, advice, share)
    flows = tel.flows
    if flows is None or flows.num_flows == 0:
        return _unknown("motion", title, "no per-step motion share and no trajectory sample recorded", advice)
    # Older recordings: the same share over the sampled flows' trajectories.
    step = np.abs(np.diff(flows.positions, axis=1)).max(axis=2)   # [F, T], NaN where no flow
    measured = np.isfinite(step)
    if not measured.any():
        return _unknown("motion", title, "the trajectory sample has no step to measure", advice)
    share = float(np.mean(step[measured] < STILL_EPSILON))
    detail = (f"{percent(share)} of flow-steps moved < {STILL_EPSILON:g}, "
              f"from {flows.num_flows} sampled flows of {tel.total_flows}")
    return Verdict("motion", title, th.level(share), detail, advice, share)


# ---------------------------------------------------------------------------------- edge
def border_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def edge(ev: Evidence) -> Verdict:
    title, th = "Edge pile-up", THRESHOLDS["edge"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("edge", title, NO_TELEMETRY)
    advice = ("Flows pushed against the x/y walls are clamped there and slide along them, so they all "
              "land on the outermost cells. Usual causes: displacements that saturate in x/y (see "
              "saturation), a displacement_scale too large for the lattice, an input mapper that "
              "pushes every cell the same way.")
    energy = np.asarray(tel.plane_energy, dtype=np.float64)   # [P, H, W]
    mask = border_mask(*energy.shape[1:])
    cell_share = mask.mean()
    total = energy.sum()
    if cell_share > MAX_BORDER_CELL_SHARE:
        return _unknown("edge", title, f"the {energy.shape[2]}×{energy.shape[1]} plane is mostly border "
                        f"({cell_share:.0%} of its cells): pile-up cannot be told from an even deposit", advice)
    if not total > 0:
        return _unknown("edge", title, "no energy was deposited on the output planes", advice)
    energy_share = float(energy[:, mask].sum() / total)
    excess = (energy_share - cell_share) / (1.0 - cell_share)
    clamp = tel.aggregates.clamp_fraction[1:]
    clamp_share = _weighted_mean(np.asarray(clamp, dtype=np.float64), _stepped_weights(tel))
    detail = (f"border cells got {percent(energy_share)} of the energy for {percent(cell_share)} of the cells "
              f"(excess {excess:.2f}); {percent(clamp_share)} of moves clamped")
    return Verdict("edge", title, th.level(excess), detail, advice, excess)


# ---------------------------------------------------------------------------------- energy
def fading(ev: Evidence) -> Verdict:
    title = "Energy"
    tel = ev.telemetry
    if tel is None:
        return _unknown("fading", title, NO_TELEMETRY)
    agg = tel.aggregates
    horizon = ev.max_steps or tel.num_steps
    half = max(1, horizon // 2)
    early = int(agg.faded[1:half + 1].sum())
    faded = int(agg.faded.sum())
    early_share = _share(early, float(tel.total_flows))
    placed = float(agg.active_energy[0])
    kept = float(agg.deposited_energy[-1].sum() + agg.active_energy[-1])
    kept_share = kept / placed if placed > 0 else float("nan")
    fade_level = THRESHOLDS["fading"].level(early_share)
    kept_level = THRESHOLDS["energy_kept"].level(kept_share) if faded == 0 else Level.OK
    level = max(fade_level, kept_level)
    detail = (f"{percent(early_share)} of flows faded by step {half} ({faded} in all); "
              f"{percent(kept_share) if np.isfinite(kept_share) else '–'} of the placed energy kept")
    if kept_level > Level.OK and fade_level <= Level.OK:
        detail = f"energy never fades: {detail}"
    return Verdict("fading", title, level, detail,
                   "Dying out: most flows fall below energy_threshold before they can land (retention "
                   "head too low, threshold too high). Never fading: the retention head is pinned at 1, "
                   "so flows only end by landing or timing out.",
                   early_share)


# ---------------------------------------------------------------------------------- spawns
def spawn_budget(ev: Evidence) -> Verdict:
    title, th = "Spawn budget", THRESHOLDS["spawn_budget"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("spawn_budget", title, NO_TELEMETRY)
    requested = int(tel.aggregates.spawn_requested.sum())
    denied = int(tel.aggregates.spawn_denied.sum())
    if requested == 0:
        return Verdict("spawn_budget", title, Level.OK, "no spawn was requested in this batch", "", 0.0)
    share = denied / requested
    return Verdict("spawn_budget", title, th.level(share),
                   f"{denied} of {requested} spawn requests denied ({percent(share)})",
                   "The flow budget (max_active_flows) was full when flows asked for children. Raise "
                   "max_active_flows, lower max_spawn_per_step, or raise spawn_threshold.",
                   share)


# ---------------------------------------------------------------------------------- saturation
def saturation(ev: Evidence) -> Verdict:
    title, th = "Saturation", THRESHOLDS["saturation"]
    tel = ev.telemetry
    if tel is None:
        return _unknown("saturation", title, NO_TELEMETRY)
    advice = ("Outputs pinned at a sigmoid/tanh limit pass almost no gradient. Usual causes: a learning "
              "rate too high, inputs to a head growing without bound, a bias initialised too far out. "
              "'hidden' means GRU units stuck at ±1.")
    sat = tel.aggregates.saturation
    if sat is None:
        return _unknown("saturation", title, "saturation was not recorded for this batch", advice)
    weights = _stepped_weights(tel)
    shares = {name: _weighted_mean(np.asarray(sat[1:, i], dtype=np.float64), weights)
              for i, name in enumerate(SATURATION_NAMES)}
    known = {k: v for k, v in shares.items() if np.isfinite(v)}
    if not known:
        return _unknown("saturation", title, "the recorder could not measure saturation", advice)
    worst = max(known, key=known.get)
    parts = ", ".join(f"{k} {percent(v)}" for k, v in known.items())
    missing = [k for k in shares if k not in known]
    detail = f"pinned: {parts}" + (f" (not recorded: {', '.join(missing)})" if missing else "")
    return Verdict("saturation", title, th.level(known[worst]), detail, advice, known[worst])


# ---------------------------------------------------------------------------------- finite
def nonfinite_telemetry(tel: BatchTelemetry) -> list[str]:
    """Telemetry arrays holding NaN/inf where the format promises numbers.

    Legitimate NaNs are skipped: motion statistics at step 0 (nothing has moved yet), the
    trajectory sample (NaN where a flow did not exist) and saturation columns a recorder could
    not measure (a whole column NaN).
    """
    agg = tel.aggregates
    arrays = {
        "plane_energy": tel.plane_energy, "plane_reached": tel.plane_reached,
        "energy_percentiles": agg.energy_percentiles,
        "coverage": agg.coverage, "deposited_energy": agg.deposited_energy,
        "active_energy": agg.active_energy,
        "delta_min": agg.delta_min[1:], "delta_max": agg.delta_max[1:],
        "delta_percentiles": agg.delta_percentiles[1:], "clamp_fraction": agg.clamp_fraction[1:],
    }
    still = agg.still_fraction
    if still is not None:
        arrays["still_fraction"] = still[1:]
    sat = agg.saturation
    if sat is not None:
        measured = np.isfinite(sat[1:]).any(axis=0)
        arrays["saturation"] = sat[1:, measured]
    steps = tel.plane_energy_steps
    if steps is not None:
        arrays["plane_energy_steps"] = steps
    return [name for name, arr in arrays.items() if np.asarray(arr).size and not np.all(np.isfinite(arr))]
