"""What the lattice loses that the identity keeps (issue 30, item 4).

The identity predictor hands the whole input embedding to the output; the model hands on only
what survives the input mapper, the propagation and the deposits. This script measures how much
of the input survives, with a linear probe: a ridge map fitted on train pairs from

- the **start plane** (what the input mapper gives the flows: each cell's part and energy,
  pooled onto the output mapper's coarse grid, so both ends are read at one resolution), and
- the **pooled output planes** (exactly what the output mapper's projection reads),

back to the (unit) input embedding, scored on held-out pairs as R² per input dimension
(1 − SSE/SST around the train mean) and overall (summed over dimensions), and as the mean cosine
of the probed input to the true one. R² = 1 everywhere would mean the planes keep the input as
well as the identity does; the drop from start plane to output planes is what propagation and
deposition lose.

It also fits the readout a closed form would give the same planes: a ridge map from the pooled
output planes to the *targets*, shrunk toward the model's own readout
(``A = argmin ‖F A − Y‖² + λ ‖A − A_model‖²``; λ → ∞ is the model, λ → 0 least squares on the
planes), λ picked on an inner hold-out of the probe's train pairs for cosine and for top-1
separately, as for the simple predictors. If this readout beats the best simple predictor while
the model does not, the planes carry enough and the trained readout is what falls short.

With ``--batches N --every K`` the model is trained exactly as ``energy_flow.evaluate`` trains
it (same split, sampler and seed) and probed at batch 0, K, 2K, …; ``--checkpoint`` probes a
saved model instead.

    .venv/bin/python benchmarks/plane_probe.py --data wordnet:3000 --preset debug --batches 300 --every 100
    .venv/bin/python benchmarks/plane_probe.py --data wordnet:3000 --checkpoint runs/wn.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.evaluate import train_model, train_sample  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training.checkpoint import read_checkpoint  # noqa: E402
from energy_flow.config import EnergyConfig  # noqa: E402
from energy_flow.training.data import PairDataset  # noqa: E402
from energy_flow.training.metrics import bridge_for, score  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer, build_model  # noqa: E402

LAMBDAS = tuple(float(10.0 ** (k / 2)) for k in range(-4, 9))  # relative to mean(diag K)


def capture(trainer: EnergyTrainer, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One eval-mode forward pass over ``inputs``: pooled start plane ``[N, (E+1)·g²]``, pooled
    output planes ``[N, P·(E+1)·g²]`` (what the readout projects) and the model's outputs."""
    proc = trainer.processor
    g = proc.config.resolved_mapper_grid
    starts: list[torch.Tensor] = []
    planes: list[torch.Tensor] = []

    def on_input(module, args, output) -> None:
        energy, parts = output
        c = module.config
        field = torch.cat([parts, torch.log1p(energy).unsqueeze(-1)], dim=-1)  # as the readout pools
        field = field.transpose(1, 2).reshape(energy.shape[0], -1, c.lattice_height, c.lattice_width)
        starts.append(F.adaptive_avg_pool2d(field.float(), g).flatten(1).cpu())

    hooks = [proc.input_mapper.register_forward_hook(on_input),
             proc.output_mapper.register_forward_hook(
                 lambda module, args, output: planes.append(module.features(*args).detach().float().cpu()))]
    try:
        with torch.no_grad():
            outputs = trainer.predict(inputs)  # in training-size batches: the flow budget fits them
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(starts), torch.cat(planes), outputs


class DualRidge:
    """Ridge from many features (thousands) to targets in the dual (kernel) form, centred (an
    unshrunk bias), shrunk toward an offset prediction ``prior`` (zero when None). One
    eigendecomposition of the train Gram matrix serves every λ."""

    def __init__(self, feats: torch.Tensor, targets: torch.Tensor, prior: torch.Tensor | None = None) -> None:
        self.f_mean = feats.double().mean(0)
        f = feats.double() - self.f_mean
        resid = targets.double() - (0.0 if prior is None else prior.double())
        self.r_mean = resid.mean(0)
        k = f @ f.T
        self.scale = float(k.diagonal().mean())
        self.eigvals, self.u = torch.linalg.eigh(k)
        self.ut_r = self.u.T @ (resid - self.r_mean)
        self.f = f

    def predict(self, feats: torch.Tensor, lam: float, prior: torch.Tensor | None = None) -> torch.Tensor:
        alpha = self.u @ (self.ut_r / (self.eigvals.clamp_min(0) + lam * self.scale).unsqueeze(1))
        out = (feats.double() - self.f_mean) @ (self.f.T @ alpha) + self.r_mean
        return (out if prior is None else out + prior.double()).float()


