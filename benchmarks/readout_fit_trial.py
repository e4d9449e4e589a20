"""Does a closed-form readout, or a data-dependent one, speed the debug preset to the best simple
cosine within 15 minutes? (issue 30, item 5; results in docs/BENCHMARKS.md, "third pass").

One run: the debug preset (with ``--set`` overrides) on one split, scored on the held-out split
and a train sample of the same size at the start, after the readout is set, every ``--every``
batches while it trains, and at the end. ``--start`` sets the readout before any batch:

- ``none``: as the preset builds it;
- ``bias``: the readout's bias at the mean train target (a data-dependent init: the mean
  target is the best constant predictor; ridge → 0 adds a shrunk map to it);
- ``fit``: the projection in closed form from the pooled output planes of every train pair:
  ridge shrunk toward the model's own readout (λ → ∞ keeps it), λ by 5-fold cross-validation on
  the train split for mean cosine (as the simple predictors pick theirs), solved in the dual
  form (7,200 features, 2,700 pairs).

``--refit-minutes M`` stops training M minutes before ``--minutes`` and refits the projection the
same way on the trained planes (the bias kept). Only train pairs reach any fit.

    .venv/bin/python benchmarks/readout_fit_trial.py --seed 0 --start fit
    .venv/bin/python benchmarks/readout_fit_trial.py --seed 0 --start bias --set loss=mse_cosine --set readout_dropout=0.3
    .venv/bin/python benchmarks/readout_fit_trial.py --seed 1 --start none --refit-minutes 3 --every 100 \\
        --set loss=mse_cosine --set readout_dropout=0.3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plane_probe import capture  # noqa: E402
from benchmarks.plane_screen import LAMBDAS, KernelRidge, gram_of  # noqa: E402
from energy_flow.config import create_preset, parse_overrides  # noqa: E402
from energy_flow.evaluate import SplitScorer, train_model, train_sample  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training.data import PairDataset  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer, build_model  # noqa: E402


def fit_readout(trainer: EnergyTrainer, train: PairDataset, seed: int, folds: int = 5) -> str:
    """Set the output mapper's projection to ridge toward its current weights on ``train``'s
    pooled planes, λ by ``folds``-fold CV for mean cosine; returns a line saying what it did."""
    feats = capture(trainer, train.inputs)[1]
    readout = trainer.processor.output_mapper
    weight = readout.proj.weight.detach().float().clone()
    prior = F.linear(feats, weight) * readout.gain + readout.proj.bias.detach().float()
    targets = train.targets.float()
    gram = gram_of(feats)
    resid = targets.double() - prior.double()
    n = len(train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 11))
    cv = np.zeros(len(LAMBDAS))
    for k in range(folds):
        held = perm[k::folds].sort().values
        rest = torch.cat([perm[j::folds] for j in range(folds) if j != k]).sort().values
        for i, pred in enumerate(KernelRidge(gram, rest, False).path(resid[rest], held).values()):
            cv[i] += float(F.cosine_similarity(pred + prior[held], targets[held], dim=1).mean()) / folds
    lam = LAMBDAS[int(np.argmax(cv))]
    scale = float(gram.diagonal().mean())
    alpha = torch.linalg.solve(gram + lam * scale * torch.eye(n, dtype=torch.float64), resid)
    delta = feats.double().T @ alpha                                   # [features, D]
    with torch.no_grad():
        readout.proj.weight.copy_(weight + delta.T.float() / readout.gain)
    return f"readout fitted on {n} train pairs, {feats.shape[1]} features: λ {lam:g} (CV cosine {cv.max():.4f})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="wordnet:3000", help='"" for the bundled corpus')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--minutes", type=float, default=15.0, help="the whole run's budget, fits included")
    p.add_argument("--start", choices=("none", "bias", "fit"), default="fit")
    p.add_argument("--refit-minutes", type=float, default=0.0)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cfg = create_preset("debug", seed=a.seed, **parse_overrides(a.set))
    data = load_data(cfg, a.data or None, None)
    train, val = data.split(0.1, seed=cfg.seed)
    trainer = EnergyTrainer(build_model(cfg), cfg)
    scorer = SplitScorer(train_sample(train, len(val), cfg.seed), val)

    def point(tag: str) -> None:
        s = scorer(trainer.predict)
        v, t = s["validation"], s["train"]
        print(f"{tag} ({time.perf_counter() - t0:.0f} s): held-out cosine {v.mean_cosine:.4f} top-1 {v.top1:.3f}"
              f" | train cosine {t.mean_cosine:.4f} top-1 {t.top1:.3f}", flush=True)

    point("untrained")
    if a.start == "bias":
        with torch.no_grad():
            trainer.processor.output_mapper.proj.bias.copy_(train.targets.mean(0))
        point("bias at the mean train target")
    elif a.start == "fit":
        print(fit_readout(trainer, train, cfg.seed), flush=True)
        point("fitted")
    left = a.minutes - a.refit_minutes - (time.perf_counter() - t0) / 60
    train_model(trainer, train, 1_000_000, left, False, sys.stdout, a.every, lambda s: point(f"batch {s}"))
    point(f"trained, batch {trainer.step_count}")
    if a.refit_minutes:
        print(fit_readout(trainer, train, cfg.seed), flush=True)
        point(f"refitted at batch {trainer.step_count}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
