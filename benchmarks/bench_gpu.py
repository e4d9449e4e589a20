"""Training speed and memory per preset: s per train step, flow-steps/s, peak memory, and the
carrier GRU's achieved TFLOP/s next to the card's dense bf16 peak.

    .venv/bin/python benchmarks/bench_gpu.py [--device auto|cpu|cuda|cuda,cpu] [--presets debug,optimized]
                                             [--steps 3] [--batch-size N]

Real ``EnergyTrainer.train_step`` calls (forward, backward, AdamW; bf16 autocast on CUDA) on
unit-norm random embeddings of the teacher's width, one warm-up step, then the median of
``--steps`` timed steps. Flow-steps are counted from each step's own flow statistics. TFLOP/s
counts the carrier's model FLOPs — 3 × the forward's multiply-adds × 2 (forward + backward),
not the recomputation that ``checkpoint_steps`` adds — over the whole step's time. On the CPU it
prints the same figures without a peak memory or a peak TFLOP/s. Default presets: all but tiny
on CUDA, debug on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import EnergyConfig, create_preset  # noqa: E402
from energy_flow.runtime.device import describe_device, resolve_device  # noqa: E402
from energy_flow.training import build_model  # noqa: E402
from energy_flow.training.trainer import EnergyTrainer  # noqa: E402
from tests.conftest import unit_rows  # noqa: E402

#: Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets; the first
#: entry whose name is contained in the device name wins.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0))


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def carrier_flops_per_flow_step(c: EnergyConfig) -> float:
    """Forward FLOPs (2 per multiply-add) of the GRU and heads for one flow and one step."""
    h, e = c.carrier_hidden_size, c.energy_dim
    first_in = c.neuron_output_dim + e + 1
    gru = 3 * h * (first_in + h) + (c.carrier_num_layers - 1) * 3 * h * (2 * h)
    heads = h * (1 + e) + (h + e) * 3 + h
    return 2.0 * (gru + heads)


def bench(preset: str, device: torch.device, steps: int, batch_size: int | None,
          telemetry: bool = True) -> dict:
    changes = {"device": device.type if device.type == "cpu" else str(device), "trace_enabled": telemetry}
    if batch_size:
        changes["batch_size"] = batch_size
    c = create_preset(preset, **changes)
    trainer = EnergyTrainer(build_model(c), c)
    x = unit_rows(c.batch_size, c.teacher_dim, seed=1)
    y = unit_rows(c.batch_size, c.teacher_dim, seed=2)
    trainer.train_step((x, y))  # warm-up: allocator, cuDNN plans
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, flow_steps = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        report = trainer.train_step((x, y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        flow_steps.append(int(report.flow_stats.active_per_step[:-1].sum()))
    sec = statistics.median(times)
    fs = statistics.median(flow_steps)
    tflops = 3 * carrier_flops_per_flow_step(c) * fs / sec / 1e12
    return {"preset": preset, "batch": c.batch_size, "capacity": c.resolved_max_active_flows,
            "checkpoint_steps": c.checkpoint_steps, "s_per_step": sec, "flow_steps": fs,
            "flow_steps_per_s": fs / sec, "tflops": tflops,
            "peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto",
                   help="a device, or several comma-separated (cuda,cpu: side by side in one run, with "
                        "each preset's speed ratio to the last device)")
    p.add_argument("--presets", default=None, help="comma-separated (default: all but tiny on CUDA, debug on CPU)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="override every preset's batch size")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--telemetry", choices=("on", "off"), default="on",
                   help="per-step telemetry as the app and headless runs keep it (on, default), or "
                        "off as energy_flow.evaluate trains (three fewer host syncs per step)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [resolve_device(d) for d in args.device.split(",")]
    presets = args.presets.split(",") if args.presets else (
        ["debug", "experiment", "optimized"] if devices[0].type == "cuda" else ["debug"])
    for device in devices:
        peak = bf16_peak(device)
        print(f"device: {describe_device(device)}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
              f"bf16 dense peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown' if device.type == 'cuda' else 'n/a (CPU)'}")
    print("| preset | device | batch | capacity | checkpoint_steps | s / train step | flow-steps / step "
          "| flow-steps / s | peak memory | carrier TFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    seconds: dict[tuple[str, str], float] = {}
    for preset in presets:
        for device in devices:
            peak = bf16_peak(device)
            try:
                r = bench(preset, device, args.steps, args.batch_size, args.telemetry == "on")
            except torch.cuda.OutOfMemoryError as exc:
                print(f"| {preset} | {device} | | | | out of memory: {str(exc).splitlines()[0]} | | | | |")
                torch.cuda.empty_cache()
                continue
            seconds[(preset, str(device))] = r["s_per_step"]
            mem = f"{r['peak_gb']:.2f} GB" if r["peak_gb"] is not None else "n/a (CPU)"
            of_peak = f" ({100 * r['tflops'] / peak:.0f} % of {peak:.0f})" if peak else ""
            print(f"| {preset} | {device} | {r['batch']} | {r['capacity']:,} | {r['checkpoint_steps']} "
                  f"| {r['s_per_step']:.3f} | {r['flow_steps']:,.0f} | {r['flow_steps_per_s'] / 1e6:.3f} M | {mem} "
                  f"| {r['tflops']:.3g}{of_peak} |", flush=True)
    last = str(devices[-1])
    for (preset, device), sec in seconds.items():
        if device != last and (preset, last) in seconds:
            print(f"{preset}: {device} is {seconds[(preset, last)] / sec:.2f}× {last} "
                  f"({sec:.3f} vs {seconds[(preset, last)]:.3f} s per train step, same run)")

if __name__ == "__main__":
    main()
