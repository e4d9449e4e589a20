"""The declarations: one entry per figure, in the order every packed row and column list uses.

Why each field exists:

* ``trailing`` — the figure's shape after its leading axis (steps for a step figure, batches
  for a per-batch one), as a code :class:`Dims` resolves for one run (``"P"`` output planes,
  ``"B"`` histogram bins, ``"K"`` percentiles, ``"3"`` axes, ``"3K"``, ``"S"`` saturation heads,
  ``"M"`` model modules, ``"PHW"`` plane images, ``""`` a scalar). Packing, unpacking, the
  recording's dataset shapes and the merge all read it, so a shape is written once.
* ``merge`` — how the parts of one batch combine (:class:`Merge`). The trainer runs a batch as
  several forward passes (micro-batches) and, under torchrun, several ranks; every figure the
  app shows is the whole batch's, merged by this rule, never one part's.
* ``pad`` — what a part that ran fewer propagation steps contributes after its last step
  (:class:`Pad`): nothing happens to a finished batch, so its event counts are 0, its
  cumulative deposits hold, and its distributions have no flows.
* ``detailed`` — measured only when tracing is on (the counts are always measured: the
  trainer's flow statistics come from them).
* ``readers`` — who draws or judges it, for the map in docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from energy_flow.trace.telemetry import PERCENTILES, SATURATION_NAMES

#: The model's top-level parts, in the order of every per-module value (stored as [4] columns).
MODULES = ("input_mapper", "neuron", "carrier", "output_mapper")


class Merge(Enum):
    """How the parts (micro-batches, ranks) of one batch combine into the batch's figure."""

    #: Counts and energies: the batch's is the parts' sum.
    SUM = "sum"
    #: The smallest / largest over the parts (displacement ranges).
    MIN = "min"
    MAX = "max"
    #: A mean over samples (coverage is the mean over samples of the share of cells reached):
    #: the parts' values weighted by their sample counts — exact.
    SAMPLE_MEAN = "sample_mean"
    #: A share or mean over the flows stepped at step t (clamp, still, saturation): weighted by
    #: each part's flows stepped at t (:func:`~energy_flow.trace.figures.merge.step_weights`) —
    #: exact. For percentiles the same weighting is an approximation of the pooled percentile
    #: (exact for one part); the declarations that use it say so.
    FLOW_MEAN = "flow_mean"
    #: Computed for the whole batch before it is read (losses and gradient norms are reduced over
    #: micro-batches and ranks in the trainer; a setting such as the learning rate): every part
    #: holds the same value, the first is taken.
    WHOLE = "whole"
    #: Not mergeable from the parts' figures (a percentile of a union is no function of the
    #: parts' percentiles): recomputed from the parts' pooled per-step values, which the tracer
    #: keeps whenever a batch has several parts — exact
    #: (:func:`energy_flow.trace.batch_trace.merge_traces`).
    POOLED = "pooled"


class Pad(Enum):
    """A part's value after its last propagation step, when another part ran longer."""

    ZERO = "zero"   # per-step events and live counts: nothing happens any more
    HOLD = "hold"   # cumulative state (coverage, deposits so far): stays at its last value
    NAN = "nan"     # per-step distributions: no flow was stepped (weight 0 in FLOW_MEAN)


@dataclass(frozen=True)
class Dims:
    """The sizes trailing-shape codes resolve to for one run."""

    planes: int
    bins: int
    height: int = 0
    width: int = 0

    def shape(self, code: str) -> tuple[int, ...]:
        k = len(PERCENTILES)
        shapes = {"": (), "P": (self.planes,), "B": (self.bins,), "K": (k,), "3": (3,), "3K": (3, k),
                  "S": (len(SATURATION_NAMES),), "M": (len(MODULES),),
                  "PHW": (self.planes, self.height, self.width)}
        if code not in shapes:
            raise ValueError(f"unknown trailing-shape code {code!r} (one of {sorted(shapes)})")
        return shapes[code]


@dataclass(frozen=True)
class Figure:
    key: str
    meaning: str
    unit: str
    trailing: str
    dtype: str            # numpy dtype code of the stored/recorded values: "i8", "f4", "f8", ...
    merge: Merge
    recorded: bool = True
    readers: tuple[str, ...] = ()
    #: The recording schema version that introduced its dataset (older files lack it: the
    #: readers give None/NaN for it, never a stand-in value).
    since_schema: int = 1


@dataclass(frozen=True)
class StepFigure(Figure):
    """A per-step aggregate over all flows of a batch: [T+1, *trailing] (row 0: the placement)."""

    pad: Pad = Pad.ZERO
    detailed: bool = False
    #: May be absent (None) in a telemetry object: older recordings, other models' recorders.
    optional: bool = False
    #: The recording's dataset name under ``steps/`` (default: the key).
    column: str = ""

    @property
    def dataset(self) -> str:
        return f"steps/{self.column or self.key}"


