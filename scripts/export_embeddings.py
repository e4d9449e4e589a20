"""Encode a dataset with the teacher once and write it as embeddings (.npz: arrays ``inputs`` and
``targets``, float32), for a machine that has no teacher installed (a GPU box reached by copying
files): ``main.py --data FILE.npz`` and ``python -m energy_flow.evaluate --data FILE.npz`` read it
with the same rows in the same order, so splits and baselines are the same as with the dataset.

    .venv/bin/python scripts/export_embeddings.py --data wordnet:3000 --out .devdata/wn3000.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.config import create_preset  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="as main.py's --data; default: the bundled corpus")
    p.add_argument("--teacher", default=None, help="a local sentence-transformers model directory")
    p.add_argument("--out", required=True, type=Path, help="the .npz file to write")
    args = p.parse_args()
    if args.out.suffix != ".npz":
        sys.exit(f"--out {args.out}: must end in .npz")
    data = load_data(create_preset("debug", device="cpu"), args.data, args.teacher)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".partial.npz")
    np.savez(tmp, inputs=data.inputs.numpy().astype(np.float32), targets=data.targets.numpy().astype(np.float32))
    tmp.replace(args.out)     # a failed write leaves no half file under the real name
    print(f"{args.out}: {len(data)} pairs × {data.dim} from {data.provenance.source}")


if __name__ == "__main__":
    main()
