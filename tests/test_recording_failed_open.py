"""A failed open of a recording leaves nothing behind (issue 19, item 3).

Before: a ``FlowRecorder`` whose provenance could not be collected left a 179-byte HDF5 file,
and the next attempt was refused with "exists and is not a recording". Now a new recording is
built under a temporary name and renamed into place once complete, and an append opens the file
for writing only once it is known to be appendable. Failures are injected at every stage —
provenance, lock, file creation, attributes, datasets, SWMR, the rename, the append checks —
as an ImportError, an OSError (full disk) or Ctrl+C, and each test asserts that the folder holds
exactly what it held before (byte for byte), that the error names the file and the stage, and
that the next attempt succeeds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from energy_flow.files import filelock
from energy_flow.config import create_tiny_config
from energy_flow.trace import FlowRecorder, RecordingWriter, export_snapshot, open_recording
from energy_flow.trace.recording import writer as writer_module
from energy_flow.trace.recording.schema import RecordingError
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import killed_at_exit, unit_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def telemetry() -> BatchTelemetry:
    c = create_tiny_config()
    return EnergyTrainer(build_model(c), c).train_step((unit_rows(4, seed=1), unit_rows(4, seed=2))).telemetry


def config_dict(seed: int | None = None) -> dict:
    c = create_tiny_config()
    return (c if seed is None else c.replace(seed=seed)).to_dict()


def folder_state(folder: Path) -> dict[str, str]:
    """Every entry of ``folder`` with a hash of its bytes: equal states mean nothing changed."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _full_disk(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _interrupt(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


def _fail_on_dataset(failing: str, error):
    """Replaces ``h5py.Group.create_dataset``: making dataset ``failing`` fails."""
    real = h5py.Group.create_dataset

    def create_dataset(group, name, *args, **kwargs):
        if name == failing:
            error()
        return real(group, name, *args, **kwargs)
    return create_dataset


def _fail_on_attribute(key: str, error):
    real = h5py.AttributeManager.__setitem__

    def setitem(attrs, name, value):
        if name == key:
            error()
        return real(attrs, name, value)
    return setitem


def _file_failing_in_mode(failing: str, error):
    """Replaces ``h5py.File``: opening a file in mode ``failing`` fails, other opens work."""
    real = h5py.File

    def open_file(name, mode="r", *args, **kwargs):
        if mode == failing:
            error()
        return real(name, mode, *args, **kwargs)
    return open_file


def _failing_swmr(error):
    real = h5py.File.swmr_mode

    def set_swmr(file, value):
        error()
    return property(real.fget, set_swmr)


# Each stage of creating a new file, with the failure injected there: (id, attribute to patch,
# its replacement, error type the caller sees, words the message must hold).
def _creation_stages():
    return [
        ("provenance-importerror", (writer_module, "environment_provenance"),
         lambda: _raise(ImportError("No module named 'energy_flow_missing'")),
         RecordingError, "collecting provenance failed: ImportError: No module named 'energy_flow_missing'"),
        ("lock-full-disk", (filelock, "_write_pid"), _full_disk, OSError, "cannot write run.h5.lock"),
        ("lock-ctrl-c", (filelock, "_write_pid"), _interrupt, KeyboardInterrupt, None),
        ("create-file-full-disk", (h5py, "File"), _file_failing_in_mode("x", _full_disk), OSError,
         "creating the file: No space left on device"),
        ("attribute-runtimeerror", (h5py.AttributeManager, "__setitem__"),
         _fail_on_attribute("provenance", lambda: _raise(RuntimeError("Unable to create attribute"))),
         RecordingError, "writing the root attributes failed: RuntimeError: Unable to create attribute"),
        ("attribute-ctrl-c", (h5py.AttributeManager, "__setitem__"),
         _fail_on_attribute("config", _interrupt), KeyboardInterrupt, None),
        ("dataset-full-disk", (h5py.Group, "create_dataset"), _fail_on_dataset("steps/energy_hist", _full_disk),
         OSError, "creating dataset steps/energy_hist: No space left on device"),
        ("dataset-ctrl-c", (h5py.Group, "create_dataset"), _fail_on_dataset("flows/positions", _interrupt),
         KeyboardInterrupt, None),
        ("swmr-oserror", (h5py.File, "swmr_mode"), _failing_swmr(_full_disk), OSError,
         "starting SWMR mode: No space left on device"),
        ("rename-permission", (writer_module, "move_into_place"),
         lambda *a, **k: _raise(PermissionError(errno.EACCES, os.strerror(errno.EACCES))), OSError,
         "cannot give it its name: Permission denied"),
        ("rename-ctrl-c", (writer_module, "move_into_place"), _interrupt, KeyboardInterrupt, None),
    ]


def _raise(exc: BaseException):
    raise exc


CREATION_STAGES = _creation_stages()