@dataclass(frozen=True)
class BatchFigure(Figure):
    """A per-batch signal: one value (of shape ``trailing``) per training batch.

    Where the value comes from, in this order: ``measure(report)`` for a live TrainReport; in a
    recording, the ``batches/<key>`` column when ``recorded``, else the per-batch total
    (``from_step_total``) or step-0 value (``from_step_start``) of a scalar step figure; else it
    is NaN in a replay (never an invented value).
    """

    measure: Callable[[Any], Any] | None = field(default=None, compare=False)
    history: bool = True
    from_step_total: str = ""
    from_step_start: str = ""
    #: The value a recording stores for "unknown" in an integer column (read back as NaN).
    unknown: int | None = None


# ------------------------------------------------------------------------------ step figures
_FLOWS_STEPPED = "over the flows stepped at t"
_STEP_LIST = (
    StepFigure("active", "flows alive after step t (t = 0: placed on the start plane)", "flows", "", "i8",
               Merge.SUM, readers=("panel:spawn", "view", "check:flows")),
    StepFigure("spawn_requested", "children the spawn head asked for at step t", "flows", "", "i8", Merge.SUM,
               readers=("panel:spawn", "check:spawning")),
    StepFigure("spawn_granted", "children created at step t", "flows", "", "i8", Merge.SUM,
               readers=("panel:spawn", "check:spawning")),
    StepFigure("spawn_denied", "children requested at step t but refused by the flow budget", "flows", "",
               "i8", Merge.SUM, readers=("panel:spawn", "check:spawning")),
    StepFigure("faded", "flows whose energy fell below energy_threshold at step t", "flows", "", "i8",
               Merge.SUM, readers=("panel:spawn", "check:fading")),
    StepFigure("timed_out", "flows still alive when max_steps ran out", "flows", "", "i8", Merge.SUM,
               readers=("check:landing",)),
    StepFigure("active_energy", "energy still carried by live flows after step t", "energy", "", "f4",
               Merge.SUM, readers=("panel:energy", "check:energy")),
    StepFigure("landed", "flows that reached each output plane at step t", "flows", "P", "i8", Merge.SUM,
               readers=("panel:coverage", "check:landing")),
    StepFigure("coverage", "share of each plane's cells reached so far (mean over samples)",
               "share of cells", "P", "f4", Merge.SAMPLE_MEAN, pad=Pad.HOLD,
               readers=("panel:coverage", "view", "check:coverage")),
    StepFigure("deposited_energy", "energy deposited on each output plane so far, summed over the batch",
               "energy", "P", "f4", Merge.SUM, pad=Pad.HOLD, readers=("panel:energy", "check:energy")),
    StepFigure("energy_hist", f"histogram of the energies carried on {_FLOWS_STEPPED}", "flows", "B", "i8",
               Merge.SUM, detailed=True, readers=("panel:energy",)),
    StepFigure("energy_percentiles", f"percentiles {PERCENTILES} of the energies {_FLOWS_STEPPED}",
               "energy", "K", "f4", Merge.POOLED, pad=Pad.NAN, detailed=True, readers=("panel:energy",)),
    StepFigure("delta_min", "smallest Δx, Δy, Δz the displacement head asked for at step t",
               "normalised units", "3", "f4", Merge.MIN, pad=Pad.NAN, detailed=True,
               readers=("panel:displacement",)),
    StepFigure("delta_max", "largest Δx, Δy, Δz the displacement head asked for at step t",
               "normalised units", "3", "f4", Merge.MAX, pad=Pad.NAN, detailed=True,
               readers=("panel:displacement",)),
    StepFigure("delta_percentiles", f"percentiles {PERCENTILES} of Δx, Δy, Δz {_FLOWS_STEPPED}",
               "normalised units", "3K", "f4", Merge.POOLED, pad=Pad.NAN, detailed=True, readers=("panel:displacement",)),
    StepFigure("clamp_fraction", f"share of the flows stepped at t whose position was clamped to [-1, 1]",
               "share of flows", "", "f4", Merge.FLOW_MEAN, pad=Pad.NAN, detailed=True,
               readers=("panel:displacement", "check:clamping")),
    StepFigure("still_fraction", f"share of the flows stepped at t that did not move (|Δ| < STILL_EPSILON)",
               "share of flows", "", "f4", Merge.FLOW_MEAN, pad=Pad.NAN, detailed=True, optional=True,
               since_schema=2, readers=("check:motion",)),
    StepFigure("saturation", f"share of head outputs pinned at their limits {_FLOWS_STEPPED}, per head "
               f"{SATURATION_NAMES}", "share", "S", "f4", Merge.FLOW_MEAN, pad=Pad.NAN, detailed=True,
               optional=True, since_schema=2, readers=("check:saturation",)),
    StepFigure("plane_energy_steps", "energy deposited per plane cell up to step t, summed over the batch",
               "energy", "PHW", "f4", Merge.SUM, pad=Pad.HOLD, detailed=True, optional=True,
               column="plane_energy", since_schema=2, readers=("view", "panel:coverage")),
)


