"""Screen lattice configurations forward-only against the best simple predictor (issue 30, item 5).

Whatever the output planes lose bounds every readout of them, trained or not. For each
configuration (``--config "FIELD=VALUE FIELD=VALUE"`` on top of ``--preset``; several ``--config``
groups in one run) this script builds the **untrained** lattice, runs it forward over *every* train pair and
every held-out pair, and fits closed-form readouts from the pooled output planes (exactly what the
output mapper's projection reads):

- the **probe**: ridge from the planes back to the (unit) input, R² on held-out (as
  ``benchmarks/plane_probe.py``);
- the **readout**: ridge from the planes to the *targets*, shrunk toward zero (the analogue of
  ridge → 0) and toward the model's own (tied) readout (the analogue of ridge → identity: λ → ∞ is
  the untrained model), λ chosen per figure by 5-fold cross-validation on the train split, as the
  simple predictors choose theirs;
- **two stages**, still one linear map of the planes: the input probed from them (out-of-fold on
  train), then ridge → identity on it (the best simple top-1's predictor, fed what the planes keep);
- the **held-out bound**: the same readouts over the whole λ grid scored on the held-out split —
  generous, it picks on the split it reports — and the best top-1 of any one readout whose
  cosine is above the best simple cosine (a single readout must beat both figures at once).

With ``--start`` the start plane (what the input mapper hands the flows, before propagation) is
read out too; with ``--reference`` the input itself and random tanh features of it, no lattice
involved (the first reproduces the simple predictors: a check of the machinery).
Results: docs/BENCHMARKS.md, "Issue 30, item 5: a forward-only screen".

    .venv/bin/python benchmarks/plane_screen.py --data wordnet:3000 --seed 0 --reference \\
        --config "" --config "displacement_scale=0.05 max_spawn_per_step=0" --config "energy_dim=16"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plane_probe import capture  # noqa: E402
from energy_flow.config import create_preset, parse_overrides  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training.data import PairDataset  # noqa: E402
from energy_flow.training.metrics import bridge_for, score  # noqa: E402
from energy_flow.training.simple_predictors import best_simple, fit_simple_predictors, score_simple  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer, build_model  # noqa: E402

#: λ relative to the mean diagonal of the Gram matrix (as plane_probe), 10⁻⁴ … 10⁴ in half decades.
LAMBDAS = tuple(float(10.0 ** (k / 2)) for k in range(-8, 9))
FIGS = ("mean_cosine", "top1")


def own_readout(trainer: EnergyTrainer):
    """The model's own (untrained, tied) projection of pooled plane features."""
    readout = trainer.processor.output_mapper
    w = readout.proj.weight.detach().float().cpu()
    b = readout.proj.bias.detach().float().cpu()

    def own(feats: torch.Tensor) -> torch.Tensor:
        return F.linear(feats, w) * readout.gain + b
    return own


class KernelRidge:
    """Ridge in the dual form on a precomputed Gram matrix ``K`` of all rows (train and
    held-out), fitted on rows ``fit``: one eigendecomposition per (fit rows, bias) serves every
    λ and every target. ``bias=True`` centres the features on the fit rows (an unshrunk bias, as
    ridge → 0); ``bias=False`` fits through the origin (as ridge → identity), so λ → ∞ returns
    the prior exactly."""

    def __init__(self, gram: torch.Tensor, fit: torch.Tensor, bias: bool) -> None:
        self.gram, self.fit, self.bias = gram, fit, bias
        k = gram[fit][:, fit]
        if bias:
            self.col_mean = k.mean(0)
            self.all_mean = float(k.mean())
            k = k - self.col_mean.unsqueeze(0) - self.col_mean.unsqueeze(1) + self.all_mean
        self.scale = float(k.diagonal().mean())
        self.eigvals, self.u = torch.linalg.eigh(k)
        self.eigvals = self.eigvals.clamp_min(0)

    def cross(self, rows: torch.Tensor) -> torch.Tensor:
        k = self.gram[rows][:, self.fit]
        if self.bias:
            k = k - k.mean(1, keepdim=True) - self.col_mean.unsqueeze(0) + self.all_mean
        return k

    def path(self, targets: torch.Tensor, rows: torch.Tensor, lambdas=None):
        """Predictions for ``rows`` for every λ: {λ: [len(rows), D]} of the residual targets
        (the caller adds the prior back)."""
        y = targets.double()
        mean = y.mean(0) if self.bias else torch.zeros(y.shape[1], dtype=y.dtype)
        ut_y = self.u.T @ (y - mean)
        kc_u = self.cross(rows) @ self.u
        return {lam: (kc_u @ (ut_y / (self.eigvals + lam * self.scale).unsqueeze(1)) + mean).float()
                for lam in (lambdas or LAMBDAS)}


def gram_of(feats: torch.Tensor) -> torch.Tensor:
    f = feats.float()
    return (f @ f.T).double()


