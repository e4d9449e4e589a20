"""Marginal memory of a training step: what each extra flow costs, as a slope between batch sizes.

    .venv/bin/python benchmarks/bench_marginal_memory.py [--batches 2,4] [--lattice 8]
        [--max-steps 40] [--checkpoint-steps 6] [--malloc mmap128k,default,trim,arena1] [--json out.json]
    .venv/bin/python benchmarks/bench_marginal_memory.py --report out.json   # print a saved run again

The optimized preset's model (3×1024 GRU, neuron 64, energy 16, float32, CPU) on a reduced start
plane (``--lattice``² cells), at a fixed flow capacity, so that everything that does not grow
with the flows (parameters, AdamW moments, the capacity-sized flow state and its copies) cancels
in the difference between two batch sizes. Each batch size runs in its own process: a warm-up
step, then

1. one train step with the process's peak RSS reset before it (``/proc/self/clear_refs`` 5): the
   peak over the RSS at its start is what the machine had to provide;
2. one forward under :class:`energy_flow.memory.saved.SavedTensorLedger`: the bytes autograd keeps
   between forward and backward;
3. one forward + loss + backward, then one train step, under
   :func:`energy_flow.memory.timeline.measure_live_tensors`: torch's live tensor bytes at the peak
   (over the call's start), by phase (forward, backward, recomputation) and by the line that
   allocated them. The first is the model's own cost; the second adds the optimiser and the
   trainer's per-step summaries.

The slopes are printed per flow-step (the flows alive before each step, summed over steps) and per
flow of the busiest step (the most flows alive at once), because with recomputed segments the peak
follows the second: only one segment is recomputed at a time. ``--malloc`` repeats step 1 under
glibc settings (``arena1``: ``MALLOC_ARENA_MAX=1``; ``mmap128k``: ``MALLOC_MMAP_THRESHOLD_=131072``,
which also turns off glibc's dynamic threshold, so every block of 128 KiB or more is mapped on its
own and returned at free; ``trim``: ``malloc_trim(0)`` before the measured step; ``default``: the
same settings again, in new processes, to show how much the peak varies), to tell the allocator's
share from torch's. During the RSS step a thread samples the RSS and glibc's ``mallinfo2`` every
2 ms: at the RSS peak, the bytes malloc has handed out and not got back ("in use") and the free
bytes glibc holds in its heaps without returning them to the system.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MALLOC = {
    "default": {},
    "trim": {},  # default settings, malloc_trim(0) between the warm-up and the measured step
    "arena1": {"MALLOC_ARENA_MAX": "1"},
    "mmap128k": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}


def _status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


class MallocSampler(threading.Thread):
    """Samples, every ``interval`` seconds while a step runs, the RSS and glibc's ``mallinfo2``
    (all arenas): bytes handed out by malloc and still in use (heap blocks in use + mapped blocks),
    and free bytes glibc holds inside its heaps. Torch releases the GIL inside its ops and in
    backward, so the sampler runs alongside them. Keeps the sample at the highest RSS and the
    highest in-use total."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval = interval
        self._mallinfo2 = ctypes.CDLL(None).mallinfo2
        self._mallinfo2.restype = _Mallinfo2
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._halt = threading.Event()
        self.at_rss_peak = {"rss": 0}
        self.max_in_use = 0
        self.samples = 0

    def sample(self) -> dict:
        info = self._mallinfo2()
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * self._page
        return {"rss": rss, "in_use": info.uordblks + info.hblkhd, "heap_free": info.fordblks,
                "mapped": info.hblkhd}

    def run(self) -> None:
        while not self._halt.is_set():
            s = self.sample()
            self.samples += 1
            self.max_in_use = max(self.max_in_use, s["in_use"])
            if s["rss"] > self.at_rss_peak["rss"]:
                self.at_rss_peak = s
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ---------------------------------------------------------------------- one batch size (child)
def child(args) -> dict:
    import torch

    from energy_flow.config import create_optimized_config
    from energy_flow.memory.saved import SavedTensorLedger, flow_steps
    from energy_flow.memory.estimate import estimate_memory
    from energy_flow.memory.timeline import measure_live_tensors
    from energy_flow.training import build_model
    from energy_flow.training.trainer import EnergyTrainer, embedding_losses
    from tests.conftest import unit_rows

    torch.set_num_threads(args.threads)
    config = create_optimized_config(
        lattice_width=args.lattice, lattice_height=args.lattice, batch_size=args.batch, max_active_flows=args.capacity, max_steps=args.max_steps,
        checkpoint_steps=args.checkpoint_steps, trace_enabled=not args.no_trace, device="cpu")
    trainer = EnergyTrainer(build_model(config), config)
    x, y = unit_rows(args.batch, seed=1), unit_rows(args.batch, seed=2)
    rss_model = _status("VmRSS")
    trainer.train_step((x, y))  # warm-up: optimiser state, thread pools, the allocator's first growth
    rss_warmup_peak = _status("VmHWM")
    if args.malloc == "trim":  # hand glibc's free heap memory back before the measured step
        ctypes.CDLL(None).malloc_trim(0)

    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    rss_start = _status("VmRSS")
    sampler = MallocSampler()
    start = sampler.sample()
    sampler.start()
    t0 = time.perf_counter()
    report = trainer.train_step((x, y))
    seconds = time.perf_counter() - t0
    sampler.stop()
    out = {"batch": args.batch, "seconds": seconds,
           "rss_peak": _status("VmHWM"), "rss_start": rss_start, "rss_after": _status("VmRSS"),
           "rss_model": rss_model, "rss_warmup_peak": rss_warmup_peak,
           "malloc_start": start, "malloc_at_rss_peak": sampler.at_rss_peak,
           "malloc_max_in_use": sampler.max_in_use, "malloc_samples": sampler.samples,
           "flow_steps": flow_steps(report.flow_stats.active_per_step),
           "busiest_step": int(max(report.flow_stats.active_per_step)),
           "steps": report.flow_stats.steps, "malloc": args.malloc}
    estimate = estimate_memory(config)
    out["estimate"] = {"minimum": estimate.minimum_bytes, "worst_case": estimate.worst_case_bytes,
                       "activation_min": estimate.activation_min_bytes,
                       "activation_max": estimate.activation_max_bytes}
    if args.rss_only:
        return out

    model = trainer.processor
    with SavedTensorLedger(model) as ledger:
        model.train()
        result = model(x)
    out["saved"] = ledger.result.total
    out["saved_by_region"] = dict(ledger.result.by_region)
    del result, ledger

    def forward_backward():
        result = model(x)
        embedding_losses(result.outputs, y, config)[0].backward()

    # the model's own cost (forward, loss, backward), then the whole train step (optimiser and the
    # trainer's per-step summaries included); gradients freed first: the profiler would not see it
    trainer.optimizer.zero_grad(set_to_none=True)
    _, live = measure_live_tensors(forward_backward)
    out.update(live_peak=live.peak_bytes, by_phase=live.by_phase(), phase_peaks=live.phase_peaks,
               at_peak=[[p, s, b] for (p, s), b in live.at_peak.items()])
    trainer.optimizer.zero_grad(set_to_none=True)
    _, step = measure_live_tensors(lambda: trainer.train_step((x, y)))
    out.update(step_live_peak=step.peak_bytes,
               step_at_peak=[[p, s, b] for (p, s), b in step.at_peak.items()])
    return out


