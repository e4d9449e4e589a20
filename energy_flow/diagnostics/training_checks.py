"""Checks of the optimisation: non-finite values, gradients, updates, output collapse, loss
trend and learning rate, from a batch's training signals and the run's history.

A batch without a training step (a replayed FlowRecorder batch, a forward pass of another
model) cannot be judged on these, and every check here says so.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from energy_flow.diagnostics.evidence import Evidence
from energy_flow.diagnostics.flow_checks import nonfinite_telemetry, percent
from energy_flow.diagnostics.thresholds import FLAT_WINDOW, LOSS_WINDOW, THRESHOLDS, TREND_WINDOW
from energy_flow.diagnostics.verdict import Level, Verdict
from energy_flow.trace.figures import BATCH

NO_STEP = "no training step recorded for this batch"


def _unknown(key: str, title: str, why: str, advice: str = "") -> Verdict:
    return Verdict(key, title, Level.UNKNOWN, why, advice)


def _per_module(ev: Evidence, name: str) -> dict[str, float]:
    values = ev.signal(name)
    if not isinstance(values, Mapping):
        return {}
    return {k: float(v) for k, v in values.items() if v is not None}


# ---------------------------------------------------------------------------------- finite
def finite(ev: Evidence) -> Verdict:
    title = "Finite values"
    problems, scope = [], []
    if ev.signals is not None:
        scope.append("loss, gradients, outputs")
        if ev.signals.get(BATCH.nonfinite.key):
            problems.append(str(ev.signals[BATCH.nonfinite.key]))
        loss = ev.signals.get(BATCH.loss.key)
        if loss is not None and not math.isfinite(float(loss)) and not ev.signals.get(BATCH.nonfinite.key):
            problems.append(f"loss is {loss}")
        if ev.signals.get("outputs_finite") is False:
            problems.append("output embeddings")
    if ev.telemetry is not None:
        scope.append("telemetry")
        bad = nonfinite_telemetry(ev.telemetry)
        if bad:
            problems.append("telemetry: " + ", ".join(bad))
    advice = ("NaN or inf appeared; the trainer skipped the update and kept the weights. Usual causes: "
              "a learning rate too high, exploding gradients (see clipping), NaN in the input data.")
    if problems:
        return Verdict("finite", title, Level.FAILURE, "non-finite: " + "; ".join(problems), advice, 1.0)
    if not scope:
        return _unknown("finite", title, "neither telemetry nor a training step was recorded", advice)
    not_seen = "" if ev.signals is not None else " (no training step recorded: loss and gradients unseen)"
    return Verdict("finite", title, Level.OK, f"all finite: {', '.join(scope)}{not_seen}", advice, 0.0)


# ---------------------------------------------------------------------------------- gradients
def gradients(ev: Evidence) -> Verdict:
    """Missing gradients (failure) and vanishing ones (gradient norm ≪ weight norm)."""
    title = "Gradients"
    advice = ("A parameter with no gradient is not part of the loss's graph (detached, unused, or "
              "behind a hard threshold); a vanishing one learns nothing. Look at the module named.")
    if ev.signals is None:
        return _unknown("gradients", title, NO_STEP, advice)
    names = list(ev.signals.get(BATCH.params_without_grad.key) or ())
    count = len(names) if names else ev.signal(BATCH.params_without_grad_count)
    if count:
        listed = f": {', '.join(names[:3])}{'…' if len(names) > 3 else ''}" if names else ""
        return Verdict("gradients", title, Level.FAILURE,
                       f"{int(count)} trainable parameter(s) got no gradient{listed}",
                       advice + ("\nNo gradient:\n" + "\n".join(names) if names else ""), float(count))
    grads = {m: v for m, v in _per_module(ev, BATCH.grad_norms).items() if not math.isnan(v)}
    weights = {m: v for m, v in _per_module(ev, BATCH.weight_norms).items() if not math.isnan(v)}
    if count is None or not grads or not weights:
        return _unknown("gradients", title, "per-module gradient and weight norms were not recorded", advice)
    ratios = {m: grads[m] / weights[m] for m in grads if m in weights and weights[m] > 0}
    if not ratios or not all(math.isfinite(r) for r in ratios.values()):
        return _unknown("gradients", title, "gradient norms are not finite (see non-finite values)", advice)
    weakest = min(ratios, key=ratios.get)
    level = THRESHOLDS["gradient_vanishing"].level(ratios[weakest])
    detail = (f"every parameter got a gradient; smallest ‖g‖/‖θ‖ {ratios[weakest]:.1e} ({weakest})")
    return Verdict("gradients", title, level, detail, advice, ratios[weakest])


def clipping(ev: Evidence) -> Verdict:
    """Exploding gradients: clipped by a large factor, batch after batch."""
    title, th = "Clipping", THRESHOLDS["gradient_explosion"]
    advice = ("The gradient is far larger than grad_clip, batch after batch: updates follow the clip, "
              "not the loss. Lower the learning rate, check the loss scale, look for a saturating head.")
    if ev.signals is None:
        return _unknown("clipping", title, NO_STEP, advice)
    clip = ev.signal(BATCH.grad_clip)
    norms = ev.series(BATCH.grad_norm)[-TREND_WINDOW:]
    if norms.size == 0 and ev.signal(BATCH.grad_norm) is not None:
        norms = np.asarray([float(ev.signal(BATCH.grad_norm))])
        norms = norms[np.isfinite(norms)]
    if clip is None or not clip > 0 or norms.size == 0:
        return _unknown("clipping", title, "gradient norm or clip level not recorded", advice)
    factor = float(np.median(norms / float(clip)))
    return Verdict("clipping", title, th.level(factor),
                   f"gradient norm {factor:.2g}× grad_clip={float(clip):g} "
                   f"(median of the last {norms.size} batch{'es' if norms.size > 1 else ''})",
                   advice, factor)


def updates(ev: Evidence) -> Verdict:
    title = "Update size"
    advice = ("‖Δθ‖/‖θ‖ near 1e-3 per step is typical. Far larger: the learning rate is too high for "
              "that module; far smaller: it is frozen (learning rate at its floor, vanishing gradient).")
    if ev.signals is None:
        return _unknown("updates", title, NO_STEP, advice)
    if ev.signals.get(BATCH.skipped.key):
        return _unknown("updates", title, "the update was skipped (non-finite step)", advice)
    ratios = {m: v for m, v in _per_module(ev, BATCH.update_ratios).items() if math.isfinite(v)}
    if not ratios:
        return _unknown("updates", title, "update-to-weight ratios were not recorded", advice)
    big, small = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
    level = max(THRESHOLDS["update_ratio"].level(ratios[big]), THRESHOLDS["update_stalled"].level(ratios[small]))
    return Verdict("updates", title, level,
                   f"‖Δθ‖/‖θ‖ from {ratios[small]:.1e} ({small}) to {ratios[big]:.1e} ({big})",
                   advice, ratios[big])


# ---------------------------------------------------------------------------------- collapse
def collapse(ev: Evidence) -> Verdict:
    title, th = "Output spread", THRESHOLDS["collapse"]
    advice = ("The outputs are much closer to each other than the targets are: the model predicts "
              "nearly the same embedding for every input (the mean target) and cannot tell pairs "
              "apart. Look at how much of the input reaches the planes (landing, edge pile-up), the "
              "output mapper's capacity, and a contrastive loss.")
    if ev.signals is None:
        return _unknown("collapse", title, NO_STEP, advice)
    out = ev.window(BATCH.output_spread, TREND_WINDOW)
    tgt = ev.window(BATCH.target_spread, TREND_WINDOW)
    if out.size == 0 or out.size != tgt.size:
        out = np.asarray([ev.signal(BATCH.output_spread)], dtype=np.float64) if ev.signal(BATCH.output_spread) is not None else np.empty(0)
        tgt = np.asarray([ev.signal(BATCH.target_spread)], dtype=np.float64) if ev.signal(BATCH.target_spread) is not None else np.empty(0)
    ok = np.isfinite(out) & np.isfinite(tgt) & (tgt > 0) if out.size == tgt.size else np.zeros(0, bool)
    if not ok.any():
        return _unknown("collapse", title, "output and target spread not recorded", advice)
    ratio = float(np.median(out[ok] / tgt[ok]))
    n = int(ok.sum())
    return Verdict("collapse", title, th.level(ratio),
                   f"outputs spread {ratio:.2f}× as much as targets ({out[ok][-1]:.3f} vs {tgt[ok][-1]:.3f}; "
                   f"median of {n} batch{'es' if n > 1 else ''})", advice, ratio)


# ---------------------------------------------------------------------------------- loss trend
def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _change_noise(losses: np.ndarray, before: float) -> float:
    """How far apart the two compared windows' means could be by chance alone, relative to the
    earlier one: twice the standard error of the difference of two LOSS_WINDOW-batch means, from
    the scatter of the batches inside them. A loss that varies from batch to batch (every batch
    holds other pairs) can show a near-zero change between two windows while it still falls; it
    is called flat only when the change *and* this margin are small."""
    if not before:
        return 0.0
    last = losses[-LOSS_WINDOW:]
    earlier = losses[-LOSS_WINDOW - FLAT_WINDOW:-FLAT_WINDOW]
    variance = (float(np.var(last, ddof=1)) + float(np.var(earlier, ddof=1))) / LOSS_WINDOW
    return 2.0 * math.sqrt(variance) / abs(before)


def loss_trend(ev: Evidence) -> Verdict:
    title = "Loss trend"
    advice = ("Diverging: the windowed loss is climbing away from its best (learning rate too high, "
              "see clipping and update size). Flat: nothing changes any more (learning rate at its "
              "floor, saturated heads, or converged: compare the loss with the baselines).")
    losses = ev.series(BATCH.loss)
    if losses.size < 2 * LOSS_WINDOW:
        return _unknown("loss", title, f"{losses.size} batches of loss; the trend needs {2 * LOSS_WINDOW}", advice)
    means = _rolling_mean(losses, LOSS_WINDOW)
    best = float(means.min())
    divergence = float(means[-1] / best) if best > 0 else float("nan")
    div_level = THRESHOLDS["loss_divergence"].level(divergence)
    detail = f"last {LOSS_WINDOW} batches' mean {means[-1]:.4g}, {divergence:.2f}× the best {best:.4g}"
    level, value = div_level, divergence
    if losses.size >= FLAT_WINDOW + LOSS_WINDOW:
        before = float(means[-1 - FLAT_WINDOW])
        change = abs(float(means[-1]) - before) / abs(before) if before else float("nan")
        noise = _change_noise(losses, before)
        bound = change + noise
        flat_level = THRESHOLDS["loss_flat"].level(bound)
        detail += f"; {change:.2%} change over {FLAT_WINDOW} batches"
        if noise >= 1e-4:
            detail += f" (± {noise:.2%} from the batches' scatter)"
        if flat_level > level:
            level, value = flat_level, bound
    else:
        detail += f"; flatness needs {FLAT_WINDOW + LOSS_WINDOW} batches"
    return Verdict("loss", title, level, detail, advice, value)


def learning_rate(ev: Evidence) -> Verdict:
    title, th = "Learning rate", THRESHOLDS["learning_rate"]
    advice = ("ReduceLROnPlateau has cut the rate to a sliver of its start: the run has hit plateau "
              "after plateau. Look at the loss trend; restart from a checkpoint with a higher rate or "
              "change the model.")
    lr = ev.signal(BATCH.learning_rate)
    if lr is None:
        return _unknown("learning_rate", title, NO_STEP, advice)
    if not ev.initial_learning_rate:
        return _unknown("learning_rate", title, f"rate {float(lr):.2g}; the initial rate is unknown", advice)
    ratio = float(lr) / ev.initial_learning_rate
    return Verdict("learning_rate", title, th.level(ratio),
                   f"{float(lr):.2g} = {percent(ratio)} of the initial {ev.initial_learning_rate:.2g}", advice, ratio)
