"""Does the recording writer hold flat memory over a long run?

Appends one real batch (tiny or debug preset) N times to a fresh recording and prints the
process's RSS every N/4 appends, the RSS growth after a warm-up of N/10 appends, and the mean
time per append. ``--chunk-cache`` opens the file with HDF5's default raw-data chunk cache
(1 MiB per dataset), the setting before issue 9, to compare.

Run: ``PYTHONPATH=. python benchmarks/bench_writer_memory.py [--appends 1000] [--preset tiny]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import torch

from energy_flow.config import create_preset
from energy_flow.trace.recording import RecordingWriter
from energy_flow.training import EnergyTrainer, build_model


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=1000)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--chunk-cache", action="store_true", help="HDF5's default chunk cache (before)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = create_preset(args.preset)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(config.batch_size, config.teacher_dim, generator=g), dim=1)
    telemetry = EnergyTrainer(build_model(config), config).train_step((x, x.roll(1, 0))).telemetry
    if args.chunk_cache:
        default_file = h5py.File

        class CachedFile(default_file):
            def __init__(self, *a, **k):
                k.pop("rdcc_nbytes", None)
                super().__init__(*a, **k)

        h5py.File = CachedFile
    with tempfile.TemporaryDirectory() as tmp:
        warm = max(1, args.appends // 10)
        with RecordingWriter(Path(tmp) / "run.h5", config.to_dict(), {}) as writer:
            for i in range(args.appends):
                if i == warm:
                    rss0, t0 = rss_mib(), time.perf_counter()
                writer.append_batch(telemetry)
                if (i + 1) % max(1, args.appends // 4) == 0:
                    print(f"after {i + 1:6d} appends: RSS {rss_mib():.0f} MiB")
            per = (time.perf_counter() - t0) / (args.appends - warm)
            grown = rss_mib() - rss0
    print(f"{args.preset}, chunk cache {'on' if args.chunk_cache else 'off'}: RSS +{grown:.1f} MiB over "
          f"{args.appends - warm} appends after warm-up, {per * 1e3:.1f} ms per append")


if __name__ == "__main__":
    main()