# ------------------------------------------------------------------------------ batch figures
def _flows(report: Any):
    return report.flow_stats


def _deposit_share(report: Any) -> list[float]:
    """Energy deposited on each plane by the end of the batch / energy placed (whole batch)."""
    tel = report.telemetry
    if tel is None:
        return [float("nan")] * len(report.flow_stats.landed)
    placed = float(tel.aggregates.active_energy[0])
    deposited = tel.aggregates.deposited_energy[-1].astype(float)
    return list(deposited / placed) if placed > 0 else [float("nan")] * len(deposited)


def _per_module(values: dict) -> list[float]:
    return [float(values.get(m, float("nan"))) for m in MODULES]


_BATCH_LIST = (
    BatchFigure("step", "optimisation steps taken so far, this batch's included (-1 in a file: unknown)",
                "batches", "", "i8", Merge.WHOLE, measure=lambda r: r.step, unknown=-1, readers=("panels", "check:trends")),
    BatchFigure("loss", "total loss of the batch (mse_weight·MSE + cosine_weight·(1 − cos) [+ contrastive])",
                "loss", "", "f8", Merge.WHOLE, measure=lambda r: r.loss, readers=("panel:training", "check:trends")),
    BatchFigure("mse", "mean squared error of outputs against targets", "loss", "", "f8", Merge.WHOLE,
                measure=lambda r: r.mse, readers=("panel:training",)),
    BatchFigure("cosine_loss", "mean 1 − cosine(output, target)", "loss", "", "f8", Merge.WHOLE,
                measure=lambda r: r.cosine_loss, readers=("panel:training",)),
    BatchFigure("learning_rate", "the optimiser's learning rate for the batch", "1", "", "f8", Merge.WHOLE,
                measure=lambda r: r.learning_rate, readers=("panel:training", "check:trends")),
    BatchFigure("landed_fraction", "share of the batch's flows (placed + spawned) that reached an output plane",
                "share of flows", "", "f8", Merge.WHOLE, measure=lambda r: _flows(r).landed_fraction,
                readers=("panel:training",)),
    BatchFigure("batches_per_second", "training batches per second, measured by the app's worker",
                "batches/s", "", "f8", Merge.WHOLE, recorded=False, readers=("panel:training", "status bar")),
    BatchFigure("spawn_requested", "children asked for in the batch", "flows", "", "i8", Merge.SUM,
                recorded=False, measure=lambda r: _flows(r).requested, from_step_total="spawn_requested",
                readers=("panel:spawn",)),
    BatchFigure("spawn_granted", "children created in the batch", "flows", "", "i8", Merge.SUM, recorded=False,
                measure=lambda r: _flows(r).spawned, from_step_total="spawn_granted", readers=("panel:spawn",)),
    BatchFigure("spawn_denied", "children refused by the flow budget in the batch", "flows", "", "i8", Merge.SUM,
                recorded=False, measure=lambda r: _flows(r).denied, from_step_total="spawn_denied",
                readers=("panel:spawn",)),
    BatchFigure("placed", "flows placed on the start plane in the batch", "flows", "", "i8", Merge.SUM,
                recorded=False, measure=lambda r: _flows(r).initial_flows, from_step_start="active",
                readers=("panel:spawn",)),
    BatchFigure("deposit_share", "share of the energy placed on the start plane that the batch deposited on "
                "each output plane (NaN: tracing off)", "share of placed energy", "P", "f8", Merge.WHOLE,
                measure=lambda r: _deposit_share(r), since_schema=3, readers=("panel:energy",)),
    BatchFigure("held_out_cosine", "mean cosine(output, own target) on the run's fixed held-out sample, in eval "
                "mode (NaN: not evaluated at this batch; every held_out_every batches)", "cosine", "", "f8",
                Merge.WHOLE, measure=lambda r: r.held_out_cosine, since_schema=4,
                readers=("panel:training", "check:memorising")),
    BatchFigure("held_out_top1", "share of the held-out sample whose output ranks its own target first among "
                "the sample's targets (NaN: not evaluated at this batch)", "share of pairs", "", "f8",
                Merge.WHOLE, measure=lambda r: r.held_out_top1, since_schema=4,
                readers=("panel:training", "check:memorising")),
    BatchFigure("grad_norm", "total gradient norm before clipping", "1", "", "f8", Merge.WHOLE,
                measure=lambda r: r.grad_norm, since_schema=2, readers=("panel:diagnostics", "check:gradients")),
    BatchFigure("grad_clip", "the clip level of the total gradient norm", "1", "", "f8", Merge.WHOLE,
                measure=lambda r: r.grad_clip, since_schema=2, readers=("panel:diagnostics",)),
    BatchFigure("grad_norms", "gradient norm per module before clipping", "1", "M", "f8", Merge.WHOLE,
                measure=lambda r: _per_module(r.grad_norms), since_schema=2,
                readers=("panel:diagnostics", "check:gradients")),
    BatchFigure("update_ratios", "‖θ_after − θ_before‖ / ‖θ_before‖ per module (NaN: update skipped)", "1", "M",
                "f8", Merge.WHOLE, measure=lambda r: _per_module(r.update_ratios), since_schema=2,
                readers=("panel:diagnostics", "check:updates")),
    BatchFigure("weight_norms", "‖θ‖ per module after the step", "1", "M", "f8", Merge.WHOLE, history=False,
                measure=lambda r: _per_module(r.weight_norms), since_schema=2, readers=("check:updates",)),
    BatchFigure("output_spread", "1 − mean off-diagonal cosine of the batch's outputs (all parts)", "1", "",
                "f8", Merge.WHOLE, measure=lambda r: r.output_spread, since_schema=2,
                readers=("panel:diagnostics", "check:collapse")),
    BatchFigure("target_spread", "the same over the batch's targets", "1", "", "f8", Merge.WHOLE,
                measure=lambda r: r.target_spread, since_schema=2, readers=("panel:diagnostics", "check:collapse")),
    BatchFigure("skipped", "1 when the update was skipped (non-finite loss or gradient)", "flag", "", "i1",
                Merge.WHOLE, history=False, measure=lambda r: bool(r.skipped), since_schema=2, unknown=-1,
                readers=("check:finite",)),
    BatchFigure("nonfinite", "what was non-finite, named (UTF-8; empty: nothing or unknown)", "text", "",
                "S256", Merge.WHOLE, history=False, measure=lambda r: r.nonfinite, since_schema=2,
                readers=("check:finite", "banner")),
    BatchFigure("params_without_grad_count", "trainable parameters whose gradient was None or all zero",
                "parameters", "", "i4", Merge.WHOLE, history=False,
                measure=lambda r: len(r.params_without_grad), since_schema=2, unknown=-1,
                readers=("check:gradients",)),
    BatchFigure("params_without_grad", "their names, comma-separated (UTF-8)", "text", "", "S2048",
                Merge.WHOLE, history=False, measure=lambda r: tuple(r.params_without_grad), since_schema=2,
                readers=("check:gradients",)),
)


