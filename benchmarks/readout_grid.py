"""How much of its input does an *untrained* lattice hand on, per mapper grid? (issue 12)

The input mapper writes the embedding on a g × g grid that is interpolated up to the start plane;
the readout average-pools the output planes back to g × g. Below the lattice's own width that
round trip blurs neighbouring cells together. This prints, for each grid, the untrained model's
cosine with its input and its held-out scores, with payloads carried to the planes under their
start cells and a tied readout (``payload_update = "gated"``, ``flow_xy_start = "still"``,
``readout_init = "tied"``) — no training, so it takes about a minute on two cores.

    .venv/bin/python benchmarks/readout_grid.py --data wordnet:3000 --grids 8,10,20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training import EnergyTrainer, build_model  # noqa: E402
from energy_flow.training.metrics import bridge_for, score  # noqa: E402

CARRIED = dict(payload_update="gated", flow_xy_start="still", readout_init="tied", trace_enabled=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wordnet:3000")
    p.add_argument("--preset", default="debug")
    p.add_argument("--grids", default="8,10,20", help="comma-separated mapper_grid values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    args = p.parse_args()
    grids = [int(g) for g in args.grids.split(",")]
    data = load_data(create_preset(args.preset, **CARRIED), args.data, None)
    train, val = data.split(args.val_fraction, seed=args.seed)
    bridge = bridge_for(val)
    print(f"{args.data}: {len(train)} train / {len(val)} held-out pairs, seed {args.seed}, "
          f"preset {args.preset}, untrained")
    print("| mapper_grid | cosine(output, input) | val cosine | val top-1 | val top-5 |")
    print("|---:|---:|---:|---:|---:|")
    for g in grids:
        cfg = create_preset(args.preset, mapper_grid=g, seed=args.seed, **CARRIED)
        out = EnergyTrainer(build_model(cfg), cfg).predict(val.inputs)
        fidelity = float(F.cosine_similarity(out.double(), val.inputs.double(), dim=1).mean())
        s = score(out, val, bridge)
        print(f"| {g} | {fidelity:.3f} | {s.mean_cosine:.3f} | {s.top1:.3f} | {s.top5:.3f} |")


if __name__ == "__main__":
    main()
