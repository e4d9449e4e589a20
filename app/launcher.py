"""Energy Flow Studio's command line, run by ``python main.py`` and by the ``energy-flow-studio``
command: the app by default; ``--headless`` trains without a window; ``--open PATH.h5`` replays
a recording. With no display the app is not started: the command says so in one line and runs
the headless trainer instead.

Why it lives here and imports nothing of Qt at module level: an installed command needs a
module inside a package, and ``--headless`` must work where only the library is installed
(``pip install energy-flow-studio``, no ``[app]`` extra). The window's modules are imported only
when the window is shown, after checking that the ``[app]`` extra is there
(:mod:`energy_flow.runtime.extras`).
"""

from __future__ import annotations

import argparse
import os
import sys

from energy_flow.runtime.broken_pipe import run_cli
from energy_flow.runtime.cli_errors import OneLineParser
from energy_flow.runtime.extras import exit_on_missing_extra, require

FALLBACK_BATCHES = 60

#: How the two entry points name themselves in usage and error lines.
SCRIPT_PROG = "main.py"
COMMAND_PROG = "energy-flow-studio"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end with one line naming the problem (and exit status 2)."""

    def error(self, message: str) -> None:  # argparse's default prints the whole usage first
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None, prog: str = SCRIPT_PROG) -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--headless", action="store_true", help="train without a window")
    p.add_argument("--paused", action="store_true", help="app: load, but wait for Run before training")
    p.add_argument("--open", metavar="PATH.h5", help="replay a recording in the app")
    p.add_argument("--preset", default="debug", help="tiny | debug | experiment | optimized (default debug)")
    p.add_argument("--config", metavar="FILE", help="a config file (.toml or .json); overrides --preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any config field on top of the preset or --config (repeatable), "
                   "e.g. --set lattice_width=8")
    p.add_argument("--batches", type=_positive, default=None,
                   help=f"headless: number of training batches (default {FALLBACK_BATCHES})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: the config's (auto)")
    p.add_argument("--data", metavar="PATH", help="pairs (.jsonl/.csv), embeddings (.npz/.npy/.pt) or a "
                   "dataset name: wordnet, wordnet:N (N pairs); default: the bundled corpus")
    p.add_argument("--teacher", metavar="DIR", help="a local sentence-transformers model directory "
                   "(default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--checkpoint", metavar="PATH", help="headless: write a checkpoint here at the end "
                   "(and when the run is stopped)")
    p.add_argument("--checkpoint-every", type=_positive, default=None, metavar="N",
                   help="headless: also save the checkpoint every N batches (atomic: the file always "
                   "holds the last good one)")
    p.add_argument("--resume", metavar="PATH", help="headless: continue from this checkpoint")
    p.add_argument("--summary", metavar="PATH.json", help="headless: write a JSON summary here")
    p.add_argument("--record", metavar="PATH.h5", help="headless: record batches to this file")
    p.add_argument("--record-every", type=_positive, default=1, metavar="K", help="record every K-th batch")
    p.add_argument("--overwrite", action="store_true",
                   help="headless: let --record replace an existing recording (never another kind of file)")
    p.add_argument("--append", action="store_true",
                   help="headless: let --record add batches to an existing recording of the same config")
    p.add_argument("--health-every", type=_positive, default=None, metavar="N",
                   help="headless: print the health verdicts every N batches (docs/health.md)")
    p.add_argument("--stop-on-failure", action="store_true",
                   help="headless: stop at the first failed health check (exit status 4)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="headless: plain lines, no progress bar")
    return p.parse_args(argv)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_config(args: argparse.Namespace):
    from energy_flow.config import EnergyConfig, create_preset, parse_overrides

    config = EnergyConfig.load(args.config) if args.config else create_preset(args.preset)
    changes = parse_overrides(args.overrides)
    if args.device:
        changes["device"] = args.device
    if args.seed is not None:
        changes["seed"] = args.seed
    return config.replace(**changes) if changes else config


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def main(argv: list[str] | None = None, prog: str = SCRIPT_PROG) -> int:
    """The command: parse ``argv``, then the app, or headless training; returns the exit status."""
    args = parse_args(argv, prog)
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    headless = args.headless
    if not headless and not has_display():
        if args.open:
            print(f"{prog}: error: no display found (DISPLAY is unset), so a recording cannot be shown; "
                  "inspect it with: python -m energy_flow.trace inspect " + args.open, file=sys.stderr)
            return 2
        print(f"{prog}: no display found (DISPLAY is unset) — running headless training instead "
              "(run under a desktop or xvfb-run for the window; see --help)", file=sys.stderr)
        headless = True
    if headless:
        return exit_on_missing_extra(prog, lambda: run_headless(args, config, prog))
    return exit_on_missing_extra(prog, lambda: run_app(args, config))


def run_app(args: argparse.Namespace, config) -> int:
    """The window; its modules (Qt, VisPy, pyqtgraph) are imported only now, if installed."""
    require("app", "the desktop app", alternative="or train without a window: --headless")
    from app.main import run_gui

    return run_gui(config, data_source=args.data, teacher_path=args.teacher, open_path=args.open,
                   start_paused=args.paused)


def run_headless(args: argparse.Namespace, config, prog: str = SCRIPT_PROG) -> int:
    from energy_flow.headless import HeadlessOptions, run

    opts = HeadlessOptions(config=config, batches=args.batches or FALLBACK_BATCHES, data=args.data,
                           teacher=args.teacher, checkpoint=args.checkpoint, resume=args.resume,
                           summary=args.summary, record=args.record, record_every=args.record_every,
                           health_every=args.health_every, stop_on_failure=args.stop_on_failure,
                           progress=not args.no_progress, overwrite=args.overwrite, append=args.append,
                           checkpoint_every=args.checkpoint_every, config_path=args.config)
    try:
        code = run(opts)
    except (ValueError, OSError) as exc:
        from energy_flow.files.errors import reason

        print(f"{prog}: error: {reason(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        code = 2
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"{prog}: error: out of memory (the allocator refused); lower batch_size, max_active_flows "
              "or the lattice size (see the memory estimate above)", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (a second Ctrl+C; nothing more was saved)", file=sys.stderr)
        code = 130
    from energy_flow.trace.recording import abandoned_writers

    if abandoned_writers():
        # HDF5 cannot close a file whose flush failed, and its shutdown would crash on it: end
        # here, with every other output already written (docs/reliability.md, "full disk").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA) or the CPU allocator's RuntimeError."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(exc))


def cli() -> int | str | None:
    """The ``energy-flow-studio`` command (pyproject.toml's ``[project.scripts]``)."""
    return run_cli(lambda: main(prog=COMMAND_PROG))
