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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wordnet:3000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    args = p.parse_args()
    cfg = create_debug_config(seed=args.seed)
    data = load_data(cfg, args.data, None)
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