@pytest.mark.parametrize("stage", CREATION_STAGES, ids=[s[0] for s in CREATION_STAGES])
@pytest.mark.parametrize("mode, existing", [("w", "none"), ("w", "empty"), ("w", "recording"), ("x", "none")])
def test_a_failed_creation_leaves_the_folder_as_it_was(tmp_path, monkeypatch, telemetry, stage, mode, existing):
    """Guards against the 179-byte file a failed open left, and against "w" truncating the
    recording it replaces before the new one could be made. (Mode "x" with an existing file is
    refused before anything is touched: tested below.)"""
    _, (owner, attr), replacement, error, words = stage
    path = tmp_path / "run.h5"
    if existing == "empty":
        path.touch()
    elif existing == "recording":
        with RecordingWriter(path, config_dict(seed=7), {}) as w:
            w.append_batch(telemetry, {"step": 1})
    before = folder_state(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(owner, attr, replacement)
        with pytest.raises(error) as caught:
            RecordingWriter(path, config_dict(), {"source": "test"}, mode=mode)
    assert folder_state(tmp_path) == before, "the failed open changed or left files"
    if words is not None:
        text = str(caught.value)
        assert str(path) in text and words in text, text
        assert "\n" not in text and "[Errno" not in text, text
    with RecordingWriter(path, config_dict(), {}, mode=mode) as w:     # the next attempt succeeds
        w.append_batch(telemetry, {"step": 2})
    with open_recording(path) as rec:
        assert rec.num_batches == 1 and rec.batch_info(0).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_flow_recorder_whose_provenance_fails_leaves_no_file(tmp_path, monkeypatch):
    """The issue's own case: an ImportError while writing provenance left an empty 179-byte
    HDF5 file, and the next FlowRecorder refused it as "exists and is not a recording"."""
    path = tmp_path / "toy.h5"
    args = dict(lattice_shape=(4, 4, 3), plane_z=(1.0,), start_mode="input_face", model_name="toy")
    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "environment_provenance",
                      lambda: _raise(ImportError("cannot import name '__version__'")))
        with pytest.raises(RecordingError, match=r"toy\.h5: cannot create recording: collecting provenance "
                                                 r"failed: ImportError: cannot import name '__version__'"):
            FlowRecorder(path, **args)
    assert list(tmp_path.iterdir()) == []
    with FlowRecorder(path, **args) as rec:
        rec.begin_batch(step=1)
        rec.record_step(np.array([[0.0, 0.0, -1.0]]), np.array([1.0]), np.array([-1]), np.array([True]))
        rec.record_step(np.array([[0.0, 0.0, 1.0]]), np.array([0.5]), np.array([-1]), np.array([False]))
        rec.end_batch()
    with open_recording(path) as r:
        assert r.num_batches == 1


def test_flow_recorder_checks_every_argument_before_the_file_exists(tmp_path):
    """A bad argument checked after the writer opened left the file created and its lock held."""
    path = tmp_path / "toy.h5"
    with pytest.raises(ValueError):
        FlowRecorder(path, lattice_shape=(4, 4, 3), plane_z=(1.0,), start_mode="input_face", model_name="toy",
                     plane_tolerance="not a number")
    assert list(tmp_path.iterdir()) == []
    FlowRecorder(path, lattice_shape=(4, 4, 3), plane_z=(1.0,), start_mode="input_face", model_name="toy").close()


def test_mode_x_refuses_an_existing_file_and_touches_nothing(tmp_path, telemetry):
    path = tmp_path / "run.h5"
    path.write_bytes(b"someone else's bytes")
    before = folder_state(tmp_path)
    with pytest.raises(OSError, match=r"run\.h5: cannot create recording: the file exists"):
        RecordingWriter(path, config_dict(), {}, mode="x")
    assert folder_state(tmp_path) == before


