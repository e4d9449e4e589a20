"""What the model reaches next to the baselines, on a held-out split: a thin front for
:mod:`energy_flow.evaluate`, which does the training, the baselines and the scoring.

    .venv/bin/python benchmarks/bench_learning.py [--batches 300] [any energy_flow.evaluate option]

Defaults: the bundled corpus, debug preset, 300 batches, seed 0, split 90/10. For the
WordNet figures in docs/BENCHMARKS.md pass ``--data wordnet:3000 --minutes 15``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_flow.evaluate import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--batches" or a.startswith("--batches=") for a in argv):
        argv = ["--batches", "300", *argv]
    sys.exit(main(argv))