def readouts(gram: torch.Tensor, targets: torch.Tensor, prior: torch.Tensor | None, n_train: int,
             train: PairDataset, val: PairDataset, bias: bool, seed: int, best_cos: float,
             folds: int = 5) -> dict:
    """λ per figure by ``folds``-fold CV on train (as simple_predictors), the held-out scores
    at those λ, the held-out maxima over λ and the best top-1 of one readout above the best
    simple cosine. ``prior``: [N, D] predictions the ridge is shrunk toward (None: zero)."""
    resid = targets.double() - (0 if prior is None else prior.double())
    base = torch.zeros_like(targets) if prior is None else prior.float()
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + 11))
    totals = {f: np.zeros(len(LAMBDAS)) for f in FIGS}
    for k in range(folds):
        held = perm[k::folds].sort().values
        fit_rows = torch.cat([perm[j::folds] for j in range(folds) if j != k]).sort().values
        kr = KernelRidge(gram, fit_rows, bias)
        fold = train.subset(held, f"fold {k + 1}")
        bridge = bridge_for(fold)
        for i, (lam, pred) in enumerate(kr.path(resid[fit_rows], held).items()):
            s = score(pred + base[held], fold, bridge)
            for f in FIGS:
                totals[f][i] += getattr(s, f)
    lams = {f: LAMBDAS[int(np.argmax(totals[f]))] for f in FIGS}
    tr = torch.arange(n_train)
    vr = torch.arange(n_train, gram.shape[0])
    bridge = bridge_for(val)
    path = {lam: score(pred + base[vr], val, bridge)
            for lam, pred in KernelRidge(gram, tr, bias).path(resid[tr], vr).items()}
    joint = [s.top1 for s in path.values() if s.mean_cosine > best_cos]
    return {"cv": {f: {"lambda": lams[f], "value": getattr(path[lams[f]], f)} for f in FIGS},
            "held_out_max": {f: max(getattr(s, f) for s in path.values()) for f in FIGS},
            "top1_with_cos_above_best": max(joint) if joint else None,
            "path": {str(lam): {f: getattr(s, f) for f in FIGS} for lam, s in path.items()}}


