"""Every threshold the health checks apply, in one table, each with the reason for its value.

``docs/health.md`` shows the same table (a test keeps the two equal). A threshold turns one
measured quantity into a level: ``bad_when="above"`` means larger values are worse. A value
exactly on a threshold takes the worse level, so a boundary case is never called healthy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from energy_flow.diagnostics.verdict import Level


@dataclass(frozen=True)
class Threshold:
    check: str       # the check that applies it
    quantity: str    # what is measured, in words
    bad_when: str    # "above" or "below"
    warn: float
    fail: float | None  # None: this quantity only ever warns
    why: str            # why these values

    def level(self, value: float | None) -> Level:
        """The level of ``value``; None or NaN (not measurable) is UNKNOWN, never OK."""
        if value is None or math.isnan(value):
            return Level.UNKNOWN
        worse = (lambda a, b: a >= b) if self.bad_when == "above" else (lambda a, b: a <= b)
        if self.fail is not None and worse(value, self.fail):
            return Level.FAILURE
        return Level.WARNING if worse(value, self.warn) else Level.OK


_TABLE = (
    Threshold("landing", "share of the batch's flows that reached an output plane", "below", 0.25, 0.05,
              "Only landed flows carry the input to the output planes. A fresh debug-preset model lands "
              "~80 % of its flows; below a quarter most of the input never reaches the output, below "
              "5 % the output embedding is built from a handful of flows (the research code landed 0.06 %)."),
    Threshold("timeouts", "share of the batch's flows still travelling when max_steps ran out", "above", 0.25, 0.5,
              "A timed-out flow did not finish its path; with timeout_policy='project' its energy is "
              "moved to the nearest plane by a rule, not by the model. The debug preset's model times out "
              "10–22 %; when half the flows time out the projection, not the flows, makes the output."),
    Threshold("motion", "share of flow-steps that moved less than STILL_EPSILON on every axis", "above", 0.25, 0.5,
              "A flow that does not move never reaches a plane. A fresh model moves every flow at every "
              "step (share 0); when a quarter of all flow-steps stand still the displacement head is "
              "collapsing, when half do most flows are stuck (a few border flows moving a lot cannot "
              "hide this: the share counts flows, not distance)."),
    Threshold("edge", "border excess: (energy share on the planes' border cells − their share of the cells) "
              "÷ (1 − their share of the cells); 0 is an even deposit, 1 all energy on the border",
              "above", 0.3, 0.6,
              "Flows pushed into the x/y clamp slide along the lattice's walls and land on the outermost "
              "cells, so the planes' interior goes unused. The debug preset's default model measures "
              "0.1–0.5 while it learns (its border gets 2–3× its fair share): a warning. At 0.6 most "
              "energy is on the border (on a 20×20 plane: 68 % of it on 19 % of the cells)."),
    Threshold("fading", "share of the batch's flows that faded in the first half of max_steps", "above", 0.3, 0.6,
              "Fading is the model's way to drop a flow, but flows that fade early carry nothing to the "
              "output. A fresh model fades almost none; when more than 60 % fade before half the steps "
              "the energy dies out before it can reach a plane."),
    Threshold("energy_kept", "energy still carried or deposited at the end ÷ the energy placed", "above",
              0.999, None,
              "Retention below 1 is how flows fade; if no energy at all is lost over a whole batch the "
              "retention head is pinned at 1 and fading, one of the model's three ways to end a flow, "
              "is switched off. Only a warning: a model may legitimately learn to keep its energy."),
    Threshold("spawn_budget", "share of spawn requests denied because max_active_flows was full", "above", 0.01, 0.5,
              "A denied request silently changes what the model asked for (the parent keeps the energy), "
              "and the spawn head is trained on behaviour it did not choose. Any denial is worth a look; "
              "when half are denied the budget, not the model, decides the flow count."),
    Threshold("saturation", "largest share of a head's outputs (or of GRU hidden units) within "
              "SATURATION_MARGIN of their limits", "above", 0.3, 0.7,
              "A pinned sigmoid or tanh passes almost no gradient (its slope at 0.99 is ~0.01 of the "
              "slope at 0). A few pinned outputs are normal; a third pinned slows learning; 70 % pinned "
              "means that head has stopped learning."),
    Threshold("gradient_explosion", "median factor by which the total gradient norm exceeded grad_clip "
              "over the recent batches", "above", 10.0, 100.0,
              "Clipping a gradient by 10× batch after batch means every update is mostly the clip's "
              "direction, not its size: the loss landscape is too steep for the learning rate. At 100× "
              "the run is on its way to NaN."),
    Threshold("gradient_vanishing", "smallest ratio of a module's gradient norm to its weight norm", "below",
              1e-6, 1e-9,
              "Healthy ratios on the debug preset are 1e-4…1e-1. Below 1e-6 a module learns 1000× slower "
              "than the rest; below 1e-9 it gets nothing float32 Adam can act on."),
    Threshold("update_ratio", "largest per-module ratio ‖Δθ‖ / ‖θ‖ of the optimiser step", "above", 0.1, 1.0,
              "A common rule of thumb puts healthy updates near 1e-3 of the weights. A step that moves a "
              "module by 10 % of its norm is violent; by 100 % it replaces the weights each batch."),
    Threshold("update_stalled", "smallest per-module ratio ‖Δθ‖ / ‖θ‖ of the optimiser step", "below", 1e-6, 1e-9,
              "Below a millionth of the weights per step a module would need millions of batches to "
              "change; at 1e-9 it is frozen (float32 rounding)."),
    Threshold("collapse", "median over recent batches of output spread ÷ target spread "
              "(spread = 1 − mean pairwise cosine)", "below", 0.5, 0.2,
              "If the outputs are much closer to each other than the targets are, the model predicts one "
              "direction for every input (the mean target) and cannot tell pairs apart, whatever its "
              "cosine. Half the targets' spread is a warning, a fifth is collapse."),
    Threshold("loss_divergence", "mean loss of the last LOSS_WINDOW batches ÷ the lowest such mean so far", "above",
              1.5, 3.0,
              "Noise moves the windowed mean by a few percent; 1.5× the best is a run going the wrong "
              "way, 3× is divergence."),
    Threshold("loss_flat", "relative change of the windowed mean loss over the last FLAT_WINDOW batches, "
              "plus twice its standard error from the two windows' batch-to-batch scatter", "below",
              0.01, 0.001,
              "Less than 1 % change over that many batches means training has stalled (or converged, if "
              "the loss is also low: the detail shows the loss). 0.1 % is a flat line. The scatter margin "
              "keeps two noisy windows that happen to agree from passing for a flat line."),
    Threshold("memorising", "largest gain of a held-out figure (cosine, top-1): its best over the last "
              "MEMORISING_WINDOW batches minus its best before them, judged while the training loss falls",
              "below", 0.001, None,
              "Held-out figures that set no new best for several evaluations while the training loss "
              "keeps falling are the mark of memorising (the debug preset on WordNet 3,000 does it after "
              "~750 batches). A gain of 0.001 is the line: less is rounding in the cosine, while one more "
              "pair ranked first (1/32 = 0.031 on the default sample of 32) already counts as still "
              "generalising. Only a warning: a run may also just have converged."),
    Threshold("learning_rate", "learning rate ÷ the config's initial learning rate", "below", 1e-2, 1e-3,
              "ReduceLROnPlateau halves the rate on every plateau and has no floor of its own. At 1 % of "
              "the initial rate the plateaus keep coming; at 0.1 % the optimiser barely moves."),
)

THRESHOLDS: dict[str, Threshold] = {t.check: t for t in _TABLE}

#: Batches of history the trend checks look at.
LOSS_WINDOW = 10
FLAT_WINDOW = 100
TREND_WINDOW = 10
#: The memorising check compares the held-out figures' best over the last MEMORISING_WINDOW
#: batches with their best before them (the monitor's history keeps FLAT_WINDOW + 2 × LOSS_WINDOW
#: = 120 batches, so 60 before); it needs MEMORISING_POINTS evaluations in the window (6 with the
#: default held_out_every = 10) and counts the windowed training loss as "still falling" when it
#: dropped by MEMORISING_LOSS_FALL over the window.
MEMORISING_WINDOW = 60
MEMORISING_POINTS = 3
MEMORISING_LOSS_FALL = 0.02
#: A border cell share above this leaves too little interior to tell pile-up from an even deposit.
MAX_BORDER_CELL_SHARE = 0.5
