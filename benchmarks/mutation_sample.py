"""A seeded random sample of mutant names per module, for ``benchmarks/mutation.sh``.

The whole scope (energy_flow/core and the health checks) has about 4,200 mutants: 3–4 hours
with one worker on the 2-core build machine. A uniform sample per module estimates each
module's killed share (with a binomial confidence interval, see mutation_summary.py) in a
fraction of that time:

    bash benchmarks/mutation.sh "energy_flow.core.neuron*"        # once, to generate mutants/
    bash benchmarks/mutation.sh $(.venv/bin/python benchmarks/mutation_sample.py --per-module 80)

Mutant names come from mutmut's own files (``mutants/**/*.py.meta``), so the mutants must have
been generated first (any ``mutmut run`` does that).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def sample(per_module: int, seed: int, root: Path = Path("mutants")) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    for meta in sorted(root.rglob("*.py.meta")):
        keys = sorted(json.loads(meta.read_text())["exit_code_by_key"])
        names += keys if len(keys) <= per_module else sorted(rng.sample(keys, per_module))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-module", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path("mutants").is_dir():
        raise SystemExit("no mutants/ folder: run benchmarks/mutation.sh once to generate the mutants")
    print("\n".join(sample(args.per_module, args.seed)))


if __name__ == "__main__":
    main()