def probe(gram: torch.Tensor, x: torch.Tensor, n_train: int, seed: int, folds: int = 5
          ) -> tuple[float, torch.Tensor]:
    """Overall held-out R² of the unit input from the features (λ on an inner fifth of train),
    and the probed input of every row: out-of-fold (``folds`` folds) for train rows, from the
    whole train split for held-out rows, so the two look alike to a readout fitted on them."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + 5))
    fit_rows, hold = perm[n_train // 5:].sort().values, perm[: n_train // 5].sort().values

    def r2(pred, truth, mean):
        return float(1 - ((pred.double() - truth.double()) ** 2).sum() / ((truth.double() - mean.double()) ** 2).sum())
    inner = KernelRidge(gram, fit_rows, True).path(x[fit_rows], hold)
    lam = max(inner, key=lambda l: r2(inner[l], x[hold], x[fit_rows].mean(0)))
    tr, vr = torch.arange(n_train), torch.arange(n_train, gram.shape[0])
    pred = KernelRidge(gram, tr, True).path(x[tr], vr, (lam,))[lam]
    probed = torch.empty_like(x)
    probed[vr] = pred
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + 7))
    for k in range(folds):
        held = perm[k::folds].sort().values
        rest = torch.cat([perm[j::folds] for j in range(folds) if j != k]).sort().values
        probed[held] = KernelRidge(gram, rest, True).path(x[rest], held, (lam,))[lam]
    return r2(pred, x[vr], x[tr].mean(0)), probed


def all_readouts(feats: torch.Tensor, own_pred: torch.Tensor | None, x: torch.Tensor, train: PairDataset,
                 val: PairDataset, seed: int, best_cos: float) -> dict:
    gram = gram_of(feats)
    n = len(train)
    targets = torch.cat([train.targets, val.targets])
    r2, probed = probe(gram, x, n, seed)
    out = {"probe_r2": r2,
           "to_zero": readouts(gram, targets, None, n, train, val, True, seed, best_cos)}
    if own_pred is not None:
        out["to_own"] = readouts(gram, targets, own_pred, n, train, val, False, seed, best_cos)
        # Two stages, still one linear map of the features: the probed input, then ridge →
        # identity on it (the best simple top-1's predictor, applied to what the planes keep).
        out["probe_then_ridge_to_identity"] = readouts(gram_of(probed), targets, probed, n, train, val,
                                                       False, seed, best_cos)
    return out


def screen(label: str, overrides: dict, args, train: PairDataset, val: PairDataset, best) -> dict:
    cfg = create_preset(args.preset, seed=args.seed).replace(trace_enabled=False, **overrides)
    torch.manual_seed(args.seed)
    trainer = EnergyTrainer(build_model(cfg), cfg)
    t0 = time.perf_counter()
    inputs = torch.cat([train.inputs, val.inputs])
    start, planes, outputs = capture(trainer, inputs)
    fwd = time.perf_counter() - t0
    batches = -(-len(inputs) // cfg.batch_size)
    x = F.normalize(inputs, dim=1)
    model = score(outputs[len(train):], val)
    res = {"label": label, "overrides": overrides, "forward_s_per_batch": fwd / batches,
           "features": planes.shape[1], "model": {f: getattr(model, f) for f in FIGS}}
    bc = best.values["mean_cosine"]
    res["planes"] = all_readouts(planes, own_readout(trainer)(planes), x, train, val, args.seed, bc)
    if args.start:
        res["start"] = all_readouts(start, None, x, train, val, args.seed, bc)
    res["seconds"] = time.perf_counter() - t0
    return res


def reference(label: str, feats: torch.Tensor, prior: torch.Tensor, train, val, seed, best) -> dict:
    """Readouts of features computed from the input without the lattice (no model involved)."""
    x = F.normalize(torch.cat([train.inputs, val.inputs]), dim=1)
    return {"label": label, "features": feats.shape[1],
            "planes": all_readouts(feats, prior, x, train, val, seed, best.values["mean_cosine"])}


def fmt(r: dict) -> str:
    cv, hm, j = r["cv"], r["held_out_max"], r["top1_with_cos_above_best"]
    return (f"{cv['mean_cosine']['value']:.3f} / {cv['top1']['value']:.3f} | "
            f"{hm['mean_cosine']:.3f} / {hm['top1']:.3f} | {'—' if j is None else f'{j:.3f}'}")


def row(label: str, r: dict) -> str:
    pl = r["planes"]
    m = r.get("model")
    return (f"| {label} | {r['features']} | {r.get('forward_s_per_batch', float('nan')):.2f} | "
            f"{'—' if m is None else f'{m[FIGS[0]]:.3f} / {m[FIGS[1]]:.3f}'} | {pl['probe_r2']:.3f} | "
            f"{fmt(pl['to_zero'])} | {fmt(pl['to_own']) if 'to_own' in pl else '| |'} | "
            f"{fmt(pl['probe_then_ridge_to_identity']) if 'to_own' in pl else '| |'} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wordnet:3000", help='"" for the bundled corpus')
    p.add_argument("--preset", default="debug")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", action="append", default=[],
                   help='space-separated FIELD=VALUE overrides of one candidate ("" = the preset)')
    p.add_argument("--start", action="store_true", help="also read out the start plane")
    p.add_argument("--reference", action="store_true",
                   help="also read out the input itself and random tanh features of it (no lattice)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="append each candidate's result here (JSON lines)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg0 = create_preset(args.preset, seed=args.seed)
    data = load_data(cfg0, args.data or None, None)
    train, val = data.split(0.1, seed=args.seed)
    bridge = bridge_for(val)
    best = best_simple({q.label(): score_simple(q, val, bridge) for q in fit_simple_predictors(train, args.seed)[0]})
    print(f"{args.data or 'bundled corpus'}, seed {args.seed}: {len(train)} train / {len(val)} held-out; "
          f"best simple cos {best.values['mean_cosine']:.4f} ({best.names['mean_cosine'].split(' (')[0]}), "
          f"top-1 {best.values['top1']:.3f} ({best.names['top1'].split(' (')[0]})", flush=True)
    print("| config | features | fwd s/batch | model untrained cos / top-1 | probe R² (planes) | "
          "ridge→0 CV cos / top-1 | held-out max | top-1 with cos > best | ridge→own CV cos / top-1 | "
          "held-out max | top-1 with cos > best | probe → ridge→identity CV cos / top-1 | held-out max | "
          "top-1 with cos > best |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    if args.reference:
        x = F.normalize(torch.cat([train.inputs, val.inputs]), dim=1)
        g = torch.Generator().manual_seed(args.seed + 3)
        w = torch.randn(x.shape[1], 3200, generator=g)
        refs = [("reference: the input itself (linear; prior = identity)", x, x),
                ("reference: input + 3,200 random tanh features (prior = identity)",
                 torch.cat([x, torch.tanh(x @ w)], dim=1), x),
                ("reference: 3,200 random tanh features only (prior = tied back-projection)",
                 torch.tanh(x @ w), torch.tanh(x @ w) @ w.T / 3200)]
        for label, feats, prior in refs:
            r = reference(label, feats, prior, train, val, args.seed, best)
            print(row(label, r), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({**r, "data": args.data, "seed": args.seed}) + "\n")
    for item in args.config:
        overrides = parse_overrides(shlex.split(item))
        label = item or f"{args.preset} preset"
        r = screen(label, overrides, args, train, val, best)
        print(row(label, r), flush=True)
        if "start" in r:
            print(row(f"↳ start plane of {label}", {"features": "", "planes": r["start"]}), flush=True)
        if args.json:
            r["best_simple"] = best.to_dict()
            r["data"], r["seed"] = args.data, args.seed
            with open(args.json, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
