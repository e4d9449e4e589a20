"""Recomputation at a preset's scale: one forward and backward with the preset's
``checkpoint_steps`` and one without (every flow-step's activations kept), same weights, same
batch; the largest gradient difference per parameter, the loss of each, and the peak memory of
each (``torch.cuda.max_memory_allocated``).

    python benchmarks/bench_recompute_grads.py --preset optimized --batch-size 4 [--device cuda]

Under bf16 autocast on CUDA (as the trainer runs), like ``tests/test_memory.py``'s GPU test at a
tiny size. The unrecomputed step needs far more memory than the recomputed one: pick a batch at
which it fits. Exits 1 if a gradient differs by more than ``--rtol`` of its own norm.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.runtime.device import resolve_device  # noqa: E402
from energy_flow.training import build_model  # noqa: E402
from energy_flow.training.trainer import embedding_losses  # noqa: E402
from tests.conftest import unit_rows  # noqa: E402


AUTOCAST = True     # bf16 autocast on CUDA, as the trainer runs; --fp32 turns it off


def one_step(config, state, x, y, device):
    """Loss, gradients (on the CPU), peak memory in bytes and seconds of one forward+backward."""
    model = build_model(config).to(device)
    model.load_state_dict(state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and AUTOCAST):
        result = model(x)
    loss = embedding_losses(result.outputs, y, config)[0]
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    flow_steps = int(result.flow_stats.active_per_step[:-1].sum())
    del model, result
    return float(loss.detach()), grads, peak, seconds, flow_steps


def relative_differences(a: dict, b: dict) -> list[tuple[float, str]]:
    """(|a − b| / |b|, name) per parameter."""
    return [(float((a[n] - g).norm() / g.norm().clamp_min(1e-30)), n) for n, g in b.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="optimized")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--rtol", type=float, default=1e-2,
                   help="largest allowed |g_recomputed − g_kept| / |g_kept| per parameter")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms (CUDA's atomic scatter-adds make two runs of "
                        "the same step differ otherwise; set CUBLAS_WORKSPACE_CONFIG=:4096:8 too)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per recomputed carrier call (default RECOMPUTE_CHUNK_ROWS); above the "
                        "busiest step's flows, the recomputed GRU calls have the kept path's shapes")
    p.add_argument("--fp32", action="store_true", help="no autocast, no TF32: float32 throughout")
    args = p.parse_args()
    if args.chunk_rows:
        import energy_flow.core.processor as processor
        processor.RECOMPUTE_CHUNK_ROWS = args.chunk_rows
    if args.fp32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    global AUTOCAST
    AUTOCAST = not args.fp32
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    from energy_flow.config import parse_overrides
    device = resolve_device(args.device)
    changes = {"device": str(device), "trace_enabled": False, **parse_overrides(args.set)}
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    recomputed = create_preset(args.preset, **changes)
    if recomputed.checkpoint_steps < 1:
        sys.exit(f"preset {args.preset} does not recompute (checkpoint_steps = 0): nothing to compare")
    kept = recomputed.replace(checkpoint_steps=0)
    state = {k: v.clone() for k, v in build_model(recomputed).state_dict().items()}
    x = unit_rows(recomputed.batch_size, recomputed.teacher_dim, seed=1).to(device)
    y = unit_rows(recomputed.batch_size, recomputed.teacher_dim, seed=2).to(device)
    rows = {}
    # "kept again": the same unrecomputed step a second time, the noise floor of the comparison
    for label, config in (("recomputed", recomputed), ("kept", kept), ("kept again", kept)):
        rows[label] = one_step(config, state, x, y, device)
        loss, _, peak, sec, fs = rows[label]
        print(f"{label:>10}: checkpoint_steps {config.checkpoint_steps}, batch {config.batch_size}, "
              f"loss {loss:.6f}, flow-steps {fs:,}, peak {peak / 1e9:.2f} GB, {sec:.2f} s", flush=True)
    floor = max(relative_differences(rows["kept again"][1], rows["kept"][1]))[0]
    print(f"noise floor (kept vs kept again): largest relative gradient difference {floor:.3g}")
    g_r, g_k = rows["recomputed"][1], rows["kept"][1]
    assert g_r.keys() == g_k.keys(), sorted(set(g_r) ^ set(g_k))
    worst = sorted(relative_differences(g_r, g_k), reverse=True)
    print(f"loss: recomputed − kept = {rows['recomputed'][0] - rows['kept'][0]:+.3g}")
    print(f"gradients: {len(worst)} parameters; largest relative difference (|Δg| / |g|):")
    for rel, name in worst[:5]:
        print(f"  {rel:.3g}  {name}")
    total_r = torch.cat([g.flatten() for g in g_r.values()]).double()
    total_k = torch.cat([g.flatten() for g in g_k.values()]).double()
    cos = float(torch.nn.functional.cosine_similarity(total_r, total_k, dim=0))
    print(f"whole gradient: cosine {cos:.6f}, norm ratio {float(total_r.norm() / total_k.norm()):.6f}")
    ok = worst[0][0] <= args.rtol
    print(f"gradients equal to the unrecomputed step within rtol {args.rtol:g}: {'yes' if ok else 'NO'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