def r_squared(pred: torch.Tensor, truth: torch.Tensor, train_mean: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per-dimension R² and the overall one (sums over dimensions), around the train mean."""
    sse = ((pred.double() - truth.double()) ** 2).sum(0)
    sst = ((truth.double() - train_mean.double()) ** 2).sum(0)
    return (1 - sse / sst).numpy(), float(1 - sse.sum() / sst.sum())


def inner_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 5))
    return perm[n // 5:], perm[: n // 5]


def probe_input(feats_tr: torch.Tensor, x_tr: torch.Tensor, feats_val: torch.Tensor, x_val: torch.Tensor,
                seed: int) -> dict:
    """R² of the input from ``feats``, λ picked on an inner hold-out for overall R²."""
    fit_rows, hold = inner_split(len(x_tr), seed)
    inner = DualRidge(feats_tr[fit_rows], x_tr[fit_rows])
    lam = max(LAMBDAS, key=lambda l: r_squared(inner.predict(feats_tr[hold], l), x_tr[hold], x_tr[fit_rows].mean(0))[1])
    pred = DualRidge(feats_tr, x_tr).predict(feats_val, lam)
    per_dim, overall = r_squared(pred, x_val, x_tr.mean(0))
    return {"lambda": lam, "r2_overall": overall, "r2_median": float(np.median(per_dim)),
            "r2_p10": float(np.percentile(per_dim, 10)), "r2_p90": float(np.percentile(per_dim, 90)),
            "r2_min": float(per_dim.min()), "cosine": float(F.cosine_similarity(pred, x_val, dim=1).mean())}


def refit_readout(trainer: EnergyTrainer, planes_tr: torch.Tensor, probe_set: PairDataset,
                  planes_val: torch.Tensor, val: PairDataset, seed: int) -> dict:
    """The planes' best linear readout shrunk toward the model's own; λ per figure on an inner
    hold-out of the probe's train pairs, scored on the held-out split."""
    readout = trainer.processor.output_mapper

    def own(feats: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            w = readout.proj.weight.float().cpu()
            return F.linear(feats, w) * readout.gain + readout.proj.bias.float().cpu()

    fit_rows, hold = inner_split(len(probe_set), seed)
    inner_set = probe_set.subset(hold.sort().values, "inner hold-out")
    hold_sorted = hold.sort().values
    inner = DualRidge(planes_tr[fit_rows], probe_set.targets[fit_rows], own(planes_tr[fit_rows]))
    bridge = bridge_for(inner_set)
    inner_scores = {lam: score(inner.predict(planes_tr[hold_sorted], lam, own(planes_tr[hold_sorted])),
                               inner_set, bridge) for lam in LAMBDAS}
    full = DualRidge(planes_tr, probe_set.targets, own(planes_tr))
    val_bridge = bridge_for(val)
    result = {}
    for figure in ("mean_cosine", "top1"):
        lam = max(LAMBDAS, key=lambda l: getattr(inner_scores[l], figure))
        result[figure] = {"lambda": lam, "value": getattr(
            score(full.predict(planes_val, lam, own(planes_val)), val, val_bridge), figure)}
    return result


def probe_point(trainer: EnergyTrainer, probe_set: PairDataset, val: PairDataset, seed: int) -> dict:
    t0 = time.perf_counter()
    start_tr, planes_tr, _ = capture(trainer, probe_set.inputs)
    start_val, planes_val, out_val = capture(trainer, val.inputs)
    x_tr, x_val = F.normalize(probe_set.inputs, dim=1), F.normalize(val.inputs, dim=1)
    model = score(out_val, val)
    point = {
        "batch": trainer.step_count,
        "start_plane": probe_input(start_tr, x_tr, start_val, x_val, seed),
        "output_planes": probe_input(planes_tr, x_tr, planes_val, x_val, seed),
        "model": {"mean_cosine": model.mean_cosine, "top1": model.top1},
        "readout_refit": refit_readout(trainer, planes_tr, probe_set, planes_val, val, seed),
        "features": {"start_plane": start_tr.shape[1], "output_planes": planes_tr.shape[1]},
    }
    point["seconds"] = time.perf_counter() - t0
    return point


def print_point(label: str, p: dict) -> None:
    s, o, r = p["start_plane"], p["output_planes"], p["readout_refit"]
    print(f"| {label} | {p['batch']} | {s['r2_overall']:.3f} ({s['r2_p10']:.2f}–{s['r2_p90']:.2f}) | "
          f"{o['r2_overall']:.3f} ({o['r2_p10']:.2f}–{o['r2_p90']:.2f}) | {o['cosine']:.3f} | "
          f"{p['model']['mean_cosine']:.3f} / {p['model']['top1']:.3f} | "
          f"{r['mean_cosine']['value']:.3f} / {r['top1']['value']:.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wordnet:3000")
    p.add_argument("--preset", default="debug")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--checkpoint", help="probe this saved model (its config) instead of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=0)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--probe-pairs", type=int, default=1500, help="train pairs the probes are fitted on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write every point here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from energy_flow.config import parse_overrides
    if args.checkpoint:
        cfg = EnergyConfig.from_dict(read_checkpoint(args.checkpoint)["config"], source=args.checkpoint)
    else:
        cfg = create_preset(args.preset, seed=args.seed)
    cfg = cfg.replace(trace_enabled=False, **parse_overrides(args.overrides))
    data = load_data(cfg, args.data, None)
    train, val = data.split(0.1, seed=cfg.seed)
    probe_set = train_sample(train, args.probe_pairs, cfg.seed + 100)
    trainer = EnergyTrainer(build_model(cfg), cfg)
    label = args.checkpoint or args.preset
    if args.checkpoint:
        trainer.load_checkpoint(args.checkpoint)
    print(f"{args.data}, seed {cfg.seed}: probes fitted on {len(probe_set)} train pairs, scored on "
          f"{len(val)} held-out pairs; {torch.get_num_threads()} torch thread(s)")
    print("| model | batch | R² of the input from the start plane (p10–p90 per dim) | R² from the output "
          "planes (p10–p90) | cosine of the probed input | model val cosine / top-1 | readout refit "
          "toward the model's: val cosine / top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    points = [probe_point(trainer, probe_set, val, cfg.seed)]
    print_point(label, points[-1])

    def on_every(step: int) -> None:
        points.append(probe_point(trainer, probe_set, val, cfg.seed))
        print_point(label, points[-1])

    if args.batches:
        run = train_model(trainer, train, args.batches, None, False, every=args.every, on_every=on_every)
        print(f"trained {run.steps} batches in {run.seconds:.0f} s; loss {run.first_loss:.3f} → {run.last_loss:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "config": cfg.to_dict(), "points": points},
                                              indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