class _Namespace:
    """Attribute access to declarations (``STEP.spawn_granted``); unknown names raise."""

    def __init__(self, figures: tuple[Figure, ...]):
        self._figures = {f.key: f for f in figures}
        if len(self._figures) != len(figures):
            raise ValueError("duplicate figure key")

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_figures"][name]
        except KeyError:
            raise AttributeError(f"no figure {name!r} is declared") from None

    def __iter__(self):
        return iter(self._figures.values())

    def __contains__(self, key: str) -> bool:
        return key in self._figures

    def __getitem__(self, key: str) -> Any:
        return self._figures[key]

    def keys(self) -> tuple[str, ...]:
        return tuple(self._figures)


STEP = _Namespace(_STEP_LIST)
BATCH = _Namespace(_BATCH_LIST)


def step_figures(detailed: bool = True) -> tuple[StepFigure, ...]:
    """Step figures in packing order: the always-measured counts first, then (``detailed``) the rest."""
    counts = tuple(f for f in _STEP_LIST if not f.detailed)
    return counts + (tuple(f for f in _STEP_LIST if f.detailed) if detailed else ())


def batch_figures() -> tuple[BatchFigure, ...]:
    return _BATCH_LIST


def history_figures() -> tuple[BatchFigure, ...]:
    """Per-batch figures kept in the run's history (drawn over the run)."""
    return tuple(f for f in _BATCH_LIST if f.history)


def recorded_batch_figures() -> tuple[BatchFigure, ...]:
    """Per-batch figures stored as ``batches/<key>`` columns of a recording."""
    return tuple(f for f in _BATCH_LIST if f.recorded)
