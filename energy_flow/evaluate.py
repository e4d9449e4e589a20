"""Held-out evaluation: the model beside the baselines, on one split, in one table.

    python -m energy_flow.evaluate --data wordnet:3000 --preset debug --minutes 15
    python -m energy_flow.evaluate --checkpoint runs/debug.pt --data wordnet:3000
    python -m energy_flow.evaluate --data wordnet:3000 --batches 1200 --curve 150

Trains a model on the train split (or loads ``--checkpoint``), fits the simple predictors on the
same train split (mean target, identity, ridge → 0 and ridge → identity with λ cross-validated
on train for each figure: :mod:`energy_flow.training.simple_predictors`), and scores every
predictor on the held-out split with :func:`energy_flow.training.metrics.score`: mean cosine,
top-1, top-5 and mean reciprocal rank of the own target among the split's targets, and output
spread next to the targets' spread. A *best simple* row holds, per figure, the best of the
simple predictors; the model's figures are marked ▲ where they beat it and ▼ where they do not,
and one line says so in words: no learning claim stands on a weaker baseline.
Train-split figures are scored on a sample of train pairs as large as the held-out split, so
both retrievals choose among as many targets. The split, seed and sizes are printed.
``--set FIELD=VALUE`` overrides any config field (this is how ablations are run). ``--curve N``
also scores the model every N batches while it trains (a learning curve on both splits; scoring
runs in eval mode and draws no random numbers, so the run trains exactly as it would without it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from energy_flow.files.atomic import write_bytes_atomic
from energy_flow.runtime.broken_pipe import run_cli
from energy_flow.runtime.cli_errors import OneLineParser, fails_by_name
from energy_flow.config import EnergyConfig, create_preset, parse_overrides
from energy_flow.runtime.device import describe_device
from energy_flow.runtime.extras import exit_on_missing_extra
from energy_flow.files.output_paths import check_distinct, check_output_path
from energy_flow.training import baselines
from energy_flow.training.checkpoint import read_checkpoint
from energy_flow.training.checkpoint_integrity import refuse_to_replace_non_checkpoint
from energy_flow.training.data import PairDataset
from energy_flow.training.metrics import SplitScores, bridge_for, score, spread
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.simple_predictors import (FIGURES, BestSimple, SimplePredictor, best_simple,
                                                    fit_simple_predictors, score_simple, verdict_line,
                                                    verdicts)
from energy_flow.training.trainer import EnergyTrainer, build_model

PROG = "python -m energy_flow.evaluate"
MODEL_ROW = "energy flow"
BEST_SIMPLE_ROW = "best simple (per figure)"


@dataclass(frozen=True)
class TrainingRun:
    """What the training phase did (zero steps when a checkpoint was only evaluated)."""

    steps: int
    seconds: float
    first_loss: float | None
    last_loss: float | None   # mean of the last 10 steps


def train_sample(train: PairDataset, size: int, seed: int) -> PairDataset:
    """``size`` train pairs drawn with ``seed``: train figures on as many targets as held-out ones."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 2))
    return train.subset(perm[: min(size, len(train))].sort().values, f"sample of {min(size, len(train))}")


