"""Checkpoints a user passes in never run code, damaged ones are named in one line, and saves
never leave a half-written file or an ever-growing pile of temporaries (issue 9, items 1, 7, 8, 12)."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import energy_flow.files.atomic as atomic
from energy_flow.config import create_tiny_config
from energy_flow.training import EnergyTrainer, build_model
from energy_flow.training.checkpoint_integrity import state_digest
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


def make():
    c = create_tiny_config()
    return EnergyTrainer(build_model(c), c)


class _Payload:
    """Unpickling this runs ``touch MARKER`` — what an attacker's checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoints(tmp_path: Path, marker: Path) -> list[Path]:
    """A torch-zip checkpoint and a bare pickle, both carrying the payload inside a real state."""
    state = make().state_dict()
    state["extra"] = {"x": _Payload(marker)}
    zipped = tmp_path / "evil.pt"
    torch.save(state, zipped)
    bare = tmp_path / "evil_pickle.pt"
    bare.write_bytes(pickle.dumps({"format": "energy-flow-checkpoint", "x": _Payload(marker)}))
    return [zipped, bare]


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    """Guards against torch.load(weights_only=False): the payload ran before the KeyError."""
    marker = tmp_path / "pwned"
    for path in _evil_checkpoints(tmp_path, marker):
        with pytest.raises(ValueError) as err:
            make().load_checkpoint(path)
        assert path.name in str(err.value) and "refused" in str(err.value)
        assert "\n" not in str(err.value)
        assert not marker.exists(), f"{path.name} executed its payload"


def test_a_crafted_checkpoint_via_resume_exits_2_with_one_line(tmp_path):
    """The CLI path (--resume evil.pt): one line naming the file, exit 2, no marker file."""
    marker = tmp_path / "pwned"
    evil = _evil_checkpoints(tmp_path, marker)[0]
    data = tmp_path / "pairs.npz"
    np.savez(data, inputs=unit_rows(8, seed=1).numpy(), targets=unit_rows(8, seed=2).numpy())
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", "--preset", "tiny",
                           "--batches", "1", "--data", str(data), "--resume", str(evil), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "evil.pt" in lines[0], proc.stderr
    assert not marker.exists()


def test_a_checkpoint_missing_a_key_names_the_key(tmp_path):
    """Guards against the KeyError traceback for a checkpoint without e.g. 'optimizer'."""
    for key in ("optimizer", "torch_rng", "step_count"):
        state = make().state_dict()
        del state[key]
        path = tmp_path / f"no_{key}.pt"
        torch.save(state, path)
        with pytest.raises(ValueError) as err:
            make().load_checkpoint(path)
        assert repr(key) in str(err.value) and path.name in str(err.value)


def test_nan_weights_in_a_checkpoint_name_the_parameter(tmp_path):
    """Guards against resuming into a NaN model (a traceback, or silent NaN training)."""
    state = make().state_dict()
    name = "carrier.gru.weight_ih_l0"
    state["model"][name] = state["model"][name].clone()
    state["model"][name][0, 0] = float("nan")
    state["model"][name][1, 1] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save({**state, "checksum": state_digest(state)}, path)   # intact: only its values are bad
    trainer = make()
    before = {k: v.clone() for k, v in trainer.processor.state_dict().items()}
    with pytest.raises(ValueError) as err:
        trainer.load_checkpoint(path)
    assert name in str(err.value) and "2 non-finite" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in trainer.processor.state_dict().items())


def test_a_saved_checkpoint_loads_with_weights_only(tmp_path):
    """What save_checkpoint writes must stay loadable by the safe loader (no custom objects)."""
    trainer = make()
    trainer.train_step((unit_rows(4, seed=1), unit_rows(4, seed=2)))
    trainer.save_checkpoint(tmp_path / "ck.pt", extra={"provenance": {"source": "x", "num_pairs": 4}})
    data = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert data["step_count"] == 1
    other = make()
    assert other.load_checkpoint(tmp_path / "ck.pt") == {"provenance": {"source": "x", "num_pairs": 4}}
    assert other.step_count == 1


def test_a_full_disk_during_the_save_is_one_oserror_naming_the_file(tmp_path, monkeypatch):
    """Guards against torch's raw RuntimeError traceback on ENOSPC; the old checkpoint survives."""
    trainer = make()
    path = tmp_path / "ck.pt"
    trainer.save_checkpoint(path)
    good = path.read_bytes()

    def full(fd, data):
        os.write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", full)
    with pytest.raises(OSError) as err:
        trainer.save_checkpoint(path)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == f"cannot write checkpoint {path}: No space left on device"
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphaned_temporaries_are_removed_by_the_next_save(tmp_path):
    """Guards against temp files of killed saves piling up forever (15 kills left 612 MB)."""
    path = tmp_path / "ck.pt"
    dead = tmp_path / f".ck.pt.{_dead_pid()}.0badc0de.tmp"
    live = tmp_path / f".ck.pt.{os.getpid()}.0000beef.tmp"   # a save in progress: keep it
    other = tmp_path / ".other.pt.1.0badc0de.tmp"             # another target's: not ours
    for p in (dead, live, other):
        p.write_bytes(b"x" * 1000)
    make().save_checkpoint(path)
    assert not dead.exists()
    assert live.exists() and other.exists() and path.exists()


def test_a_killed_save_leaves_an_orphan_that_the_next_save_removes(tmp_path):
    """End to end: a process SIGKILLed inside the save (after its temporary was written)."""
    path = tmp_path / "ck.pt"
    code = ("import os, signal, energy_flow.files.atomic as a\n"
            "def die(fd, data):\n"
            "    os.write(fd, bytes(data[:10])); os.kill(os.getpid(), signal.SIGKILL)\n"
            "a._write_all = die\n"
            f"a.write_bytes_atomic({str(path)!r}, b'0123456789' * 100, 'checkpoint')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert proc.returncode == -9
    orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1 and not path.exists()
    make().save_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
