"""A cheap held-out evaluation to run every N batches while training: is the model still learning
what generalises, and where does it stand against the best simple predictor?

The sample is small and fixed (the same pairs every time, so two points differ only by the
model), scored in eval mode with no random draws (the run trains exactly as it would without
it). The best simple predictor per figure is fitted once, on the train pairs only
(:mod:`energy_flow.training.simple_predictors`), and scored on the same sample: the reference
lines a curve of held-out figures is read against. Qt-free: the app's worker, the headless
trainer and a benchmark call it alike.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from energy_flow.trace.figures import BATCH
from energy_flow.training.data import PairDataset
from energy_flow.training.metrics import bridge_for, score
from energy_flow.training.report import TrainReport
from energy_flow.training.simple_predictors import (Predictor, best_simple, fit_simple_predictors,
                                                    score_simple)

#: Held-out pairs scored per point when a caller gives no size (``EnergyConfig.held_out_sample``
#: is what a run uses): retrieval among 256 targets separates a top-1 of 0.38 from 0.44 by 15 pairs.
DEFAULT_SAMPLE = 256
#: The share of the data a run holds out, and the fewest pairs a run splits at all (below it the
#: headless run and the app train on every pair and evaluate nothing held out).
VAL_FRACTION = 0.1
MIN_PAIRS_TO_SPLIT = 10
#: Folds of the simple predictors' cross-validation (their fit needs 2 × this many train pairs).
FOLDS = 5
#: The figure each held-out declaration carries, by the evaluator's figure name.
FIGURES = {"mean_cosine": BATCH.held_out_cosine, "top1": BATCH.held_out_top1}
#: The evaluator's figure name of each declared figure, and the words a line or legend uses.
FIGURE_OF = {figure.key: name for name, figure in FIGURES.items()}
SHORT_NAMES = {BATCH.held_out_cosine.key: "held-out cosine", BATCH.held_out_top1.key: "held-out top-1"}


@dataclass(frozen=True)
class HeldOutPoint:
    """The model's held-out figures after ``batch`` batches, on the fixed sample."""

    batch: int
    mean_cosine: float
    top1: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class HeldOutEvaluator:
    """Scores a predictor on a fixed held-out sample; holds the best simple references.

    Construct it once per run, off the GUI thread: fitting the simple predictors cross-validates
    150 ridge fits on the train split (5.3 s of CPU at 2,700 pairs of D = 384, one thread,
    measured 2026-12-07 on the shared build machine).
    """

    def __init__(self, train: PairDataset, held_out: PairDataset, sample: int = DEFAULT_SAMPLE,
                 seed: int = 0) -> None:
        if len(held_out) < 2:
            raise ValueError(f"HeldOutEvaluator: the held-out split has {len(held_out)} pair(s); "
                             "retrieval needs at least 2")
        perm = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed + 3))
        self.sample = held_out.subset(perm[: min(sample, len(held_out))].sort().values,
                                      f"held-out sample of {min(sample, len(held_out))}")
        self._bridge = bridge_for(self.sample)
        simple, _ = fit_simple_predictors(train, seed, FOLDS)
        best = best_simple({p.label(): score_simple(p, self.sample, self._bridge) for p in simple})
        #: figure → (value on the sample, the simple predictor that reached it)
        self.references = {f: (best.values[f], best.names[f]) for f in ("mean_cosine", "top1")}

    def __call__(self, predict: Predictor, batch: int) -> HeldOutPoint:
        scores = score(predict(self.sample.inputs), self.sample, self._bridge)
        return HeldOutPoint(batch, scores.mean_cosine, scores.top1)


