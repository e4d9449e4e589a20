"""Mutant verdicts per module from mutmut's result files (mutants/**/*.py.meta), as Markdown.

mutmut 3 stores one exit code per mutant; its own ``status_by_exit_code`` names them (killed,
survived, timeout, no tests, not checked, ...). A timeout counts as killed (the mutant broke
the run), as mutmut's summary counts it. Run after ``benchmarks/mutation.sh``.

Where only a sample of a module's mutants was checked (``benchmarks/mutation_sample.py``), the
share is an estimate; the last column is its 95 % Wilson score interval.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="FILE",
                        help="count only the mutants named in FILE (one per line, e.g. a sample "
                             "from mutation_sample.py), so mutants run outside it do not bias it")
    parser.add_argument("--earlier", metavar="DIR", action="append", default=[],
                        help="a copy of an earlier run's mutants/ folder: a mutant the latest run "
                             "left unchecked takes its result from there (mutmut resets decided "
                             "results when the test selection changes; a killed mutant of "
                             "unchanged source stays killed when tests are only added)")
    args = parser.parse_args()
    only = set(open(args.only, encoding="utf-8").read().split()) if args.only else None
    total: Counter = Counter()
    print("| module | " + " | ".join(COLUMNS) + " | killed / checked | 95 % interval |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        by_key = json.loads(meta.read_text())["exit_code_by_key"]
        for earlier in args.earlier:
            old_meta = Path(earlier) / meta.relative_to("mutants")
            if old_meta.exists():
                old = json.loads(old_meta.read_text())["exit_code_by_key"]
                by_key = {k: old.get(k) if v is None else v for k, v in by_key.items()}
        codes = [code for key, code in by_key.items() if only is None or key in only]
        if not codes:
            continue
        count = Counter(status_by_exit_code[c] for c in codes)
        total.update(count)
        print(_row(str(meta.relative_to("mutants")).removesuffix(".meta"), count))
    print(_row("**all**", total))


def _row(name: str, count: Counter) -> str:
    killed = count["killed"] + count["timeout"]
    checked = sum(count.values()) - count["not checked"]
    share = f"{100 * killed / checked:.1f} %" if checked else "—"
    interval = "{:.0f}–{:.0f} %".format(*(100 * v for v in wilson(killed, checked))) if checked else "—"
    other = sum(v for k, v in count.items() if k not in COLUMNS)
    cells = [str(count[c]) for c in COLUMNS]
    note = f" (+{other} other)" if other else ""
    return f"| {name}{note} | " + " | ".join(cells) + f" | {share} | {interval} |"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial share k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


if __name__ == "__main__":
    main()
