"""Profile train steps of a preset with ``torch.profiler`` and print where the time goes.

    .venv/bin/python benchmarks/profile_step.py --preset debug --threads 1 [--device cpu|cuda]
        [--batch-size N] [--steps 1] [--out DIR]

One warm-up ``EnergyTrainer.train_step`` (forward, backward, AdamW; bf16 autocast on CUDA, as the
trainer runs it), then ``--steps`` profiled ones on unit-norm random embeddings. Prints the time
shares by kind of work (benchmarks/profile_summary.py) on each clock and the operators with the
most self time. With ``--out``, writes ``<preset>_trace.json.gz`` (a Chrome trace: open it in
chrome://tracing or Perfetto), ``<preset>_summary.md`` and ``<preset>_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.profile_summary import markdown, summarise, top_operators  # noqa: E402
from energy_flow.config import create_preset  # noqa: E402
from energy_flow.runtime.device import resolve_device  # noqa: E402
from energy_flow.training import build_model  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer  # noqa: E402
from tests.conftest import unit_rows  # noqa: E402


def profile_train_steps(trainer: EnergyTrainer, steps: int) -> tuple[profile, float]:
    """Profile ``steps`` train steps after one warm-up; returns the profiler and the seconds."""
    c = trainer.config
    x = unit_rows(c.batch_size, c.teacher_dim, seed=1)
    y = unit_rows(c.batch_size, c.teacher_dim, seed=2)
    trainer.train_step((x, y))
    activities = [ProfilerActivity.CPU]
    cuda = torch.cuda.is_available() and trainer.device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(trainer.device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step((x, y))
        if cuda:
            torch.cuda.synchronize(trainer.device)
        seconds = time.perf_counter() - t0
    return prof, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--telemetry", choices=("on", "off"), default="on")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    changes = {"device": device.type if device.type == "cpu" else str(device),
               "trace_enabled": args.telemetry == "on"}
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    c = create_preset(args.preset, **changes)
    trainer = EnergyTrainer(build_model(c), c)
    prof, seconds = profile_train_steps(trainer, args.steps)
    events = prof.events()
    shares = summarise(events)
    title = (f"{args.preset}, batch {c.batch_size}, {device}, {torch.get_num_threads()} threads, "
             f"{args.steps} step(s)")
    table = markdown(shares, title)
    print(f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  torch {torch.__version__}")
    print(f"{args.steps} profiled train step(s): {seconds:.3f} s under the profiler\n")
    print(table)
    tops = {clock: top_operators(events, clock) for clock in shares}
    for clock, rows in tops.items():
        print(f"\ntop operators, {clock} self time:")
        for name, kind, us in rows:
            print(f"  {us / 1e3:9.1f} ms  {kind:15s} {name[:90]}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(args.out / f"{args.preset}_trace.json.gz"))  # gzip: a device trace is large
        (args.out / f"{args.preset}_summary.md").write_text(table + "\n", encoding="utf-8")
        (args.out / f"{args.preset}_summary.json").write_text(json.dumps({
            "title": title, "seconds": seconds,
            "shares": {clock: {"total_us": s.total_us, "by_kind_us": s.by_kind, "replay_us": s.replay_us}
                       for clock, s in shares.items()},
            "top": tops}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
