"""``python -m energy_flow.trace health FILE.h5``: the verdicts of a recording, for a terminal
or a CI gate. Exit status: 0 nothing failed, 1 a check failed (or warned, with
``--fail-on warning``), 2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from energy_flow.diagnostics.sources import assess_recording_batch
from energy_flow.diagnostics.text import counts_line, report_lines, summary_lines, worst_level
from energy_flow.diagnostics.verdict import Level
from energy_flow.trace.recording import RecordingError, open_recording

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_BAD_FILE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a recording (.h5) written by the trainer or by FlowRecorder")
    parser.add_argument("--batch", type=int, default=None,
                        help="judge only this batch (negative counts from the end: -1 is the last)")
    parser.add_argument("--per-batch", action="store_true",
                        help="print every verdict of every batch instead of a summary over batches")
    parser.add_argument("--fail-on", choices=("failure", "warning"), default="failure",
                        help="the level that makes the exit status non-zero (default: failure)")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # The streams are looked up per call: a default of sys.stdout would be the one of the moment
    # this module was imported (pytest's capsys, or a redirected stream, would never see output).
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        with open_recording(args.path) as rec:
            n = rec.num_batches
            if n == 0:
                print(f"{args.path}: no complete batch to judge", file=err)
                return EXIT_BAD_FILE
            if args.batch is not None:
                if not -n <= args.batch < n:
                    print(f"{args.path}: --batch {args.batch} is out of range ({n} complete batches)", file=err)
                    return EXIT_BAD_FILE
                indices = [args.batch % n]
            else:
                indices = list(range(n))
            reports = [(i, assess_recording_batch(rec, i)) for i in indices]
    except RecordingError as exc:
        print(exc, file=err)
        return EXIT_BAD_FILE
    if len(reports) == 1 or args.per_batch:
        for i, report in reports:
            print(f"batch {i} of {n}: {counts_line(report)}", file=out)
            for line in report_lines(report):
                print(f"  {line}", file=out)
    else:
        print(f"{args.path}: {len(reports)} batches", file=out)
        for line in summary_lines(reports):
            print(f"  {line}", file=out)
    worst = worst_level(r for _, r in reports)
    gate = Level.WARNING if args.fail_on == "warning" else Level.FAILURE
    verdict = "UNHEALTHY" if worst >= gate else "no check failed" if worst < Level.WARNING else "warnings only"
    print(f"{verdict} (worst level: {worst.label})", file=out)
    return EXIT_UNHEALTHY if worst >= gate else EXIT_HEALTHY
