"""One writer per recording, no file replaced by accident, flat writer memory, short errors
(issue 9, items 2, 3, 11, 12)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from energy_flow.config import create_tiny_config
from energy_flow.files.filelock import FileLock, FileLockedError
from energy_flow.headless import recording_mode
from energy_flow.trace import RecordingWriter, open_recording
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def telemetry() -> BatchTelemetry:
    c = create_tiny_config()
    report = EnergyTrainer(build_model(c), c).train_step((unit_rows(4, seed=1), unit_rows(4, seed=2)))
    return report.telemetry


def config_dict() -> dict:
    return create_tiny_config().to_dict()


def _holder(path: Path) -> subprocess.Popen:
    """Another process that opens a writer on ``path``, says "ready", and holds it until stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from energy_flow.config import create_tiny_config
        from energy_flow.trace.recording import RecordingWriter
        w = RecordingWriter({str(path)!r}, create_tiny_config().to_dict(), {{}}, mode="w")
        print("ready", flush=True)
        sys.stdin.read()
        w.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, telemetry):
    """Guards against two real processes recording to one path: the second truncated the file
    under the first and both exited 0 with unreadable batches."""
    path = tmp_path / "run.h5"
    holder = _holder(path)
    try:
        for mode in ("w", "a", "x"):
            with pytest.raises(FileLockedError) as err:
                RecordingWriter(path, config_dict(), {}, mode=mode)
            assert str(path) in str(err.value) and f"process {holder.pid}" in str(err.value)
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    with RecordingWriter(path, config_dict(), {}, mode="a") as w:  # free again once it exited
        w.append_batch(telemetry)
    with open_recording(path) as rec:
        assert rec.num_batches == 1


def test_a_killed_holder_does_not_block_the_next_writer(tmp_path):
    """The kernel drops the lock of a SIGKILLed holder: its sidecar must not block anyone."""
    path = tmp_path / "run.h5"
    holder = _holder(path)
    holder.kill()
    holder.wait(timeout=60)
    assert (tmp_path / "run.h5.lock").exists()  # left behind by the kill, but not locked
    with FileLock(path, "recording") as lock:
        assert lock.held
        assert (tmp_path / "run.h5.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run.h5.lock").exists()


def test_headless_record_to_a_path_in_use_is_refused_by_name(tmp_path):
    """End to end: a second `--record x.h5 --overwrite` while the first run writes it exits 2
    with one line naming the file and the first writer's process id; the file is untouched."""
    path = tmp_path / "run.h5"
    holder = _holder(path)
    try:
        data = tmp_path / "pairs.npz"
        np.savez(data, inputs=unit_rows(8, seed=1).numpy(), targets=unit_rows(8, seed=2).numpy())
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", "--preset", "tiny",
                               "--batches", "2", "--data", str(data), "--record", str(path), "--overwrite",
                               "--no-progress"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 2
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and str(path) in lines[0] and f"process {holder.pid}" in lines[0], proc.stderr
        assert not re.search(r"^batch \d", proc.stdout, re.M) and "Estimated cost" not in proc.stdout, proc.stdout
    finally:
        holder.communicate("", timeout=60)


def test_record_never_replaces_a_file_unless_asked_and_never_a_non_recording(tmp_path, telemetry):
    """Guards against `--record` silently replacing a killed recording or an unrelated .npz."""
    rec = tmp_path / "run.h5"
    with RecordingWriter(rec, config_dict(), {}) as w:
        w.append_batch(telemetry)
    with pytest.raises(ValueError, match="already exists there; pass --overwrite"):
        recording_mode(rec, overwrite=False, append=False)
    assert recording_mode(rec, overwrite=True, append=False) == "w"
    assert recording_mode(rec, overwrite=False, append=True) == "a"
    assert recording_mode(tmp_path / "new.h5", overwrite=False, append=False) == "w"
    other = tmp_path / "data.npz"
    np.savez(other, inputs=np.zeros((2, 3)))
    before = other.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a recording; refusing to replace"):
            recording_mode(other, overwrite=overwrite, append=False)
    # the writer itself refuses too, whoever calls it (the app's Record toggle, FlowRecorder)
    with pytest.raises(OSError, match="not a recording; refusing to replace it"):
        RecordingWriter(other, config_dict(), {}, mode="w")
    assert other.read_bytes() == before
    assert not (tmp_path / "data.npz.lock").exists()


def test_append_continues_a_recording_across_runs(tmp_path):
    """--append adds the new run's batches after the old ones (same config), in one file."""
    from energy_flow.headless import HeadlessOptions, run

    data = tmp_path / "pairs.npz"
    np.savez(data, inputs=unit_rows(8, seed=1).numpy(), targets=unit_rows(8, seed=2).numpy())
    base = dict(config=create_tiny_config(), data=str(data), progress=False, record=str(tmp_path / "r.h5"),
                checkpoint=str(tmp_path / "ck.pt"))
    assert run(HeadlessOptions(batches=2, **base), out=io.StringIO()) == 0
    assert run(HeadlessOptions(batches=1, resume=str(tmp_path / "ck.pt"), append=True, **base),
               out=io.StringIO()) == 0
    with open_recording(tmp_path / "r.h5") as rec:
        assert [rec.batch_info(i).step for i in range(rec.num_batches)] == [1, 2, 3]


def test_writer_heap_stays_flat_over_many_appends(tmp_path, telemetry):
    """Guards against the writer's heap growing ~131 MiB over 3,000 tiny appends (freed only on
    close). Python-side allocations are traced over appends 100..400; HDF5's C heap shows in RSS,
    bounded below."""
    path = tmp_path / "run.h5"
    with RecordingWriter(path, config_dict(), {}) as w:
        for _ in range(100):
            w.append_batch(telemetry)
        rss0 = _rss_bytes()
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
        for _ in range(300):
            w.append_batch(telemetry)
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        rss1 = _rss_bytes()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert grown < 1 << 20, f"python heap grew {grown / 2**20:.1f} MiB over 300 appends"
    assert rss1 - rss0 < 16 << 20, f"RSS grew {(rss1 - rss0) / 2**20:.1f} MiB over 300 appends"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_error_texts_are_one_short_line(tmp_path):
    """Guards against "[Errno 2] ...: [Errno 2] ..." and HDF5's internals in user-facing errors."""
    d = tmp_path / "adir.h5"
    d.mkdir()
    for target in (tmp_path / "missing" / "r.h5", d):
        with pytest.raises(OSError) as err:
            RecordingWriter(target, config_dict(), {}, mode="w")
        text = str(err.value)
        assert text.count("[Errno") == 0 and "file descriptor" not in text and "\n" not in text, text
        assert str(target) in text
