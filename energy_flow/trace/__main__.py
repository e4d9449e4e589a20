"""``python -m energy_flow.trace inspect PATH.h5``: what a recording holds, without the app;
``python -m energy_flow.trace health PATH.h5``: its health verdicts (see energy_flow.diagnostics).

Useful on a server after a headless ``--record`` run, and for telling at once why a file does
not open (the same one-line reason the app shows; exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from energy_flow.diagnostics import cli as health_cli
from energy_flow.trace.recording import Recording, RecordingError, open_recording

EXIT_BAD_FILE = 2


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


def summary(rec: Recording) -> str:
    """A multi-line, human-readable summary of an open recording."""
    n = rec.num_batches
    size = rec.path.stat().st_size
    steps = rec.batch_column("num_steps")
    training_steps = rec.batch_column("step")
    known = training_steps[training_steps >= 0]
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
        loss = rec.batch_column("loss")
        if np.isfinite(loss).any():
            lines.append(f"  loss              first {loss[0]:.4g}, last {loss[-1]:.4g}")
    lines.append("  provenance")
    lines += [f"    {line}" for line in json.dumps(rec.provenance, indent=2, sort_keys=True).splitlines()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m energy_flow.trace",
                                     description="Tools for energy-flow recordings.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="summarise a recording (exit status 2 if it cannot be read)")
    inspect.add_argument("path", type=Path)
    health = commands.add_parser("health", help="health verdicts of every recorded batch (exit status 1 "
                                 "if a check fails, 2 if the file cannot be read)")
    health_cli.add_arguments(health)
    args = parser.parse_args(argv)
    if args.command == "health":
        return health_cli.run(args)
    try:
        with open_recording(args.path) as rec:
            text = summary(rec)
    except RecordingError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_FILE
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