def run_child(args, batch: int, malloc: str, rss_only: bool) -> dict:
    capacity = args.capacity or round(args.capacity_ratio * batch * args.lattice ** 2)
    cmd = [sys.executable, __file__, "--child", "--batch", str(batch), "--lattice", str(args.lattice),
           "--capacity", str(capacity), "--max-steps", str(args.max_steps),
           "--checkpoint-steps", str(args.checkpoint_steps), "--threads", str(args.threads), "--malloc", malloc]
    cmd += ["--no-trace"] * args.no_trace + ["--rss-only"] * rss_only
    env = {**os.environ, **MALLOC[malloc], "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"batch {batch} ({malloc}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- slopes (parent)
def slope(rows: list[dict], value) -> tuple[float, float]:
    """Least-squares slope of ``value(row)`` per flow-step and per flow of the busiest step."""
    import numpy as np

    v = np.array([value(r) for r in rows], dtype=float)
    per = []
    for key in ("flow_steps", "busiest_step"):
        x = np.array([r[key] for r in rows], dtype=float)
        per.append(float(np.polyfit(x, v, 1)[0]))
    return per[0], per[1]


RSS_LINES = {
    "peak RSS of the measured step": lambda r: r["rss_peak"],
    "  RSS at its start (kept from the warm-up step)": lambda r: r["rss_start"],
    "  at the RSS peak: in use by malloc (mallinfo2)": lambda r: r["malloc_at_rss_peak"]["in_use"],
    "  at the RSS peak: free, held in glibc's heaps": lambda r: r["malloc_at_rss_peak"]["heap_free"],
    "  highest in use by malloc during the step": lambda r: r["malloc_max_in_use"],
}


def _print_slopes(rows: list[dict], lines: dict) -> None:
    for name, value in lines.items():
        try:
            a, b = slope(rows, value)
        except KeyError:  # a measurement an older run did not make
            continue
        print(f"{name:52s} {a / 1024:>10.2f} KiB {b / 1024:>13.1f} KiB")


def report(args, rows: list[dict], rss_variants: dict[str, list[dict]]) -> None:
    capacity = args.capacity or f"{getattr(args, 'capacity_ratio', None)} × initial flows"
    print(f"\nlattice {args.lattice}×{args.lattice}, capacity {capacity}, max_steps {args.max_steps}, "
          f"checkpoint_steps {args.checkpoint_steps}, trace {'off' if args.no_trace else 'on'}, "
          f"3×1024 GRU float32, {args.threads} torch threads; load average before {args.load_before}, "
          f"after {getattr(args, 'load_after', '?')}")
    print(f"{'batch':>5} {'flow-steps':>10} {'busiest':>8} {'steps':>5} {'s/step':>7} {'RSS model':>10} "
          f"{'warm-up':>10} {'RSS start':>10} {'peak RSS':>10} {'torch f+b':>10} {'torch step':>10} {'saved':>10}")
    print(f"{'':>5} {'':>10} {'':>8} {'':>5} {'':>7} {'MB':>10} {'peak MB':>10} {'MB':>10} {'MB':>10} "
          f"{'MB (+start)':>10} {'MB (+start)':>10} {'MB':>10}")
    for r in rows:
        print(f"{r['batch']:>5} {r['flow_steps']:>10,} {r['busiest_step']:>8,} {r['steps']:>5} {r['seconds']:>7.1f} "
              f"{r['rss_model'] / 1e6:>10.1f} {r['rss_warmup_peak'] / 1e6:>10.1f} {r['rss_start'] / 1e6:>10.1f} {r['rss_peak'] / 1e6:>10.1f} "
              f"{r['live_peak'] / 1e6:>10.1f} {r['step_live_peak'] / 1e6:>10.1f} {r['saved'] / 1e6:>10.1f}")
    if all("estimate" in r for r in rows):
        print("energy_flow.memory.estimate for these configs (a training step, float32): "
              + "; ".join(f"batch {r['batch']}: {r['estimate']['minimum'] / 1e6:.0f}–"
                          f"{r['estimate']['worst_case'] / 1e6:.0f} MB" for r in rows))
    print(f"\n{'slope (least squares over the batch sizes)':52s} {'per flow-step':>14} {'per busiest flow':>17}")
    print("glibc default:")
    _print_slopes(rows, RSS_LINES)
    lines = {"torch live tensors, train step's peak": lambda r: r["step_live_peak"],
             "torch live tensors, forward+backward's peak": lambda r: r["live_peak"],
             "saved for backward (forward's graph)": lambda r: r["saved"]}
    for phase in ("forward", "recompute", "backward", "optimizer"):
        lines[f"  at that peak, allocated in {phase}"] = lambda r, p=phase: r["by_phase"].get(p, 0)
    for phase in ("forward", "backward+recompute"):
        lines[f"  {phase}: own peak (its allocations live at once)"] = \
            lambda r, p=phase: r.get("phase_peaks", {}).get(p, 0)
    print("torch (profiler, exact):")
    _print_slopes(rows, lines)
    for malloc, variant in rss_variants.items():
        if len(variant) < 2:
            continue
        settings = (", ".join(f"{k}={v}" for k, v in MALLOC[malloc].items())
                    or {"trim": "malloc_trim(0) before the step"}.get(malloc, "no settings: a repeat"))
        print(f"glibc {malloc} ({settings}); peak RSS per batch size: "
              + ", ".join(f"{r['rss_peak'] / 1e6:.1f}" for r in variant) + " MB")
        _print_slopes(variant, RSS_LINES)

    # sites: the live bytes at the peak that grow with the batch
    sites: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        for phase, site, nbytes in r["at_peak"]:
            sites.setdefault((phase, site), [0] * len(rows))[i] += nbytes
    grow = []
    for key, values in sites.items():
        a, b = slope([{**r, "v": v} for r, v in zip(rows, values)], lambda r: r["v"])
        grow.append((b, a, key, values))
    grow.sort(key=lambda g: -abs(g[0]))
    print(f"\nlive at the forward+backward's peak, by allocating line (largest slopes; MB at each batch size):")
    for b, a, (phase, site), values in grow[:args.top]:
        sizes = " / ".join(f"{v / 1e6:.1f}" for v in values)
        print(f"  {b / 1024:>8.1f} KiB/busiest flow {a / 1024:>7.2f} KiB/flow-step  {phase:9s} [{sizes}] {site[:150]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="2,4", help="comma-separated batch sizes (at least two)")
    p.add_argument("--lattice", type=int, default=8, help="start plane side (the preset's is 100)")
    p.add_argument("--capacity", type=int, default=None, help="max_active_flows (default 4 × the largest "
                   "batch's initial flows, the same for every batch)")
    p.add_argument("--capacity-ratio", type=float, default=None, help="instead: max_active_flows = this × "
                   "each batch's initial flows (the optimized preset's ratio is 1.5), so the flow state grows too")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--checkpoint-steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-trace", action="store_true", help="trace_enabled = false")
    p.add_argument("--malloc", default="", help=f"glibc settings to repeat the RSS step under, in new processes: "
                   f"{', '.join(MALLOC)} (default again shows how much the default's peak varies)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--report", metavar="JSON", help="print the report of a saved --json run and exit")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        report(argparse.Namespace(**saved["args"]), saved["rows"], saved["variants"])
        return
    batches = [int(b) for b in args.batches.split(",")]
    if len(batches) < 2:
        p.error("--batches needs at least two sizes for a slope")
    if args.capacity_ratio is None:
        args.capacity = args.capacity or 4 * max(batches) * args.lattice ** 2
    args.load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows: list[dict] = []
    variants: dict[str, list[dict]] = {}

    def save() -> None:  # after every process, so a long run's measurements survive an interruption
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "variants": variants},
                                                  indent=1))

    for b in batches:
        rows.append(run_child(args, b, "default", rss_only=False))
        save()
    for m in args.malloc.split(","):  # "default" here repeats the default's RSS step in new processes
        if m:
            for b in batches:
                variants.setdefault(m, []).append(run_child(args, b, m, rss_only=True))
                save()
    args.load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    save()
    report(args, rows, variants)

if __name__ == "__main__":
    main()
