"""Which linear maps could beat least squares on cosine *and* top-1 at once? (issue 12)

Least squares trades one metric for the other along its ridge strength: a strong ridge gives the
best held-out cosine with a poor top-1, a weak one the reverse. This script prints that trade-off,
and the same fits plus a multiple of the input (``W x + a x``): a map that keeps an identity part
and adds a shrunk correction. It explains the target the lattice is given by
``readout_init = "tied"`` (an untrained lattice that hands its input on) and shows the aim is
reachable by a linear map in principle. Fitted on the train split only; scored on the held-out
split exactly as ``energy_flow.evaluate`` scores (mean cosine, top-1/top-5 among the held-out
targets).

    .venv/bin/python benchmarks/linear_frontier.py --data wordnet:3000

Issue 30 adds the frontier against the best simple predictor per figure: the best top-1 of any
map in the ridge-toward-s·identity family that is above the best simple cosine, and the reverse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_debug_config  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training import baselines  # noqa: E402
from energy_flow.training.metrics import bridge_for, score  # noqa: E402
from energy_flow.training.simple_predictors import (LAMBDA_GRID, RidgePath, best_simple,  # noqa: E402
                                                    fit_simple_predictors, score_simple)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wordnet:3000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    args = p.parse_args()
    cfg = create_debug_config(seed=args.seed)
    data = load_data(cfg, args.data or None, None)  # --data "": the bundled corpus
    train, val = data.split(args.val_fraction, seed=args.seed)
    bridge = bridge_for(val)
    print(f"{args.data}: {len(train)} train / {len(val)} held-out pairs, seed {args.seed}")
    print("| map | ridge | a | val cosine | val top-1 | val top-5 |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("identity", None, 1.0)] + [("least squares", r, 0.0) for r in (1e-3, 0.1, 1.0, 3.0, 10.0, 30.0)]
    rows += [("least squares + a · input", r, a) for r in (1.0, 10.0) for a in (0.25, 0.5)]
    for name, ridge, a in rows:
        out = a * val.inputs.double()
        if ridge is not None:
            out = out + baselines.least_squares(train.inputs, train.targets, grid=(ridge,), seed=args.seed).predict(val.inputs).double()
        print_row(name, "" if ridge is None else f"{ridge:g}", f"{a:g}", score(out, val, bridge))
    # What mean cosine rewards: the input plus a multiple of the mean train target's direction.
    mean = train.targets.double().mean(0)
    for a in (0.5, 0.75, 1.0, 2.0):
        print_row("input + a · mean-target direction", "", f"{a:g}",
                  score(val.inputs.double() + a * mean / mean.norm(), val, bridge))
    # Ridge shrunk toward s · identity instead of toward zero (bias not shrunk).
    for s, lam in ((0.5, 3.0), (0.5, 10.0), (0.5, 30.0), (1.0, 10.0)):
        w = ridge_toward_identity(train.inputs.double(), train.targets.double(), lam, s)
        print_row(f"ridge toward {s:g} · identity", f"{lam:g}", "", score(w(val.inputs.double()), val, bridge))
    print_frontier(train, val, bridge)


def print_frontier(train, val, bridge) -> None:
    """Issue 30: can one linear map reach the best simple cosine *and* the best simple top-1?
    Every map of the family ``ridge toward s · identity`` (bias unshrunk; s = 0 is ridge → 0,
    s = 1 with a huge λ the identity plus the mean offset) over the simple predictors' λ grid, and
    the identity's λ-path without a bias, scored on the held-out split. Picking on the held-out
    split flatters the maps: if even so none reaches both, no linear map does."""
    best = best_simple({p.label(): score_simple(p, val, bridge) for p in fit_simple_predictors(train)[0]})
    x, y = train.inputs.double(), train.targets.double()
    points = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        for lam in LAMBDA_GRID:
            sc = score(ridge_toward_identity(x, y, lam, s)(val.inputs.double()), val, bridge)
            points.append((f"ridge toward {s:g} · identity, λ {lam:.3g}", sc))
    path = RidgePath(train.inputs, train.targets, "identity")
    points += [(f"ridge → identity (no bias), λ {lam:.3g}", score(path.predictor(lam)(val.inputs), val, bridge))
               for lam in LAMBDA_GRID]
    cos, top1 = best.values["mean_cosine"], best.values["top1"]
    print(f"\nbest simple on this split: cosine {cos:.3f} ({best.names['mean_cosine'].split(' (')[0]}), "
          f"top-1 {top1:.3f} ({best.names['top1'].split(' (')[0]}); {len(points)} linear maps:")
    above = [(n, s) for n, s in points if s.mean_cosine > cos]
    name, s = max(above, key=lambda p: p[1].top1) if above else ("none", None)
    print(f"- best top-1 among maps above the best simple cosine: {name}: "
          + (f"cosine {s.mean_cosine:.3f}, top-1 {s.top1:.3f}" if s else "no map is above it"))
    above = [(n, s) for n, s in points if s.top1 > top1]
    name, s = max(above, key=lambda p: p[1].mean_cosine) if above else ("none", None)
    print(f"- best cosine among maps above the best simple top-1: {name}: "
          + (f"cosine {s.mean_cosine:.3f}, top-1 {s.top1:.3f}" if s else "no map is above it"))
    both = [n for n, s in points if s.mean_cosine > cos and s.top1 > top1]
    print(f"- maps above both: {len(both)}" + (f" ({', '.join(both)})" if both else ""))


def print_row(name: str, ridge: str, a: str, s) -> None:
    print(f"| {name} | {ridge} | {a} | {s.mean_cosine:.3f} | {s.top1:.3f} | {s.top5:.3f} |")


def ridge_toward_identity(x, y, lam: float, s: float):
    """argmin_W ‖(x − x̄)W − (y − ȳ)‖² + lam·‖W − s·I‖²; predicts (x − x̄)W + ȳ."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(xc.T @ xc + lam * eye, xc.T @ yc + lam * s * eye)
    return lambda inputs: (inputs - mx) @ w + my


if __name__ == "__main__":
    main()
