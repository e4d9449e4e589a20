"""Flow-steps per second of the batched FlowProcessor step vs a per-flow reference, and the
time to place 100k initial flows. Debug preset model (20×20 plane, GRU 2×64).

    .venv/bin/python benchmarks/bench_step.py [--threads N] [--quick]

Flows are the real placed flows of real unit-norm inputs; every sample puts 400 flows on the
start plane, so 2k / 20k / 100k flows are batches of 5 / 50 / 250 samples. Timings are the
median of several repeats of one step (no autograd, as the forward of a step; the trainer's
backward roughly doubles it). The reference is timed on the same state and checked to reach
the same state (positions and energies) before its speed is reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_step import reference_step  # noqa: E402
from energy_flow.config import create_debug_config  # noqa: E402
from energy_flow.core.collection import OutputCollector  # noqa: E402
from energy_flow.core.spawning import sample_keys  # noqa: E402
from energy_flow.core.tracing import StepTracer  # noqa: E402
from energy_flow.training import build_model  # noqa: E402


def setup(samples: int):
    c = create_debug_config(batch_size=samples, max_active_flows=samples * 400 * 2, trace_enabled=False)
    model = build_model(c).eval()
    x = F.normalize(torch.randn(samples, c.teacher_dim, generator=torch.Generator().manual_seed(0)), dim=1)
    with torch.no_grad():
        energy, parts = model.input_mapper(x)
        state = model.lattice.place(energy, parts, (c.carrier_num_layers, c.carrier_hidden_size), 0,
                                       sample_keys(x))
    field = parts.reshape(-1, c.energy_dim)
    return c, model, state, field, samples


def time_batched(c, model, state, field, samples, repeats):
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            collector = OutputCollector(model.lattice, samples, c.energy_dim, field.device, field.dtype)
            tracer = StepTracer(c, model.lattice, samples, detailed=False, device=field.device)
            t0 = time.perf_counter()
            new = model.step(state, field, collector, tracer, 1)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), new


def time_reference(c, model, state, field, samples):
    collector = OutputCollector(model.lattice, samples, c.energy_dim, field.device, field.dtype)
    t0 = time.perf_counter()
    new = reference_step(model, state, field, collector, 1)
    return time.perf_counter() - t0, new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  "
          f"torch {torch.__version__}  threads {args.threads}")
    sizes = [(5, True), (50, True), (250, False)] if not args.quick else [(2, True), (5, True)]
    print("| flows | batched step (ms) | batched flow-steps/s | reference step (s) | reference flow-steps/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for samples, with_reference in sizes:
        c, model, state, field, samples = setup(samples)
        flows = state.count
        batched_s, new = time_batched(c, model, state, field, samples, repeats=5)
        row = f"| {flows:,} | {batched_s * 1e3:.1f} | {flows / batched_s:,.0f} |"
        if with_reference:
            ref_s, ref = time_reference(c, model, state, field, samples)
            torch.testing.assert_close(ref.pos, new.pos, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ref.energy, new.energy, rtol=1e-4, atol=1e-6)
            row += f" {ref_s:.2f} | {flows / ref_s:,.0f} | {ref_s / batched_s:.0f}× |"
        else:
            row += " not run (≈ linear in flows) | | |"
        print(row, flush=True)

    c = create_debug_config(batch_size=250, max_active_flows=100_000, trace_enabled=False)
    model = build_model(c)
    x = F.normalize(torch.randn(250, c.teacher_dim), dim=1)
    with torch.no_grad():
        energy, parts = model.input_mapper(x)
        times, mapper_times = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            model.input_mapper(x)
            mapper_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            state = model.lattice.place(energy, parts, (c.carrier_num_layers, c.carrier_hidden_size), 0,
                                        sample_keys(x))
            times.append(time.perf_counter() - t0)
    print(f"\nplacing {state.count:,} initial flows: {statistics.median(times) * 1e3:.1f} ms "
          f"(input mapper for 250 samples: {statistics.median(mapper_times) * 1e3:.1f} ms)")
    tracing_cost()


def tracing_cost(batches: int = 6) -> None:
    """train_step (forward + backward + AdamW) at the debug preset, telemetry on vs off."""
    from energy_flow.training import EnergyTrainer

    c = create_debug_config()
    x = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=torch.Generator().manual_seed(1)), dim=1)
    y = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=torch.Generator().manual_seed(2)), dim=1)
    medians = {}
    for trace in (False, True):
        cfg = c.replace(trace_enabled=trace)
        trainer = EnergyTrainer(build_model(cfg), cfg)
        trainer.train_step((x, y))  # warm-up
        medians[trace] = statistics.median(trainer.train_step((x, y)).timings["total"] for _ in range(batches))
    print(f"train_step at the debug preset (batch {c.batch_size}, {c.initial_flows_per_batch:,} placed flows): "
          f"{medians[False] * 1e3:.0f} ms without telemetry, {medians[True] * 1e3:.0f} ms with "
          f"(tracing costs {100 * (medians[True] / medians[False] - 1):+.1f} %)")


if __name__ == "__main__":
    main()
