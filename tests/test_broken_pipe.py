"""Every command line ends quietly when its reader goes away (issue 19, item 4).

Before: ``python -m energy_flow.trace inspect FILE | head`` ended with a BrokenPipeError
traceback (or, when the output was still buffered, "Exception ignored … BrokenPipeError" and
exit status 120), and ``main.py --headless`` with "main.py: error: Broken pipe" and status 2.
Now each ends with status 141 (128 + SIGPIPE) and nothing on stderr; the headless trainer
stops after its batch and saves, with its one stop line (docs/reliability.md).

The real entry points run as subprocesses on a real small recording. Their stdout is a pipe
whose reader is already gone, so the first write that reaches it fails whatever the timing;
each runs with Python's stdout buffered (as for a user) and unbuffered (PYTHONUNBUFFERED=1),
since the two fail at different places: at the write, or at the last flush.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from energy_flow.runtime.broken_pipe import EXIT_BROKEN_PIPE, StopOnBrokenPipe
from energy_flow.trace import FlowRecorder, open_recording
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


def _env(unbuffered: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYTHONUNBUFFERED")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_with_closed_stdout(args: list[str], unbuffered: bool) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with stdout a pipe whose read end is closed before it starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=_env(unbuffered), timeout=300)
    finally:
        os.close(write_end)


def _assert_quiet(stderr: str) -> None:
    for word in ("Traceback", "BrokenPipeError", "Exception ignored", "Broken pipe"):
        assert word not in stderr, stderr


def _record(path: Path, batches: int = 2, notes: str = "") -> Path:
    """A small real recording (FlowRecorder, two flows per batch, one lands)."""
    with FlowRecorder(path, lattice_shape=(4, 4, 3), plane_z=(1.0,), start_mode="input_face", model_name="toy",
                      provenance={"notes": notes} if notes else None) as rec:
        for step in range(batches):
            rec.begin_batch(step=step)
            rec.record_step(np.array([[0.0, 0.0, -1.0], [0.5, 0.5, -1.0]]), np.array([1.0, 0.8]),
                            np.array([-1, -1]), np.array([True, True]))
            rec.record_step(np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]]), np.array([0.6, 0.01]),
                            np.array([-1, -1]), np.array([False, False]))
            rec.end_batch()
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return _record(tmp_path_factory.mktemp("pipe") / "small.h5")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.npz"
    np.savez(path, inputs=unit_rows(24, seed=1).numpy(), targets=unit_rows(24, seed=2).numpy())
    return path


COMMANDS = {
    "trace-inspect": lambda rec, pairs, tmp: ["-m", "energy_flow.trace", "inspect", str(rec)],
    "trace-health": lambda rec, pairs, tmp: ["-m", "energy_flow.trace", "health", str(rec), "--per-batch"],
    "trace-help": lambda rec, pairs, tmp: ["-m", "energy_flow.trace", "--help"],
    "evaluate": lambda rec, pairs, tmp: ["-m", "energy_flow.evaluate", "--preset", "tiny", "--data", str(pairs),
                                         "--batches", "2", "--quiet"],
}


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_cli_whose_reader_is_gone_ends_quietly(tmp_path, recording, pairs, command, unbuffered):
    proc = _run_with_closed_stdout(COMMANDS[command](recording, pairs, tmp_path), unbuffered)
    _assert_quiet(proc.stderr)
    assert proc.stderr == ""
    # argparse's --help swallows a failed write itself when unbuffered; then it ends as usual.
    expected = (0, EXIT_BROKEN_PIPE) if command == "trace-help" and unbuffered else (EXIT_BROKEN_PIPE,)
    assert proc.returncode in expected, proc.returncode


def test_inspect_piped_into_head_ends_quietly_with_141(tmp_path):
    """The issue's own command line. The summary is made longer than a pipe's buffer (a large
    provenance note), so inspect is still writing when `head` exits, whatever the timing."""
    path = _record(tmp_path / "long.h5", notes="x" * 300_000)
    script = (f"set +o pipefail; {sys.executable} -m energy_flow.trace inspect {path} | head -1; "
              "echo \"status ${PIPESTATUS[0]}\"")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=_env(False),
                          timeout=300)
    _assert_quiet(proc.stderr)
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [str(path), f"status {EXIT_BROKEN_PIPE}"]


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_headless_whose_reader_is_gone_before_training_stops_and_says_so_once(tmp_path, pairs, unbuffered):
    """Stdout closed from the start: no batch is trained (the run stops before the first, as on
    SIGTERM there); the one stop line on stderr says why; no traceback."""
    proc = _run_with_closed_stdout(["main.py", "--headless", "--preset", "tiny", "--batches", "5", "--data",
                                    str(pairs), "--no-progress", "--summary", str(tmp_path / "s.json")], unbuffered)
    _assert_quiet(proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"stopped after batch 0: stdout closed (broken pipe); saved summary {tmp_path / 's.json'}"], \
        proc.stderr
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_headless_piped_into_head_stops_after_the_batch_and_saves(tmp_path, pairs):
    """`main.py --headless … | head -3`: the reader leaves after the device line, the held-out
    plan's and the cost estimate's; the next line (the first batch's) meets the closed pipe, and the run stops after
    that batch, writing its checkpoint and closing its recording, as on SIGTERM."""
    ck, rec = tmp_path / "ck.pt", tmp_path / "run.h5"
    proc = subprocess.Popen([sys.executable, "main.py", "--headless", "--preset", "tiny", "--batches", "200",
                             "--data", str(pairs), "--no-progress", "--checkpoint", str(ck), "--record", str(rec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(False))
    first = proc.stdout.readline()
    before = [proc.stdout.readline() for _ in range(2)]   # the held-out plan and the cost estimate
    estimate = before[-1]
    proc.stdout.close()                     # what `head -3` does after its lines
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=300) == EXIT_BROKEN_PIPE, stderr
    assert first.startswith("device "), first
    assert estimate.startswith("Estimated cost: "), estimate
    _assert_quiet(stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stopped after batch "), stderr
    assert "stdout closed (broken pipe)" in lines[0] and f"checkpoint {ck}" in lines[0], lines[0]
    with open_recording(rec) as r:
        assert 1 <= r.num_batches < 200


def test_stop_on_broken_pipe_asks_once_and_drops_later_lines():
    class Closed:
        writes = 0

        def write(self, text):
            Closed.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    asked = []
    out = StopOnBrokenPipe(Closed(), lambda: asked.append(True))
    print("batch 1", file=out)
    print("batch 2", file=out)
    out.flush()
    assert asked == [True] and out.broken and Closed.writes == 1
