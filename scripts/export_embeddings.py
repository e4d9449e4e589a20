"""Encode a dataset with the teacher once and write it as embeddings (.npz: arrays ``inputs`` and
``targets``, float32), for a machine that has no teacher installed (a GPU box reached by copying
files): ``main.py --data FILE.npz`` and ``python -m energy_flow.evaluate --data FILE.npz`` read it
with the same rows in the same order, so splits and baselines are the same as with the dataset.

    .venv/bin/python scripts/export_embeddings.py --data wordnet:3000 --out .devdata/wn3000.npz

Bad input ends in one line naming the flag or file (exit status 2); ``--out`` is checked before
the encoding starts, and written atomically (the old file stays whole if the write fails).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.files.atomic import atomic_write  # noqa: E402
from energy_flow.runtime.broken_pipe import run_cli  # noqa: E402
from energy_flow.runtime.cli_errors import OneLineParser, fails_by_name  # noqa: E402
from energy_flow.config import create_preset  # noqa: E402
from energy_flow.headless import load_data  # noqa: E402
from energy_flow.files.output_paths import check_distinct, check_output_path  # noqa: E402

PROG = "export_embeddings.py"


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="as main.py's --data; default: the bundled corpus")
    p.add_argument("--teacher", default=None, help="a local sentence-transformers model directory")
    p.add_argument("--out", required=True, type=Path, help="the .npz file to write (its folder must exist)")
    args = p.parse_args(argv)
    if args.out.suffix != ".npz":
        raise ValueError(f"--out {args.out}: must end in .npz")
    check_distinct({"--data": args.data, "--out": args.out})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    check_output_path(args.out, "--out")
    data = load_data(create_preset("debug", device="cpu"), args.data, args.teacher)
    with atomic_write(args.out, "embeddings") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, inputs=data.inputs.numpy().astype(np.float32), targets=data.targets.numpy().astype(np.float32))
    print(f"{args.out}: {len(data)} pairs × {data.dim} from {data.provenance.source}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(lambda: fails_by_name(PROG, main)))
