"""Where the memory of a training step goes: bytes autograd keeps for backward, per flow-step,
by region, at a 3×1024 carrier — for each ``checkpoint_steps`` setting.

    .venv/bin/python benchmarks/bench_memory.py [--steps 4]

A 6×6×6 lattice, batch 2, with the optimized preset's model sizes (3×1024 GRU, neuron 64,
energy 16), float32 on the CPU. Bytes are counted once per storage by
energy_flow.memory.saved.SavedTensorLedger; they are deterministic, so one run is the figure. The
"16-bit" column halves the kept hidden state, which on a GPU under autocast is stored in the
GRU's 16-bit compute dtype; the plain path's 16-bit column halves every float32 byte (an
estimate: on CUDA, cuDNN keeps its own layout).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_optimized_config, create_tiny_config  # noqa: E402
from energy_flow.core import processor as processor_module  # noqa: E402
from energy_flow.memory.saved import HIDDEN_REGION, SavedTensorLedger, flow_steps  # noqa: E402
from energy_flow.training import build_model  # noqa: E402
from tests.conftest import unit_rows  # noqa: E402

SIZES = dict(lattice_width=6, lattice_height=6, lattice_depth=6, batch_size=2, max_active_flows=144,
             carrier_hidden_size=1024, carrier_num_layers=3, neuron_hidden_dim=64, neuron_output_dim=64,
             energy_dim=16, mapper_grid=3)


def measure(checkpoint_steps: int, steps: int):
    config = create_tiny_config(**SIZES, max_steps=steps, checkpoint_steps=checkpoint_steps)
    model = build_model(config)
    with SavedTensorLedger(model) as ledger:
        result = model(unit_rows(2, seed=1))
    active = result.flow_stats.active_per_step
    return ledger.result, flow_steps(active), active


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for k in (0, 1, 2):
        saved, fs, active = measure(k, args.steps)
        rows[k] = (saved, fs, active)
        fp32 = saved.by_dtype.get("float32", 0)
        if k == 0:
            b16 = (saved.total - fp32 / 2) / fs
        else:
            b16 = (saved.total - saved.by_region.get(HIDDEN_REGION, 0) / 2) / fs
        print(f"\ncheckpoint_steps={k}: {fs} flow-steps, {saved.total / fs:,.0f} B/flow-step float32, "
              f"≈{b16:,.0f} B/flow-step 16-bit; budget-sized tensors {saved.full_capacity / fs:,.0f} B/flow-step")
        for region, nbytes in sorted(saved.by_region.items(), key=lambda kv: -kv[1]):
            print(f"  {region:40s} {nbytes / fs:>10,.0f} B/flow-step")
        print("  by dtype: " + ", ".join(f"{d} {v / fs:,.0f}" for d, v in saved.by_dtype.items()))

    o = create_optimized_config()
    C, T, k = o.resolved_max_active_flows, o.max_steps, o.checkpoint_steps
    segs = math.ceil(args.steps / 2)
    (plain, fs0, _), (step, fs1, _), (seg, _, seg_active) = rows[0], rows[1], rows[2]
    b0 = plain.total / fs0
    b1 = (step.total - step.by_region[HIDDEN_REGION] / 2) / fs1
    starts = [int(seg_active[t]) for t in range(0, args.steps, 2)]  # live flows at each segment's start
    state_bytes = sum(seg.by_rows[n] for n in set(starts))
    s32 = state_bytes / sum(starts)
    s = s32 - seg.by_region.get(HIDDEN_REGION, 0) / 2 / sum(starts)
    P = sum(q.numel() for q in build_model(o).parameters())
    terms = {
        f"segment-start states ({math.ceil(T / k)} × C × {s:,.0f} B)": math.ceil(T / k) * C * s,
        f"one recomputed segment's kept inputs ({k} × C × {b1:,.0f} B)": k * C * b1,
        f"one recomputed chunk + gradients (2 × {processor_module.RECOMPUTE_CHUNK_ROWS} × {b0:,.0f} B)":
            2 * processor_module.RECOMPUTE_CHUNK_ROWS * b0,
        f"state + new state + their gradients (4 × C × {s32:,.0f} B)": 4 * C * s32,
        f"parameters, gradients, AdamW moments (16 B × {P / 1e6:.1f}M)": 16 * P,
    }
    print(f"\noptimized preset (C = {C:,} flows, T = {T} steps, checkpoint_steps = {k}) peak estimate:")
    for name, v in terms.items():
        print(f"  {name:75s} {v / 1e9:6.2f} GB")
    print(f"  {'total':75s} {sum(terms.values()) / 1e9:6.2f} GB")
    print(f"  (plain path, every flow-step kept: {C * T * b0 / 2 / 1e9:,.0f} GB at 16 bits if the whole budget stays alive)")


if __name__ == "__main__":
    main()
