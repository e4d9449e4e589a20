"""Readers are bounded (issue 31, item 2): a valid recording mutated many ways (root attributes,
dataset dtypes, shapes, chunking, declared sizes, offsets, counts, links; tests/recording_mutants.py)
is read or refused by name by every reader — the reader API, `trace inspect`, `trace health`,
`--append`'s writer — never a traceback, a hang, or memory beyond the stated bound.

The mutants run in a child process so that its peak memory (ru_maxrss) measures what the readers
allocated; the sweep's 346 KB file made them ask for up to 295 GiB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from energy_flow.trace.recording.bounds import MAX_CHUNK_BYTES, MAX_READ_BYTES
from tests.recording_mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[1]

#: What the sweep's cases must be refused with (the mutant's name → words of the refusal).
EXPECTED = {
    "schema_version string": "must be one integer",
    "schema_version array": "must be one integer",
    "format array": "not an energy-flow recording",
    "config deeply nested": "nested too deeply",
    "batches/num_steps as strings": "dtype |S4",
    "num_steps negative": "inconsistent shapes",
    "num_flows negative": "inconsistent shapes",
    "soft link loop": "soft link loop",
    "external link": "not self-contained",
    "external storage": "not self-contained",
    "complete declares 10^10 rows": "more batches are marked complete than the file stores",
    "complete declares 10^8 complete": "more batches are marked complete than the file stores",
    "energy_hist with 10^9 bins": "more than a reader allocates",
    "plane 60000 squared": "more than a reader allocates",
    "steps/active huge chunk": "more than a reader decompresses",
    "num_steps huge": "more than a reader allocates",
    "num_steps huge, steps declared 10^10": "more than a reader allocates",
    "num_flows huge": "more than a reader allocates",
}
#: Harmless changes every reader must still read.
STILL_READ = ("soft link inside", "hard link cycle", "percentiles string")


def test_every_reader_reads_or_names_every_mutant_within_the_bound(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.recording_mutants", str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = result["outcomes"]
    assert set(outcomes) == set(MUTANTS) and len(outcomes) >= 60
    unexpected = {name: text for name, text in outcomes.items() if text.startswith("UNEXPECTED")}
    assert unexpected == {}
    for name, words in EXPECTED.items():
        assert words in outcomes[name], (name, outcomes[name])
    for name in STILL_READ:
        assert outcomes[name] == "read", (name, outcomes[name])
    grown_bytes = (result["maxrss_after_kib"] - result["maxrss_before_kib"]) * 1024
    assert grown_bytes <= MAX_READ_BYTES + MAX_CHUNK_BYTES, result
