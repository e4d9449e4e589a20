"""main.py as a user runs it: headless training, summaries, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def embeddings_file(tmp_path: Path, n: int = 16) -> Path:
    path = tmp_path / "pairs.npz"
    np.savez(path, inputs=unit_rows(n, seed=1).numpy(), targets=unit_rows(n, seed=2).numpy())
    return path


def test_headless_run_writes_summary_and_checkpoint(tmp_path):
    data = embeddings_file(tmp_path)
    summary, ck = tmp_path / "s.json", tmp_path / "ck.pt"
    proc = run_main("--headless", "--preset", "tiny", "--batches", "3", "--data", str(data),
                    "--summary", str(summary), "--checkpoint", str(ck), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "batch     3" in proc.stdout and "landed" in proc.stdout and "coverage" in proc.stdout
    s = json.loads(summary.read_text())
    assert s["steps"] == 3 and len(s["losses"]) == 3
    # the tiny preset's device is "auto": it must resolve to CUDA exactly where torch sees one
    assert s["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    # one process, no torchrun: the documented values, not missing keys
    assert s["world_size"] == 1 and s["backend"] is None and s["rank_devices"] == [s["device"]]
    assert s["provenance"]["source"] == str(data) and s["provenance"]["num_pairs"] == 16
    against = s["validation_vs_best_simple"]  # the held-out figures beside the best simple predictor
    assert against["model"]["mean_cosine"] == s["validation_eval"]["mean_cosine"]
    assert set(against["verdict"]) == {"mean_cosine", "top1", "top5", "mrr"}
    assert "validation against the best simple predictor: cosine" in proc.stdout
    assert ck.exists()
    resumed = run_main("--headless", "--preset", "tiny", "--batches", "1", "--data", str(data),
                       "--resume", str(ck), "--summary", str(summary), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(summary.read_text())["steps"] == 4


def test_bad_arguments_exit_nonzero_with_one_line(tmp_path):
    for args in (["--headless", "--batches", "-1"], ["--headless", "--preset", "giant"],
                 ["--headless", "--data", str(tmp_path / "missing.jsonl"), "--batches", "1"]):
        proc = run_main(*args)
        assert proc.returncode != 0
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "error" in lines[0], proc.stderr


def test_malformed_data_file_is_named_with_its_line(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"input": "a", "target": "b"}\n{"input": "c"\n')
    proc = run_main("--headless", "--preset", "tiny", "--batches", "1", "--data", str(bad))
    assert proc.returncode == 2
    assert "pairs.jsonl" in proc.stderr and "line 2" in proc.stderr


def test_nan_in_an_embeddings_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "nan.npz"
    inputs = unit_rows(8, seed=1).numpy()
    targets = unit_rows(8, seed=2).numpy()
    targets[2, 0] = np.nan
    np.savez(path, inputs=inputs, targets=targets)
    proc = run_main("--headless", "--preset", "tiny", "--batches", "2", "--data", str(path))
    assert proc.returncode == 2 and "nan.npz" in proc.stderr


def test_no_display_falls_back_to_headless_and_says_so(tmp_path):
    proc = run_main("--preset", "tiny", "--batches", "1", "--data", str(embeddings_file(tmp_path)),
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "no display found" in proc.stderr and "headless" in proc.stderr


def test_headless_record_writes_a_readable_recording_and_reports_bytes(tmp_path):
    from energy_flow.trace import open_recording

    rec, summary = tmp_path / "run.h5", tmp_path / "s.json"
    proc = run_main("--headless", "--preset", "tiny", "--batches", "4", "--record-every", "2",
                    "--data", str(embeddings_file(tmp_path)), "--record", str(rec),
                    "--summary", str(summary), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(summary.read_text())
    assert s["record"]["batches"] == 2 and s["record"]["bytes_per_batch"] > 0
    with open_recording(rec) as r:
        assert r.num_batches == 2
        assert [r.batch_info(i).step for i in range(2)] == [2, 4]
        assert r.provenance["num_pairs"] == 16
        assert r.batch(1).flows.num_flows > 0
