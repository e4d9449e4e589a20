"""What recording costs, at the debug preset: training overhead, bytes per batch, read latency.

Measures, with a real FlowProcessor and real telemetry:

1. one training step (forward + backward + Adam step) with and without appending its batch to
   a recording, and the ratio;
2. bytes per batch and append time for each compression filter;
3. the time to open a ~1 GB recording and rebuild its first batch (and a middle one), in a
   fresh process, as the app does when a recording is opened. The file is built in a temporary
   directory by appending the measured batches over and over, and deleted afterwards.

Run: ``PYTHONPATH=. python benchmarks/bench_recording.py [--steps 8] [--gb 1.0] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from energy_flow.config import create_debug_config
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.trace.recording import COMPRESSIONS, RecordingWriter

REPO = Path(__file__).resolve().parents[1]

_READ_FIRST_BATCH = """
import json, sys, time
t0 = time.perf_counter()
from energy_flow.trace import open_recording
t1 = time.perf_counter()
rec = open_recording(sys.argv[1])
t2 = time.perf_counter()
rec.batch(0)
t3 = time.perf_counter()
rec.batch(rec.num_batches // 2)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_batch_s": t3 - t2,
                  "middle_batch_s": t4 - t3, "batches": rec.num_batches}))
"""


def evict_from_page_cache(path: Path) -> None:
    """Drop this one file's pages from the OS cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def train_step(processor: FlowProcessor, optimizer: torch.optim.Optimizer, batch: int, dim: int):
    x = torch.nn.functional.normalize(torch.randn(batch, dim), dim=1)
    y = torch.nn.functional.normalize(torch.randn(batch, dim), dim=1)
    t0 = time.perf_counter()
    result = processor(x)
    loss = torch.nn.functional.mse_loss(result.outputs, y) \
        + (1 - torch.nn.functional.cosine_similarity(result.outputs, y, dim=1)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t0, result.telemetry, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="measured training steps")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the large recording, in GB")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on 2 cores the app leaves one to the GUI)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = create_debug_config()
    torch.manual_seed(0)
    processor = FlowProcessor(EnergyLattice(config), SimpleNeuron(config), config)
    optimizer = torch.optim.Adam(processor.parameters(), lr=config.learning_rate)
    print(f"debug preset: {config.lattice_width}×{config.lattice_height}×{config.lattice_depth}, "
          f"batch {config.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory(prefix="bench_recording_") as tmp:
        tmp_dir = Path(tmp)
        # 1. overhead on the training step --------------------------------------------------
        train_step(processor, optimizer, config.batch_size, config.teacher_dim)   # warm-up
        steps, writes, tels = [], [], []
        path = tmp_dir / "run.h5"
        with RecordingWriter(path, config.to_dict(), {"model_name": "bench"}) as writer:
            for i in range(args.steps):
                seconds, tel, loss = train_step(processor, optimizer, config.batch_size, config.teacher_dim)
                t0 = time.perf_counter()
                writer.append_batch(tel, {"step": i + 1, "loss": loss})
                writes.append(time.perf_counter() - t0)
                steps.append(seconds)
                tels.append(tel)
        step_s, write_s = statistics.median(steps), statistics.median(writes)
        flows = statistics.mean(t.flows.num_flows for t in tels)
        print(f"train step (forward+backward+Adam): median {step_s * 1e3:.0f} ms over {args.steps}")
        print(f"append_batch (lzf):                 median {write_s * 1e3:.1f} ms "
              f"(mean {statistics.mean(writes) * 1e3:.1f} ms); {flows:.0f} sampled flows × "
              f"{tels[0].num_steps + 1} steps per batch")
        print(f"recording overhead: {write_s / step_s * 100:.1f} % of a train step "
              f"(step with recording / without = {(step_s + write_s) / step_s:.3f})")

        # 2. bytes and time per batch by filter ---------------------------------------------
        print("filter   bytes/batch   append ms (median)")
        for name in ("lzf", "gzip-1", "gzip-4", "none"):
            assert name in COMPRESSIONS
            out = tmp_dir / f"{name}.h5"
            times = []
            with RecordingWriter(out, config.to_dict(), {}, compression=name) as writer:
                for tel in tels:
                    t0 = time.perf_counter()
                    writer.append_batch(tel, {})
                    times.append(time.perf_counter() - t0)
            print(f"{name:8s} {out.stat().st_size / len(tels):12,.0f}   {statistics.median(times) * 1e3:8.1f}")

        # 3. first batch of a large recording -----------------------------------------------
        big = tmp_dir / "big.h5"
        target = int(args.gb * 1e9)
        t0 = time.perf_counter()
        with RecordingWriter(big, config.to_dict(), {"model_name": "bench"}) as writer:
            while big.stat().st_size < target:
                writer.append_batch(tels[writer.num_batches % len(tels)], {"step": writer.num_batches})
            batches = writer.num_batches
        size = big.stat().st_size
        print(f"large recording: {size / 1e9:.2f} GB, {batches} batches, written in "
              f"{time.perf_counter() - t0:.0f} s ({size / batches:,.0f} bytes per batch)")
        for cache in ("cold", "warm"):
            if cache == "cold":
                evict_from_page_cache(big)
            done = subprocess.run([sys.executable, "-c", _READ_FIRST_BATCH, str(big)], capture_output=True,
                                  text=True, check=True, cwd=REPO,
                                  env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
            r = json.loads(done.stdout)
            print(f"fresh process, {cache} page cache: import {r['import_s']:.2f} s, open "
                  f"{r['open_s'] * 1e3:.1f} ms, first batch {r['first_batch_s'] * 1e3:.1f} ms, "
                  f"batch {r['batches'] // 2} {r['middle_batch_s'] * 1e3:.1f} ms; "
                  f"open + first batch = {(r['open_s'] + r['first_batch_s']) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
