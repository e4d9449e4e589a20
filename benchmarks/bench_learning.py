"""What the model reaches on the bundled corpus, next to baselines on the same split.

    .venv/bin/python benchmarks/bench_learning.py [--preset debug] [--batches 300]

The corpus is split 90/10 (seed 0). Metrics on each split: mean cosine(output, target) and
the text bridge's top-1 (is the output nearest to its own target among that split's targets).
Baselines, fitted on the train split only:
- mean target: predict the mean train target embedding for every input;
- identity: predict the input embedding itself (questions and paraphrases are already close
  to their targets in the teacher's space, so this is a strong baseline for top-1);
- least squares: a linear map (with bias, ridge 1e-3) from input to target embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.training import BatchSampler, EnergyTrainer, build_model  # noqa: E402
from energy_flow.training.text_bridge import TextBridge  # noqa: E402


def metrics(outputs: torch.Tensor, split) -> tuple[float, float]:
    cos = F.cosine_similarity(outputs, split.targets, dim=1).mean().item()
    bridge = TextBridge.from_dataset(split)
    top1 = bridge.top1_accuracy_for_samples(outputs, torch.arange(len(split)))
    return cos, float(top1)


def least_squares(train, ridge: float = 1e-3):
    x = torch.cat([train.inputs, torch.ones(len(train), 1)], dim=1).double()
    y = train.targets.double()
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return lambda inputs: (torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1).double() @ w).float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    config = create_preset(args.preset, trace_enabled=False)
    data = load_data(config, None, None)
    train, val = data.split(0.1, seed=config.seed)
    rows = {}
    mean = train.targets.mean(0, keepdim=True)
    fit = least_squares(train)
    for name, predict in (("mean target", lambda s: mean.expand(len(s), -1)),
                          ("identity (input as output)", lambda s: s.inputs),
                          ("least squares (linear map)", lambda s: fit(s.inputs))):
        rows[name] = (*metrics(predict(train), train), *metrics(predict(val), val))

    trainer = EnergyTrainer(build_model(config), config)
    sampler = BatchSampler(len(train), config.batch_size, config.seed)
    t0 = time.perf_counter()
    hist = trainer.run_steps(train.inputs, train.targets, sampler, args.batches, progress=True)
    seconds = time.perf_counter() - t0
    name = f"energy flow, {args.preset} preset, {args.batches} batches"
    rows[name] = (*metrics(trainer.predict(train.inputs), train), *metrics(trainer.predict(val.inputs), val))

    print(f"\n# {time.strftime('%Y-%m-%d')}  {len(train)} train / {len(val)} validation pairs, "
          f"batch {config.batch_size}; training took {seconds:.0f} s ({seconds / args.batches:.2f} s/batch); "
          f"loss {hist.loss[0]:.3f} → {sum(hist.loss[-10:]) / 10:.3f} (mean of last 10)")
    print("| predictor | train cosine | train top-1 | validation cosine | validation top-1 |")
    print("|---|---:|---:|---:|---:|")
    for name, (tc, tt, vc, vt) in rows.items():
        print(f"| {name} | {tc:.3f} | {tt:.3f} | {vc:.3f} | {vt:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "seconds": seconds, "loss": hist.loss}, indent=1))


if __name__ == "__main__":
    main()