def split_rows(dataset: PairDataset, seed: int, val_fraction: float = VAL_FRACTION
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows a run trains on and the rows it holds out (None: too few pairs to split, then it
    trains on all of them): :meth:`PairDataset.split_indices` with the run's seed, as the headless
    run, ``energy_flow.evaluate`` and the app split."""
    if len(dataset) < MIN_PAIRS_TO_SPLIT:
        return torch.arange(len(dataset), dtype=torch.int64), None
    return dataset.split_indices(val_fraction, seed)


def schedule_for(dataset: PairDataset, seed: int, every: int, sample: int
                 ) -> tuple[torch.Tensor, "HeldOutSchedule"]:
    """The rows a run on ``dataset`` trains on, and its held-out evaluation on the other rows."""
    train_rows, held_rows = split_rows(dataset, seed)
    train = dataset.subset(train_rows, "train split")
    held = None if held_rows is None else dataset.subset(held_rows, "held-out split")
    return train_rows, HeldOutSchedule.for_run(train, held, every, sample, seed)


def untraced_predict(trainer: Any) -> Predictor:
    """``trainer.predict`` with the tracer's telemetry off (an evaluation reads only the outputs)
    and the model's train/eval mode left as it was."""
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        processor = trainer.processor
        traced, training = processor.trace_enabled, processor.training
        processor.trace_enabled = False
        try:
            return trainer.predict(inputs)
        finally:
            processor.trace_enabled = traced
            processor.train(training)
    return predict


class HeldOutSchedule:
    """A run's held-out evaluation: which batches (every ``held_out_every``), on what sample, and
    the report of an evaluated batch with its figures filled in.

    Built once per run from the train and held-out splits and the config; when there is nothing
    to evaluate (``held_out_every = 0``, no held-out split, too few train pairs for the simple
    predictors) :attr:`off` says why, and every report passes through unchanged (its held-out
    figures NaN), so nothing pretends to have been measured.
    """

    def __init__(self, evaluator: HeldOutEvaluator | None, every: int, off: str = "",
                 held_out_pairs: int = 0) -> None:
        if evaluator is not None and every < 1:
            raise ValueError(f"HeldOutSchedule: every must be ≥ 1 with an evaluator, got {every}")
        self.evaluator = evaluator
        self.every = every if evaluator is not None else 0
        self.off = off if evaluator is None else ""
        self.held_out_pairs = held_out_pairs
        #: Seconds spent in evaluations so far, and how many ran (the cost the run reports).
        self.seconds = 0.0
        self.evaluations = 0

    @classmethod
    def for_run(cls, train: PairDataset, held_out: PairDataset | None, every: int, sample: int,
                seed: int) -> "HeldOutSchedule":
        if every == 0:
            return cls(None, 0, "held_out_every = 0")
        if held_out is None or len(held_out) < 2:
            n = 0 if held_out is None else len(held_out)
            return cls(None, every, f"the held-out split has {n} pair(s) (data of "
                                    f"{len(train) + n} pairs); it needs ≥ 2, so data of ≥ "
                                    f"{max(MIN_PAIRS_TO_SPLIT, round(2 / VAL_FRACTION))} pairs", n)
        if len(train) < 2 * FOLDS:
            return cls(None, every, f"{len(train)} train pairs; the simple predictors' "
                                    f"{FOLDS}-fold fit needs ≥ {2 * FOLDS}", len(held_out))
        return cls(HeldOutEvaluator(train, held_out, sample, seed), every, held_out_pairs=len(held_out))

    def due(self, step: int) -> bool:
        return self.evaluator is not None and step % self.every == 0

    def after(self, trainer: Any, report: TrainReport) -> TrainReport:
        """``report`` with the held-out figures of ``trainer``'s model filled in when its batch is
        due (and the seconds it took in ``timings["held_out"]``); otherwise ``report`` itself."""
        if not self.due(report.step):
            return report
        assert self.evaluator is not None
        t0 = time.perf_counter()
        point = self.evaluator(untraced_predict(trainer), report.step)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.evaluations += 1
        return dataclasses.replace(report, held_out_cosine=point.mean_cosine, held_out_top1=point.top1,
                                   timings={**report.timings, "held_out": seconds})

    def describe(self) -> str:
        """One line: what is evaluated, or why nothing is."""
        if self.evaluator is None:
            return f"held-out evaluation off: {self.off}"
        refs = "; ".join(f"{SHORT_NAMES[FIGURES[f].key]} {v:.3f} ({name.split(' (')[0]})"
                         for f, (v, name) in self.evaluator.references.items())
        return (f"held-out evaluation every {self.every} batches on {len(self.evaluator.sample)} of the "
                f"{self.held_out_pairs} held-out pairs; best simple predictor on them: {refs}")

    def to_dict(self) -> dict[str, Any]:
        """What a recording's provenance and the headless summary carry: the setup and the best
        simple references per declared figure (what the Training panel draws as lines)."""
        if self.evaluator is None:
            return {"every": 0, "off": self.off}
        return {"every": self.every, "sample": len(self.evaluator.sample), "held_out_pairs": self.held_out_pairs,
                "references": {FIGURES[f].key: {"value": v, "predictor": name}
                               for f, (v, name) in self.evaluator.references.items()}}


def recorded_held_out(provenance: Any) -> dict[str, Any] | None:
    """The held-out setup a recording's provenance carries (:meth:`HeldOutSchedule.to_dict`);
    None for a recording without one (older files, other models' recorders)."""
    info = provenance.get("held_out") if isinstance(provenance, dict) else None
    return info if isinstance(info, dict) else None


def references_of(info: dict[str, Any] | None) -> dict[str, tuple[float, str]]:
    """Declared figure key → (the best simple predictor's value on the held-out sample, its short
    name), from :meth:`HeldOutSchedule.to_dict` or a recording's copy; only well-formed entries
    (a damaged or missing one is left out, never made up)."""
    out: dict[str, tuple[float, str]] = {}
    refs = (info or {}).get("references")
    if not isinstance(refs, dict):
        return out
    for figure in FIGURES.values():
        entry = refs.get(figure.key)
        if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)) \
                and isinstance(entry.get("predictor"), str):
            out[figure.key] = (float(entry["value"]), entry["predictor"].split(" (")[0])
    return out
