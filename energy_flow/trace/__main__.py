"""``python -m energy_flow.trace inspect PATH.h5``: what a recording holds, without the app;
``python -m energy_flow.trace health PATH.h5``: its health verdicts (see energy_flow.diagnostics).

Useful on a server after a headless ``--record`` run, and for telling at once why a file does
not open (the same one-line reason the app shows; exit status 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from energy_flow.runtime.broken_pipe import run_cli
from energy_flow.runtime.cli_errors import OneLineParser, fails_by_name
from energy_flow.diagnostics import cli as health_cli
from energy_flow.trace.figures import BATCH
from energy_flow.trace.recording import Recording, RecordingError, bounds, open_recording, recorded_series
from energy_flow.trace.telemetry import REASON_NAMES

EXIT_BAD_FILE = 2
PROG = "python -m energy_flow.trace"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _range(values: np.ndarray) -> str:
    if values.size == 0:
        return "–"
    lo, hi = int(values.min()), int(values.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi} (mean {values.mean():.1f})"


#: Batches listed by `inspect` without --all: the first and the last half of this many.
LISTED_BATCHES = 20


def _segment_sums(rec: Recording, name: str, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-batch sums of a steps/* or flows/* dataset over each batch's rows (first axis)."""
    values = rec.dataset(name)
    out = np.zeros((start.shape[0], *values.shape[1:]), values.dtype)
    for i, (s, c) in enumerate(zip(start, count)):
        bounds.check_rows(values, int(s), int(c), rec.path, name, "a batch")   # offsets come from the file
        out[i] = values[s:s + c].sum(axis=0)
    return out


def _outcomes(rec: Recording, show_all: bool) -> list[str]:
    """One line per batch: how its flows ended (built-in and the model's own reasons), and
    whether it had a training step."""
    n = rec.num_batches
    if not n:
        return []
    shown = np.arange(n)
    if not show_all and n > LISTED_BATCHES:
        half = LISTED_BATCHES // 2
        shown = np.r_[np.arange(half), np.arange(n - half, n)]
    start = rec.batch_column("step_start")[shown]
    rows = rec.batch_column("num_steps")[shown].astype(np.int64) + 1
    landed = _segment_sums(rec, "steps/landed", start, rows).sum(axis=1)
    faded = _segment_sums(rec, "steps/faded", start, rows)
    timed_out = _segment_sums(rec, "steps/timed_out", start, rows)
    total = rec.batch_column("total_flows")[shown]
    custom = rec.reason_names[len(REASON_NAMES):]
    lines = ["  outcomes per batch (flows: landed / faded / timed out"
             + (f" / {' / '.join(custom)} among the sampled flows" if custom else "") + ")"]
    for k, i in enumerate(shown):
        if k and shown[k - 1] != i - 1:
            lines.append(f"    … {i - shown[k - 1] - 1} batches not listed (--all lists every batch)")
        fields = rec.report_fields(int(i))
        if fields is None:
            training = "no training step"
        else:
            step = fields.get(BATCH.step.key)
            training = (f"training step {'unknown' if step is None else step}, "
                        f"loss {fields.get(BATCH.loss.key, float('nan')):.4g}")
        text = (f"    batch {i + 1} ({training}): flows {total[k]}: landed {landed[k]}, faded {faded[k]}, "
                f"timed out {timed_out[k]}")
        if custom:
            reasons = rec.batch_reasons(int(i))
            text += "".join(f", {name} {int((reasons == code).sum())}"
                            for code, name in enumerate(custom, start=len(REASON_NAMES)))
        lines.append(text)
    return lines


def summary(rec: Recording, show_all: bool = False) -> str:
    """A multi-line, human-readable summary of an open recording."""
    n = rec.num_batches
    size = rec.path.stat().st_size
    steps = rec.batch_column("num_steps")
    training_steps = recorded_series(rec, BATCH.step)
    known = training_steps[np.isfinite(training_steps)].astype(np.int64)
    lines = [
        f"{rec.path}",
        f"  format            energy-flow-recording, schema version {rec.schema_version}",
        f"  file size         {_size(size)} ({size} bytes)",
        f"  batches           {n} complete" + (f", {_size(size / n)} per batch (mean)" if n else ""),
        f"  steps per batch   {_range(steps)}",
        f"  flows per batch   {_range(rec.batch_column('total_flows'))}",
        f"  sampled flows     {_range(rec.batch_column('num_flows'))}",
        f"  training steps    {f'{known[0]}–{known[-1]}' if known.size else 'not recorded'}",
    ]
    if n:
        info = rec.batch_info(n - 1)
        lines.append(f"  lattice           {'×'.join(map(str, info.lattice_shape))}, start mode "
                     f"{info.start_mode}, output planes at z = {', '.join(f'{z:g}' for z in info.plane_z)}")
        loss = recorded_series(rec, BATCH.loss)
        if np.isfinite(loss).any():
            lines.append(f"  loss              first {loss[0]:.4g}, last {loss[-1]:.4g}")
    lines += _outcomes(rec, show_all)
    lines.append("  provenance")
    lines += [f"    {line}" for line in json.dumps(rec.provenance, indent=2, sort_keys=True).splitlines()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Tools for energy-flow recordings.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="summarise a recording (exit status 2 if it cannot be read)")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--all", action="store_true", help=f"list every batch (default: the first and "
                                                             f"last {LISTED_BATCHES // 2})")
    health = commands.add_parser("health", help="health verdicts of every recorded batch (exit status 1 "
                                 "if a check fails, 2 if the file cannot be read)")
    health_cli.add_arguments(health)
    args = parser.parse_args(argv)
    if args.command == "health":
        return health_cli.run(args)
    try:
        with open_recording(args.path) as rec:
            text = summary(rec, args.all)
    except RecordingError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_FILE
    print(text)
    return 0


def cli(prog: str = "energy-flow-trace") -> int | str | None:
    """The ``energy-flow-trace`` command (pyproject.toml's ``[project.scripts]``); bad input is one
    line naming it and exit status 2."""
    return run_cli(lambda: fails_by_name(prog, main))


if __name__ == "__main__":
    sys.exit(cli(PROG))
