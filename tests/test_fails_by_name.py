"""Every command fails by name (issue 31, item 5): one line naming the flag, field or file, exit
status 2, outputs checked before any work, every file written atomically. The bad inputs are
the sweep's: deeply nested JSON/JSONL/TOML, a truncated .npz, `--set device=5`, output paths
equal to inputs or in missing folders, and a full disk under `evaluate --json`."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import energy_flow.files.atomic as atomic
from energy_flow import evaluate
from energy_flow.runtime.cli_errors import fails_by_name
from energy_flow.config import create_tiny_config
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "pairs.npz"
    np.savez(good, inputs=unit_rows(24, seed=1).numpy(), targets=unit_rows(24, seed=2).numpy())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    deep_jsonl = tmp_path / "deep.jsonl"
    deep_jsonl.write_text('{"input": ' + "[" * 100_000 + "}\n")
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"seed": ' + "[" * 100_000 + "}")
    deep_toml = tmp_path / "deep.toml"
    deep_toml.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    config = tmp_path / "tiny.json"
    create_tiny_config().save(config)
    return {"good": good, "truncated": truncated, "deep_jsonl": deep_jsonl, "deep_json": deep_json,
            "deep_toml": deep_toml, "config": config, "dir": tmp_path}


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _cases(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    d = f["dir"]
    return [
        (["--data", str(f["truncated"])], "truncated.npz"),
        (["--data", str(f["deep_jsonl"])], "deep.jsonl, line 1"),
        (["--data", str(d / "absent.npz")], "absent.npz"),
        (["--config", str(f["deep_json"]), "--data", str(f["good"])], "deep.json"),
        (["--config", str(f["deep_toml"]), "--data", str(f["good"])], "deep.toml"),
        (["--preset", "tiny", "--set", "device=5", "--data", str(f["good"])], "device"),
        (["--preset", "tiny", "--data", str(f["good"]), "--json", str(d / "no" / "such" / "dir.json")], "--json"),
        (["--config", str(f["config"]), "--data", str(f["good"]), "--json", str(f["config"])],
         "--json and --config are the same file"),
        (["--preset", "tiny", "--data", str(f["good"]), "--save-checkpoint", str(f["config"])],
         "--save-checkpoint"),
        (["--preset", "tiny", "--checkpoint", str(f["config"]), "--data", str(f["good"])], "tiny.json"),
    ]


def test_evaluate_fails_by_name_before_any_work(files, capsys):
    config = files["config"].read_bytes()
    for argv, named in _cases(files):
        code = fails_by_name(evaluate.PROG, lambda: evaluate.main(argv + ["--batches", "1", "--quiet"]))
        out, err = capsys.readouterr()
        assert code == 2, (argv, err)
        line = one_line(err)
        assert line.startswith(f"{evaluate.PROG}: error: ") and named in line, (argv, line)
        assert "trained" not in out      # refused before training (outputs before any work)
    assert files["config"].read_bytes() == config


def test_evaluate_as_a_command_is_one_line_and_exit_2(files):
    for argv in (["--data", str(files["truncated"])], ["--batches", "many"]):
        done = subprocess.run([sys.executable, "-m", "energy_flow.evaluate", *argv], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 2 and one_line(done.stderr).startswith("python -m energy_flow.evaluate: error:")


def test_evaluate_json_on_a_full_disk_keeps_the_old_json(files, monkeypatch, capsys):
    """`evaluate --json` on a full disk truncated the old JSON (a plain write)."""
    target = files["dir"] / "figures.json"
    target.write_text('{"old": true}\n')

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", full)
    argv = ["--preset", "tiny", "--data", str(files["good"]), "--batches", "1", "--quiet", "--json", str(target)]
    assert fails_by_name(evaluate.PROG, lambda: evaluate.main(argv)) == 2
    line = one_line(capsys.readouterr().err)
    assert str(target) in line and "No space left on device" in line
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in files["dir"].iterdir() if p.name.endswith(".tmp")] == []


def _export(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/export_embeddings.py", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_export_embeddings_fails_by_name_and_writes_atomically(files):
    d = files["dir"]
    for argv, named in ((["--data", str(files["truncated"]), "--out", str(d / "o.npz")], "truncated.npz"),
                        (["--data", str(files["good"]), "--out", str(d / "o.txt")], "--out"),
                        (["--data", str(files["good"]), "--out", str(files["good"])], "--out and --data"),
                        (["--data", str(files["good"])], "--out")):
        done = _export(*argv)
        assert done.returncode == 2, done.stderr
        assert named in one_line(done.stderr)
    assert not (d / "o.npz").exists()
    done = _export("--data", str(files["good"]), "--out", str(d / "copy.npz"))
    assert done.returncode == 0, done.stderr
    with np.load(d / "copy.npz") as z, np.load(files["good"]) as g:
        assert np.array_equal(z["inputs"], g["inputs"]) and np.array_equal(z["targets"], g["targets"])
    assert [p.name for p in d.iterdir() if p.name.startswith(".copy.npz")] == []


def test_main_names_truncated_and_nested_data(files):
    for data, named in ((files["truncated"], "truncated.npz"), (files["deep_jsonl"], "nested too deeply")):
        done = subprocess.run([sys.executable, "main.py", "--headless", "--preset", "tiny", "--batches", "1",
                               "--no-progress", "--data", str(data)], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert done.returncode == 2 and named in one_line(done.stderr)


def test_trace_argument_errors_are_one_line():
    done = subprocess.run([sys.executable, "-m", "energy_flow.trace", "inspect"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "path" in one_line(done.stderr)