def test_mode_x_never_replaces_a_file_that_appears_while_it_is_made(tmp_path, monkeypatch, telemetry):
    """The existence check and the rename are one step (a hard link): a file created by
    someone else meanwhile is kept, and our temporary goes."""
    path = tmp_path / "run.h5"
    real = h5py.Group.create_dataset

    def meanwhile(group, name, *args, **kwargs):
        if name == "flows/energy":
            path.write_bytes(b"appeared meanwhile")
        return real(group, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", meanwhile)
    with pytest.raises(OSError, match=r"run\.h5: cannot create recording: the file exists"):
        RecordingWriter(path, config_dict(), {}, mode="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]
    assert path.read_bytes() == b"appeared meanwhile"


# Each stage of opening an existing recording for appending, with the failure injected there.
def _append_stages():
    return [
        ("lock-full-disk", (filelock, "_write_pid"), _full_disk, OSError, "cannot write run.h5.lock"),
        ("lock-ctrl-c", (filelock, "_write_pid"), _interrupt, KeyboardInterrupt, None),
        ("check-oserror", (writer_module, "check_root"), _full_disk, OSError,
         "cannot append to recording: reading it: No space left on device"),
        ("check-ctrl-c", (writer_module, "check_root"), _interrupt, KeyboardInterrupt, None),
        ("open-for-write-oserror", (h5py, "File"), _file_failing_in_mode("r+", _full_disk), OSError,
         "cannot append to recording: No space left on device"),
        ("swmr-oserror", (h5py.File, "swmr_mode"), _failing_swmr(_full_disk), OSError,
         "cannot append to recording: starting SWMR mode: No space left on device"),
        ("swmr-ctrl-c", (h5py.File, "swmr_mode"), _failing_swmr(_interrupt), KeyboardInterrupt, None),
    ]


APPEND_STAGES = _append_stages()


@pytest.mark.parametrize("stage", APPEND_STAGES, ids=[s[0] for s in APPEND_STAGES])
def test_a_failed_append_leaves_the_recording_byte_for_byte(tmp_path, monkeypatch, telemetry, stage):
    _, (owner, attr), replacement, error, words = stage
    path = tmp_path / "run.h5"
    with RecordingWriter(path, config_dict(), {}) as w:
        w.append_batch(telemetry, {"step": 1})
    before = folder_state(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(owner, attr, replacement)
        with pytest.raises(error) as caught:
            RecordingWriter(path, config_dict(), {}, mode="a")
    assert folder_state(tmp_path) == before
    if words is not None:
        assert str(path) in str(caught.value) and words in str(caught.value), str(caught.value)
    with RecordingWriter(path, config_dict(), {}, mode="a") as w:
        w.append_batch(telemetry, {"step": 2})
    with open_recording(path) as rec:
        assert [rec.batch_info(i).step for i in range(rec.num_batches)] == [1, 2]


@pytest.mark.parametrize("case", ["other-config", "not-a-recording", "missing"])
def test_a_refused_append_touches_nothing(tmp_path, telemetry, case):
    path = tmp_path / "run.h5"
    if case == "other-config":
        with RecordingWriter(path, config_dict(seed=7), {}) as w:
            w.append_batch(telemetry)
    elif case == "not-a-recording":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    before = folder_state(tmp_path)
    with pytest.raises((OSError, ValueError), match=r"run\.h5"):
        RecordingWriter(path, config_dict(), {}, mode="a")
    assert folder_state(tmp_path) == before


def test_a_failed_snapshot_export_leaves_nothing(tmp_path, monkeypatch, telemetry):
    """The app's Export and every one-batch snapshot go through the same writer."""
    monkeypatch.setattr(h5py.Group, "create_dataset", _fail_on_dataset("batches/plane_energy", _full_disk))
    with pytest.raises(OSError, match=r"snap\.h5"):
        export_snapshot(tmp_path / "snap.h5", telemetry, {"step": 1}, config_dict(), {})
    assert list(tmp_path.iterdir()) == []


_KILLED_WHILE_CREATING = textwrap.dedent("""
    import sys, time
    import h5py
    from energy_flow.config import create_tiny_config
    from energy_flow.trace.recording import RecordingWriter
    real = h5py.Group.create_dataset
    def slow(group, name, *args, **kwargs):
        if name == "flows/energy":
            print("creating", flush=True)
            time.sleep(600)
        return real(group, name, *args, **kwargs)
    h5py.Group.create_dataset = slow
    RecordingWriter(sys.argv[1], create_tiny_config().to_dict(), {}, mode="w")
""")


def test_a_creation_killed_midway_leaves_no_file_under_the_name(tmp_path, telemetry):
    """kill -9 while the datasets are being made: no half-made file under the name (a reader
    and the next writer see nothing there), and the next creation removes the orphaned
    temporary and the unlocked sidecar is no obstacle."""
    path = tmp_path / "run.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with killed_at_exit([sys.executable, "-c", _KILLED_WHILE_CREATING, str(path)], cwd=ROOT, env=env) as proc:
        assert proc.stdout.readline().strip() == "creating", proc.stderr.read()
        assert not path.exists()
    assert proc.returncode == -signal.SIGKILL
    orphans = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1 and orphans[0].startswith(".run.h5.")
    assert not path.exists()
    with RecordingWriter(path, config_dict(), {}, mode="x") as w:
        w.append_batch(telemetry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_headless_record_whose_creation_fails_exits_2_with_one_line_and_no_file(tmp_path, monkeypatch, capsys):
    """`main.py --headless --record`: the failed open is one line naming the file and the
    stage (exit status 2, docs/reliability.md); nothing is left at the path, and the same
    command then succeeds."""
    import main

    data = tmp_path / "pairs.npz"
    np.savez(data, inputs=unit_rows(8, seed=1).numpy(), targets=unit_rows(8, seed=2).numpy())
    record = tmp_path / "run.h5"
    argv = ["--headless", "--preset", "tiny", "--batches", "1", "--data", str(data), "--record", str(record),
            "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(h5py.Group, "create_dataset", _fail_on_dataset("steps/landed", _full_disk))
        assert main.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"main.py: error: {record}: cannot create recording: creating dataset steps/landed: "
                   "No space left on device"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.npz"]
    assert main.main(argv) == 0
    with open_recording(record) as rec:
        assert rec.num_batches == 1