def train_model(trainer: EnergyTrainer, train: PairDataset, batches: int, minutes: float | None,
                progress: bool, out=None, every: int = 0,
                on_every: Callable[[int], None] | None = None) -> TrainingRun:
    """Up to ``batches`` steps, stopping early once ``minutes`` have passed (checked per chunk);
    ``on_every(step)`` after every ``every`` steps (``every`` > 0)."""
    out = out or sys.stdout
    sampler = BatchSampler(len(train), trainer.config.batch_size, trainer.config.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    chunk = 25
    while len(losses) < batches:
        if every > 0:
            chunk = min(25, every - trainer.step_count % every)
        if minutes is not None and time.perf_counter() - t0 >= minutes * 60:
            print(f"time budget of {minutes:g} min reached after {len(losses)} batches", file=out)
            break
        hist = trainer.run_steps(train.inputs, train.targets, sampler, min(chunk, batches - len(losses)),
                                 progress=False)
        losses.extend(hist.loss)
        if hist.skipped:
            raise RuntimeError(f"training hit a non-finite loss or gradient ({hist.skipped} skipped "
                               f"steps by batch {trainer.step_count}); figures would be meaningless")
        if progress:
            elapsed = time.perf_counter() - t0
            print(f"  batch {trainer.step_count:5d}  loss {np.mean(hist.loss):.4f}  "
                  f"{elapsed / len(losses):.2f} s/batch  {elapsed:.0f} s", file=out, flush=True)
        if every > 0 and on_every is not None and trainer.step_count % every == 0:
            on_every(trainer.step_count)
    seconds = time.perf_counter() - t0
    return TrainingRun(len(losses), seconds, losses[0] if losses else None,
                       float(np.mean(losses[-10:])) if losses else None)


def plane_diagnostics(trainer: EnergyTrainer, split: PairDataset) -> dict[str, float]:
    """Where the deposits of one held-out batch go: the share of deposited energy on edge
    cells (a uniform deposit puts 2(W+H−2)/(W·H) there), landed share and coverage."""
    processor = trainer.processor
    saved = processor.trace_enabled
    processor.trace_enabled = True
    try:
        with torch.no_grad():
            processor.eval()
            x = split.inputs[: trainer.config.batch_size].to(trainer.device)
            result = processor(x)
    finally:
        processor.trace_enabled = saved
    energy = result.telemetry.plane_energy  # [P, H, W]
    edge = np.zeros(energy.shape[1:], dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    total = float(energy.sum())
    h, w = edge.shape
    return {
        "edge_energy_share": float(energy[:, edge].sum()) / total if total > 0 else float("nan"),
        "edge_cell_share": float(edge.sum()) / (h * w),
        "landed_fraction": result.flow_stats.landed_fraction,
        "coverage": float(np.mean(result.flow_stats.coverage)),
    }


def plane_features(trainer: EnergyTrainer, inputs: torch.Tensor) -> torch.Tensor:
    """What the output mapper's projection reads: the pooled output planes, ``[N, P·(E+1)·g²]``."""
    captured: list[torch.Tensor] = []
    hook = trainer.processor.output_mapper.register_forward_hook(
        lambda module, args, output: captured.append(module.features(*args).detach().float().cpu()))
    try:
        trainer.predict(inputs)
    finally:
        hook.remove()
    return torch.cat(captured)


def deposit_probe(trainer: EnergyTrainer, train: PairDataset, size: int, seed: int) -> Callable:
    """A ridge map fitted from the pooled output planes of ``size`` train pairs to their targets.

    If this probe reaches the linear baseline while the model does not, the information is on
    the output planes and the loss or the output mapper's training is at fault; if the probe is
    poor too, the lattice loses the input before the deposits.
    """
    probe_set = train_sample(train, size, seed + 7)
    fit = baselines.least_squares(plane_features(trainer, probe_set.inputs), probe_set.targets, seed=seed)
    return lambda inputs: fit.predict(plane_features(trainer, inputs))


class SplitScorer:
    """Scores a predictor on the train sample and the held-out split (each among its own targets)."""

    def __init__(self, train_eval: PairDataset, val: PairDataset) -> None:
        self.splits = {"train": train_eval, "validation": val}
        self.bridges = {name: bridge_for(split) for name, split in self.splits.items()}

    def __call__(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, SplitScores]:
        return {name: score(predict(split.inputs), split, self.bridges[name])
                for name, split in self.splits.items()}

    def simple(self, predictor: SimplePredictor) -> dict[str, SplitScores]:
        """A simple predictor's scores, each figure from the fit chosen for that figure."""
        return {name: score_simple(predictor, split, self.bridges[name])
                for name, split in self.splits.items()}


def evaluate_predictors(predictors: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                        train_eval: PairDataset, val: PairDataset) -> dict[str, dict[str, SplitScores]]:
    """Score every predictor on the train sample and the held-out split."""
    scorer = SplitScorer(train_eval, val)
    return {name: scorer(predict) for name, predict in predictors.items()}


def best_simple_by_split(simple_rows: dict[str, dict[str, SplitScores]]) -> dict[str, BestSimple]:
    """Per split, the column-wise best of the simple predictors."""
    splits = next(iter(simple_rows.values())).keys()
    return {split: best_simple({name: by[split] for name, by in simple_rows.items()}) for split in splits}


def _cell(value: float, best: float | None) -> str:
    """A figure, marked ▲ where it beats the best simple predictor and ▼ where it does not."""
    return f"{value:.3f}" if best is None else f"{value:.3f} {'▲' if value > best else '▼'}"


def format_table(simple_rows: dict[str, dict[str, SplitScores]], model_rows: dict[str, dict[str, SplitScores]],
                 best: dict[str, BestSimple], target_spread: float, n_val: int) -> str:
    """The simple predictors, the best simple row, then the model (and probe) rows, whose every
    figure carries ▲ where it beats the best simple predictor and ▼ where it does not."""
    lines = [f"| predictor | val cosine | val top-1 | val top-5 | val MRR | val spread "
             f"(targets {target_spread:.3f}) | train cosine | train top-1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    bv, bt = best["validation"], best["train"]
    for rows, marked in ((simple_rows, False), (model_rows, True)):
        for name, by_split in rows.items():
            v, t = by_split["validation"], by_split["train"]
            cells = [_cell(getattr(v, f), bv.values[f] if marked else None) for f in FIGURES]
            lines.append(f"| {name} | {' | '.join(cells)} | {v.spread:.3f} | "
                         f"{_cell(t.mean_cosine, bt.values['mean_cosine'] if marked else None)} | "
                         f"{_cell(t.top1, bt.values['top1'] if marked else None)} |")
        if not marked:
            lines.append(f"| **{BEST_SIMPLE_ROW}** | " + " | ".join(f"{bv.values[f]:.3f}" for f in FIGURES)
                         + f" | — | {bt.values['mean_cosine']:.3f} | {bt.values['top1']:.3f} |")
    lines.append(f"(retrieval among the {n_val} held-out targets; train figures on a sample of as many "
                 "train pairs, among their own targets; best simple = the best of the rows above it, "
                 "per column; ▲ beats it, ▼ does not)")
    lines.append("best simple per held-out figure: " + ", ".join(
        f"{f} {bv.values[f]:.3f} ({bv.names[f].split(' (')[0]})" for f in FIGURES))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="dataset name (wordnet, wordnet:N), pairs file or "
                   "embeddings file; default: the bundled corpus")
    p.add_argument("--teacher", metavar="DIR", help="a local sentence-transformers model directory")
    p.add_argument("--preset", default="debug")
    p.add_argument("--config", metavar="FILE", help="a config file; overrides --preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (repeatable), e.g. --set loss=contrastive")
    p.add_argument("--seed", type=int, default=None, help="split, initial weights and batch order")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--batches", type=int, default=None, help="training batches (default 300; 0 with "
                   "--checkpoint)")
    p.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--checkpoint", metavar="PATH", help="load this checkpoint (its config) first")
    p.add_argument("--save-checkpoint", metavar="PATH", help="write the trained model here")
    p.add_argument("--json", metavar="PATH", help="write every figure here too")
    p.add_argument("--probe", type=int, default=0, metavar="N", help="also fit a ridge probe on the "
                   "pooled output planes of N train pairs (where is information lost?)")
    p.add_argument("--curve", type=int, default=0, metavar="N", help="also score the model on both "
                   "splits every N batches while it trains (a learning curve; printed and in --json)")
    p.add_argument("--quiet", action="store_true", help="no per-chunk training lines")
    return p


def check_paths(args: argparse.Namespace) -> None:
    """Every output checked before any work: distinct from the inputs and from each other (the
    checkpoint read may be written back), in a folder that takes files, and ``--save-checkpoint``
    never replacing a file that is not a checkpoint."""
    check_distinct({"--config": args.config, "--checkpoint": args.checkpoint, "--data": args.data,
                    "--json": args.json, "--save-checkpoint": args.save_checkpoint},
                   allowed=frozenset({frozenset(("--save-checkpoint", "--checkpoint")),   # inputs may share
                                      *(frozenset(p) for p in (("--config", "--checkpoint"), ("--config", "--data"),
                                                               ("--checkpoint", "--data")))}))
    for what, path in (("--json", args.json), ("--save-checkpoint", args.save_checkpoint)):
        if path:
            check_output_path(path, what)
    if args.save_checkpoint:
        refuse_to_replace_non_checkpoint(args.save_checkpoint, "--save-checkpoint")


def _config(args: argparse.Namespace) -> EnergyConfig:
    if args.checkpoint:
        cfg = EnergyConfig.from_dict(read_checkpoint(args.checkpoint)["config"], source=args.checkpoint)
    elif args.config:
        cfg = EnergyConfig.load(args.config)
    else:
        cfg = create_preset(args.preset)
    changes = parse_overrides(args.overrides)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.device is not None:
        changes["device"] = args.device
    changes.setdefault("trace_enabled", False)  # telemetry costs time and figures need none
    return cfg.replace(**changes)


def main(argv: Sequence[str] | None = None, out=None) -> int:
    from energy_flow.headless import load_data

    out = out or sys.stdout

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.curve < 0:
        parser.error(f"argument --curve: must be ≥ 0 batches, got {args.curve}")
    if args.threads:
        torch.set_num_threads(args.threads)
    check_paths(args)
    cfg = _config(args)
    t0 = time.perf_counter()
    data = load_data(cfg, args.data, args.teacher)
    load_seconds = time.perf_counter() - t0
    if data.dim != cfg.teacher_dim:
        cfg = cfg.replace(teacher_dim=data.dim)
    train, val = data.split(args.val_fraction, seed=cfg.seed)
    train_eval = train_sample(train, len(val), cfg.seed)
    prov = data.provenance
    print(f"data: {prov.source}; teacher {prov.teacher}; {len(data)} pairs loaded in {load_seconds:.1f} s",
          file=out)
    print(f"split: seed {cfg.seed}, validation fraction {args.val_fraction:g} → {len(train)} train / "
          f"{len(val)} validation pairs; train figures on {len(train_eval)} train pairs", file=out)

    trainer = EnergyTrainer(build_model(cfg), cfg)
    trainer.provenance = prov
    if args.checkpoint:
        trainer.load_checkpoint(args.checkpoint)
        print(f"loaded {args.checkpoint} at step {trainer.step_count}", file=out)
    batches = args.batches if args.batches is not None else (0 if args.checkpoint else 300)
    print(f"model: preset {args.preset if not (args.config or args.checkpoint) else 'from file'}, "
          f"loss {cfg.loss}, lr {cfg.learning_rate:g}, batch {cfg.batch_size}; device "
          f"{describe_device(trainer.device)}, {torch.get_num_threads()} torch threads", file=out)
    curve: list[dict] = []
    scorer = SplitScorer(train_eval, val)

    def curve_point(step: int) -> None:
        point = scorer(trainer.predict)
        v, t = point["validation"], point["train"]
        print(f"curve: batch {step}: val cosine {v.mean_cosine:.3f}, top-1 {v.top1:.3f}, spread "
              f"{v.spread:.3f}; train cosine {t.mean_cosine:.3f}, top-1 {t.top1:.3f}", file=out, flush=True)
        curve.append({"batch": step, **{k: s.to_dict() for k, s in point.items()}})

    run = train_model(trainer, train, batches, args.minutes, not args.quiet, out, args.curve, curve_point)
    if args.save_checkpoint:
        trainer.save_checkpoint(args.save_checkpoint, extra={"provenance": prov.to_dict()})

    t1 = time.perf_counter()
    simple, cvs = fit_simple_predictors(train, seed=cfg.seed)
    simple_rows = {p.label(): scorer.simple(p) for p in simple}
    best = best_simple_by_split(simple_rows)
    model_name = f"{MODEL_ROW}, {trainer.step_count} batches"
    model_predictors = {model_name: trainer.predict}
    if args.probe:
        model_predictors["ridge probe on the model's pooled output planes"] = deposit_probe(
            trainer, train, args.probe, cfg.seed)
    model_rows = evaluate_predictors(model_predictors, train_eval, val)
    verdict = verdicts(model_rows[model_name]["validation"], best["validation"])
    diag = plane_diagnostics(trainer, val)
    eval_seconds = time.perf_counter() - t1

    target_spread = spread(val.targets)
    trained = (f"trained {run.steps} batches in {run.seconds:.0f} s ({run.seconds / run.steps:.2f} s/batch), "
               f"loss {run.first_loss:.3f} → {run.last_loss:.3f} (mean of last 10)") if run.steps else "not trained"
    print(f"\n# {time.strftime('%Y-%m-%d')}, seed {cfg.seed}; {trained}; evaluation {eval_seconds:.0f} s", file=out)
    print(format_table(simple_rows, model_rows, best, target_spread, len(val)), file=out)
    print(f"held-out, the model against the best simple predictor: {verdict_line(verdict)}", file=out)
    print(f"deposits (one held-out batch): {diag['edge_energy_share']:.1%} of the energy on edge cells "
          f"({diag['edge_cell_share']:.1%} of the cells), landed {diag['landed_fraction']:.2f}, "
          f"coverage {diag['coverage']:.2f}", file=out)
    if args.json:
        write_bytes_atomic(args.json, (json.dumps({
            "config": cfg.to_dict(), "provenance": prov.to_dict(), "seed": cfg.seed,
            "sizes": {"train": len(train), "validation": len(val), "train_eval": len(train_eval)},
            "training": run.__dict__, "target_spread": target_spread,
            "rows": {name: {k: s.to_dict() for k, s in by.items()}
                     for name, by in {**simple_rows, **model_rows}.items()},
            "best_simple": {split: b.to_dict() for split, b in best.items()},
            "model_vs_best_simple": verdict,
            "cross_validation": {prior: cv.to_dict() for prior, cv in cvs.items()},
            "diagnostics": diag, "device": str(trainer.device), "threads": torch.get_num_threads(),
            "curve": curve,
        }, indent=1) + "\n").encode("utf-8"), "JSON")   # a failed write keeps the old file whole
    return 0


def cli(prog: str = "energy-flow-evaluate") -> int | str | None:
    """The ``energy-flow-evaluate`` command (pyproject.toml's ``[project.scripts]``): texts need
    the ``[teacher]`` extra, and its absence ends the command in one line."""
    return run_cli(lambda: exit_on_missing_extra(prog, lambda: fails_by_name(prog, main)))


if __name__ == "__main__":
    sys.exit(cli(PROG))
