"""Recordings are self-contained (issue 31, item 1): a crafted recording that points outside
itself — external link, external raw storage, virtual dataset, soft link leading out or looping —
is refused by every reader and by ``--append`` before any data is read, naming the object.

Each crafted file is made at test time from a real recording written by the real writer; the
"secret" it points at is a local text file (as /etc/passwd was in the sweep), and every test
checks that its content appears nowhere in what the reader said or wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from energy_flow.config import create_tiny_config
from energy_flow.headless import recording_mode
from energy_flow.trace import RecordingWriter, open_recording
from energy_flow.trace.recording import RecordingError, report_fields_from
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]
SECRET = "TOP-SECRET-4f2a9c"


@pytest.fixture(scope="module")
def reports():
    c = create_tiny_config()
    trainer = EnergyTrainer(build_model(c), c)
    return [trainer.train_step((unit_rows(4, seed=s), unit_rows(4, seed=s + 10))) for s in range(2)]


def write_recording(path: Path, reports) -> Path:
    with RecordingWriter(path, create_tiny_config().to_dict(), {"source": "test"}) as w:
        for r in reports:
            w.append_batch(r.telemetry, report_fields_from(r))
    return path


def craft(tmp_path: Path, reports, kind: str) -> tuple[Path, str]:
    """A real recording turned into one that reaches outside itself; returns it and the object
    the refusal must name."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes((SECRET + "\n").encode() * 64)
    other = write_recording(tmp_path / "other.h5", reports)
    path = write_recording(tmp_path / f"{kind}.h5", reports)
    with h5py.File(path, "r+") as f:
        if kind == "external-storage":     # the sweep's `trace health` printing a text file
            del f["batches/nonfinite"]
            f.create_dataset("batches/nonfinite", shape=(2,), dtype="S256", external=[(str(secret), 0, 512)])
            return path, "/batches/nonfinite"
        if kind == "external-link":        # `trace inspect` showing another file's losses
            del f["batches/loss"]
            f["batches/loss"] = h5py.ExternalLink(str(other), "/batches/loss")
            return path, "/batches/loss"
        if kind == "virtual":
            layout = h5py.VirtualLayout(shape=(2,), dtype="f8")
            layout[:] = h5py.VirtualSource(str(other), "batches/loss", shape=(2,))
            del f["batches/loss"]
            f.create_virtual_dataset("batches/loss", layout)
            return path, "/batches/loss"
        if kind == "soft-to-external":
            f["elsewhere"] = h5py.ExternalLink(str(other), "/batches")
            del f["batches/loss"]
            f["batches/loss"] = h5py.SoftLink("/elsewhere/loss")
            return path, "/batches/loss"
        if kind == "soft-loop":
            del f["batches/loss"]
            f["batches/loss"] = h5py.SoftLink("/batches/loss2")
            f["batches/loss2"] = h5py.SoftLink("/batches/loss")
            return path, "soft link loop"
    raise AssertionError(kind)


KINDS = ("external-storage", "external-link", "virtual", "soft-to-external", "soft-loop")


@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_refuses_a_file_that_reaches_outside_itself(tmp_path, reports, kind):
    path, where = craft(tmp_path, reports, kind)
    with pytest.raises(RecordingError) as err:
        open_recording(path)
    text = str(err.value)
    assert str(path) in text and where in text and "not self-contained" in text
    assert SECRET not in text


def test_an_in_file_soft_link_still_reads(tmp_path, reports):
    """Soft links that stay inside the file are harmless and keep working."""
    path = write_recording(tmp_path / "soft.h5", reports)
    with h5py.File(path, "r+") as f:
        f.move("batches/loss", "batches/loss_data")
        f["batches/loss"] = h5py.SoftLink("/batches/loss_data")
    with open_recording(path) as rec:
        assert np.array_equal(rec.batch_column("loss"), [r.loss for r in reports])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "energy_flow.trace", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_trace_inspect_and_health_refuse_by_name_and_print_no_secret(tmp_path, reports):
    for kind in ("external-storage", "external-link"):
        path, where = craft(tmp_path, reports, kind)
        for command in ("inspect", "health"):
            done = _cli(command, str(path))
            assert done.returncode == 2, (command, kind, done.stderr)
            assert where in done.stderr and len(done.stderr.strip().splitlines()) == 1
            assert SECRET not in done.stdout + done.stderr
            assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ("external-link", "virtual", "external-storage"))
def test_append_refuses_and_the_other_file_is_untouched(tmp_path, reports, kind):
    """The sweep's `--append` wrote new batches into a *different* file."""
    path, where = craft(tmp_path, reports, kind)
    other = tmp_path / "other.h5"
    secret = tmp_path / "secret.txt"
    before = {p: p.read_bytes() for p in (path, other, secret)}
    assert recording_mode(path, overwrite=False, append=True) == "a"   # it looks like a recording
    with pytest.raises(RecordingError) as err:
        RecordingWriter(path, create_tiny_config().to_dict(), {}, mode="a")
    assert where in str(err.value) and str(path) in str(err.value)
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / f"{path.name}.lock").exists()


def test_headless_append_to_a_crafted_recording_exits_2_naming_it(tmp_path, reports):
    path, where = craft(tmp_path, reports, "external-link")
    other = tmp_path / "other.h5"
    before = other.read_bytes()
    config = tmp_path / "tiny.json"
    create_tiny_config().save(config)
    done = subprocess.run([sys.executable, "main.py", "--headless", "--config", str(config), "--batches", "1",
                           "--record", str(path), "--append", "--no-progress", "--data", str(_npz(tmp_path))],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr
    assert where in done.stderr and "Traceback" not in done.stderr
    assert other.read_bytes() == before


def _npz(tmp_path: Path) -> Path:
    out = tmp_path / "pairs.npz"
    np.savez(out, inputs=unit_rows(16, seed=1).numpy(), targets=unit_rows(16, seed=2).numpy())
    return out
