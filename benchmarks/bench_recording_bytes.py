"""Bytes per batch of each recording dataset at a preset (schema 2's additions in particular).

Runs real forward passes of the model (no training, so it is quick), appends them to a
recording, and prints each dataset's stored bytes divided by the number of batches (h5py
``get_storage_size``: chunks actually allocated, after compression). Figures go into
docs/recording-format.md, "Measured figures".

    PYTHONPATH=. python benchmarks/bench_recording_bytes.py --preset debug --batches 4
"""

from __future__ import annotations

import argparse
import os
import tempfile

import h5py
import torch

from energy_flow.config import PRESETS
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.trace import RecordingWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", choices=sorted(PRESETS))
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = PRESETS[args.preset]()
    torch.manual_seed(0)
    model = FlowProcessor(EnergyLattice(config), SimpleNeuron(config), config)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bytes.h5")
        with RecordingWriter(path, config.to_dict(), {}) as writer:
            for i in range(args.batches):
                with torch.no_grad():
                    x = torch.nn.functional.normalize(torch.randn(config.batch_size, config.teacher_dim), dim=1)
                    tel = model(x).telemetry
                writer.append_batch(tel, {"step": i})
                print(f"batch {i}: {tel.num_steps} steps, {tel.flows.num_flows} sampled flows, "
                      f"plane_energy_steps {tel.plane_energy_steps.shape} ({tel.plane_energy_steps.nbytes} B raw)")
        sizes: dict[str, int] = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: sizes.__setitem__(name, obj.id.get_storage_size())
                         if isinstance(obj, h5py.Dataset) else None)
        print(f"file: {os.path.getsize(path) / args.batches:,.0f} B per batch")
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
            print(f"  {name:36s} {size / args.batches:12,.0f} B per batch")


if __name__ == "__main__":
    main()
