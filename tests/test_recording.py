"""Recordings: round trip, appending, lazy and live reading, killed writers, bad files, the CLI
and the recorder API for other flow models. Telemetry comes from a real FlowProcessor."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.trace import (MODULES, SCHEMA_VERSION, REASON_FADED, REASON_LANDED, REASON_NAMES, REASON_TIMED_OUT,
                               REPORT_FIELDS, BatchTelemetry,
                               FlowRecorder, RecordingError, RecordingWriter, export_snapshot,
                               open_recording)
from energy_flow.trace.__main__ import main as cli_main
from tests.conftest import killed_at_exit

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def config():
    return create_tiny_config()


@pytest.fixture(scope="module")
def telemetries(config) -> list[BatchTelemetry]:
    torch.manual_seed(0)
    processor = FlowProcessor(EnergyLattice(config), SimpleNeuron(config), config)
    out = []
    with torch.no_grad():
        for _ in range(3):
            x = torch.nn.functional.normalize(torch.randn(config.batch_size, config.teacher_dim), dim=1)
            out.append(processor(x).telemetry)
    assert all(t is not None and t.flows is not None for t in out)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _same_array(a: np.ndarray, b: np.ndarray, name: str) -> None:
    assert isinstance(b, np.ndarray), name
    assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    if a.dtype.kind == "f":
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name}: NaNs in different places"
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{name}: values differ"


def assert_same_telemetry(a: BatchTelemetry, b: BatchTelemetry) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("aggregates", "flows") and x is not None:
            for g in dataclasses.fields(x):
                u, v = getattr(x, g.name), getattr(y, g.name)
                if isinstance(u, np.ndarray):
                    _same_array(u, v, f"{f.name}.{g.name}")
                else:
                    assert u == v and type(u) is type(v), f"{f.name}.{g.name}: {u!r} != {v!r}"
        elif isinstance(x, np.ndarray):
            _same_array(x, y, f.name)
        else:
            assert x == y and type(x) is type(y), f"{f.name}: {x!r} != {y!r}"


def _write(path: Path, config, tels, reports=None) -> None:
    with RecordingWriter(path, config.to_dict(), {"model_name": "test", "teacher": "none"}) as w:
        for i, tel in enumerate(tels):
            w.append_batch(tel, (reports or {}).get(i, {"step": i + 1, "loss": 0.5 + i}))


# ---------------------------------------------------------------------------------- round trip
def test_round_trip_of_several_batches_is_exact(tmp_path, config, telemetries):
    no_flows = dataclasses.replace(telemetries[2], flows=None)
    tels = [telemetries[0], telemetries[1], no_flows]
    reports = {0: {"step": 7, "loss": 0.25, "mse": 0.1, "cosine_loss": 0.15, "learning_rate": 5e-3,
                   "landed_fraction": 0.875},
               1: {"step": None, "loss": float("nan")},
               2: {}}
    path = tmp_path / "run.h5"
    _write(path, config, tels, reports)
    with open_recording(path) as rec:
        assert rec.num_batches == 3 and rec.schema_version == SCHEMA_VERSION == 4
        assert rec.config == config.to_dict()
        prov = rec.provenance
        assert prov["model_name"] == "test" and prov["teacher"] == "none"
        assert prov["packages"]["numpy"] == np.__version__ and prov["packages"]["h5py"] == h5py.__version__
        assert prov["packages"]["torch"].startswith(torch.__version__.split("+")[0])
        assert "git_commit" in prov and "created" in prov
        for i, tel in enumerate(tels):
            assert_same_telemetry(tel, rec.batch(i))
        info = rec.batch_info(0)
        assert (info.step, info.loss, info.mse, info.cosine_loss, info.learning_rate,
                info.landed_fraction) == (7, 0.25, 0.1, 0.15, 5e-3, 0.875)
        assert info.num_steps == tels[0].num_steps and info.total_flows == tels[0].total_flows
        assert info.num_sampled_flows == tels[0].flows.num_flows and info.has_flows
        assert info.lattice_shape == (6, 6, 5) and info.plane_z == (-1.0, 1.0)
        second = rec.batch_info(1)
        assert second.step is None and math.isnan(second.loss) and math.isnan(second.mse)
        assert not rec.batch_info(2).has_flows and rec.batch(2).flows is None
        assert rec.batch_info(-1).index == 2
        np.testing.assert_array_equal(rec.batch_column("num_steps"), [t.num_steps for t in tels])
        with pytest.raises(IndexError, match="run.h5: batch 3 out of range"):
            rec.batch(3)


def _same_fields(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(a), sorted(b))
    for key, x in a.items():
        y = b[key]
        if isinstance(x, dict):
            assert set(x) == set(y) and all(x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k]))
                                            for k in x), key
        elif isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), key
        else:
            assert x == y and type(x) is type(y), f"{key}: {x!r} != {y!r}"


def test_schema_2_fields_round_trip(tmp_path, config):
    """Guards against a new telemetry field or training signal that is written but read back
    differently (or not at all): a real train step's report and telemetry, through the file."""
    from energy_flow.trace.recording import report_fields_from
    from energy_flow.training.trainer import EnergyTrainer, build_model
    from tests.conftest import unit_rows

    trainer = EnergyTrainer(build_model(config), config)
    report = trainer.train_step((unit_rows(4, config.teacher_dim, 1), unit_rows(4, config.teacher_dim, 2)))
    skipped = trainer.train_step((unit_rows(4, config.teacher_dim, 1), unit_rows(4, config.teacher_dim, 2) * math.nan))
    tel = report.telemetry
    assert tel.aggregates.still_fraction is not None and tel.aggregates.saturation is not None
    assert tel.plane_energy_steps is not None
    fields = report_fields_from(report)
    assert set(fields) == set(REPORT_FIELDS)
    partial = {"step": 4, "grad_norms": {"carrier": 2.5}, "nonfinite": "x" * 300 + "é",
               "params_without_grad": ("carrier.spawn_head.bias",)}
    without_steps = dataclasses.replace(skipped.telemetry, plane_energy_steps=None,
                                        aggregates=dataclasses.replace(skipped.telemetry.aggregates,
                                                                       still_fraction=None, saturation=None))
    path = tmp_path / "v2.h5"
    with RecordingWriter(path, config.to_dict(), {}) as w:
        w.append_batch(tel, fields)
        w.append_batch(skipped.telemetry, report_fields_from(skipped))
        w.append_batch(without_steps, partial)
        w.append_batch(tel, {"landed_fraction": 0.5})
    with open_recording(path) as rec:
        assert_same_telemetry(tel, rec.batch(0))
        _same_fields(fields, rec.report_fields(0))
        back = rec.report_fields(1)
        assert back["skipped"] is True and "loss" in back["nonfinite"]
        assert all(math.isnan(v) for v in back["update_ratios"].values())
        third = rec.batch(2)
        # not measured: stored and read back as NaN ("unknown"), never as a value
        assert third.plane_energy_steps is None and np.isnan(third.aggregates.still_fraction).all()
        assert third.aggregates.saturation.shape == (third.num_steps + 1, 5)
        assert np.isnan(third.aggregates.saturation).all()
        got = rec.report_fields(2)
        assert got["step"] == 4 and got["grad_norms"]["carrier"] == 2.5 and math.isnan(got["grad_norms"]["neuron"])
        assert got["skipped"] is None and math.isnan(got["loss"]) and got["params_without_grad_count"] == 1
        assert got["nonfinite"].endswith("…") and len(got["nonfinite"].encode()) <= 256
        assert got["params_without_grad"] == ("carrier.spawn_head.bias",)
        assert rec.report_fields(3) is None      # a flow count alone is no training step
        norms = rec.batch_column("grad_norms")
        assert norms.shape == (4, len(MODULES))
        np.testing.assert_array_equal(norms[0], [report.grad_norms[m] for m in MODULES])
        assert list(rec.batch_column("skipped")) == [0, 1, -1, -1]
        assert rec.batch_column("nonfinite")[1] == skipped.nonfinite
        np.testing.assert_array_equal(rec.batch_column("output_spread")[:1], [report.output_spread])


FIXTURE_V1 = REPO / "tests" / "data" / "recording_v1.h5"


def test_a_version_1_file_opens_with_the_new_fields_absent(tmp_path):
    """Guards against schema 2 locking out recordings made before it (tests/data/README.md says
    how the fixture was written by the version-1 writer)."""
    with open_recording(FIXTURE_V1) as rec:
        assert rec.schema_version == 1 and rec.num_batches == 2
        tel = rec.batch(0)
        assert tel.aggregates.still_fraction is None and tel.aggregates.saturation is None
        assert tel.plane_energy_steps is None and tel.reason_names == REASON_NAMES
        assert tel.flows is not None and tel.aggregates.active[0] > 0
        _same_fields(rec.report_fields(0), {"step": 3, "loss": 0.5, "mse": 0.01, "cosine_loss": 0.49,
                                            "learning_rate": 1e-3, "landed_fraction": 0.25})
        assert rec.report_fields(1) is None
        with pytest.raises(KeyError, match="grad_norm"):
            rec.batch_column("grad_norm")
    copy = tmp_path / "v1.h5"
    copy.write_bytes(FIXTURE_V1.read_bytes())
    with pytest.raises(RecordingError, match="v1.h5: cannot append: the recording has schema version 1"):
        RecordingWriter(copy, json.loads(h5py.File(copy, "r").attrs["config"]), {}, mode="a")


def test_writer_rejects_bad_input_without_touching_the_file(tmp_path, config, telemetries):
    path = tmp_path / "run.h5"
    with RecordingWriter(path, config.to_dict(), {}) as w:
        w.append_batch(telemetries[0], {"step": 1})
        other = dataclasses.replace(telemetries[1], lattice_shape=(7, 6, 5))
        with pytest.raises(ValueError, match=r"run\.h5: batch lattice_shape \(7, 6, 5\) differs"):
            w.append_batch(other, {})
        with pytest.raises(ValueError, match=r"run\.h5: unknown report field\(s\) 'lr'"):
            w.append_batch(telemetries[1], {"lr": 0.1})
        bad_hist = dataclasses.replace(
            telemetries[1], aggregates=dataclasses.replace(telemetries[1].aggregates,
                                                           energy_hist=np.zeros((3, 16), np.int64)))
        with pytest.raises(ValueError, match="aggregates.energy_hist has shape"):
            w.append_batch(bad_hist, {})
        assert w.num_batches == 1
    with open_recording(path) as rec:
        assert rec.num_batches == 1
        assert_same_telemetry(telemetries[0], rec.batch(0))


def test_append_mode_continues_a_closed_recording(tmp_path, config, telemetries):
    path = tmp_path / "run.h5"
    _write(path, config, telemetries[:1])
    with RecordingWriter(path, config.to_dict(), {}, mode="a") as w:
        assert w.num_batches == 1
        w.append_batch(telemetries[1], {"step": 2})
    with open_recording(path) as rec:
        assert rec.num_batches == 2
        assert_same_telemetry(telemetries[0], rec.batch(0))
        assert_same_telemetry(telemetries[1], rec.batch(1))
    with pytest.raises(ValueError, match="run.h5: cannot append: the config differs"):
        RecordingWriter(path, config.replace(seed=5).to_dict(), {}, mode="a")
    with pytest.raises(OSError, match="run.h5"):
        RecordingWriter(path, config.to_dict(), {}, mode="x")


# ---------------------------------------------------------------------------------- lazy reading
def test_opening_and_batch_info_do_not_read_trajectories(tmp_path, config, telemetries, monkeypatch):
    path = tmp_path / "run.h5"
    _write(path, config, telemetries * 4)
    reads: list[str] = []
    original = h5py.Dataset.__getitem__

    def spy(self, index):
        reads.append(self.name)
        return original(self, index)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with open_recording(path) as rec:
        rec.batch_info(5)
        assert reads and all(name.startswith("/batches/") for name in reads), reads
        assert not {"/batches/plane_energy", "/batches/plane_reached"} & set(reads)
        reads.clear()
        rec.batch(5)
        assert "/flows/positions" in reads and "/steps/energy_hist" in reads


# ---------------------------------------------------------------------------------- following
def test_reader_follows_a_live_writer(tmp_path, config, telemetries):
    path = tmp_path / "live.h5"
    with RecordingWriter(path, config.to_dict(), {}) as w:
        with open_recording(path) as rec:
            assert rec.num_batches == 0
            w.append_batch(telemetries[0], {"step": 1})
            assert rec.num_batches == 0          # until refreshed
            assert rec.refresh() == 1
            assert_same_telemetry(telemetries[0], rec.batch(0))
            w.append_batch(telemetries[1], {"step": 2})
            w.append_batch(telemetries[2], {"step": 3})
            assert rec.refresh() == 3
            assert_same_telemetry(telemetries[2], rec.batch(2))
            assert rec.batch_info(2).step == 3


_KILLED_WRITER = textwrap.dedent("""
    import sys
    from energy_flow.trace import RecordingWriter, open_recording
    with open_recording(sys.argv[1]) as snap:
        tel, config = snap.batch(0), snap.config
    with RecordingWriter(sys.argv[2], config, {"model_name": "killed"}) as writer:
        print("open", flush=True)
        step = 0
        while True:
            writer.append_batch(tel, {"step": step})
            print(step, flush=True)
            step += 1
""")


def test_killed_writer_leaves_every_complete_batch_readable(tmp_path, config, telemetries):
    snapshot = export_snapshot(tmp_path / "snap.h5", telemetries[0], {"step": 0}, config.to_dict(), {})
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    path = tmp_path / "killed.h5"
    with killed_at_exit([sys.executable, str(script), str(snapshot), str(path)], env=_env()) as proc:
        assert proc.stdout.readline().strip() == "open", proc.stderr.read()
        live = open_recording(path)                     # another process, while it writes
        assert live.num_batches == 0
        while int(proc.stdout.readline()) < 2:          # three batches committed
            pass
        assert live.refresh() >= 3
        time.sleep(0.05)                                # let it get into the middle of a batch
        proc.send_signal(signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    live.refresh()
    assert_same_telemetry(telemetries[0], live.batch(live.num_batches - 1))
    live.close()
    with open_recording(path) as rec:
        assert rec.num_batches >= 3
        for i in range(rec.num_batches):
            assert rec.batch_info(i).step == i
            assert_same_telemetry(telemetries[0], rec.batch(i))
    with pytest.raises(RecordingError, match="killed.h5: cannot append: .*h5clear"):
        RecordingWriter(path, config.to_dict(), {}, mode="a")


# ---------------------------------------------------------------------------------- bad files
@pytest.fixture()
def good_file(tmp_path, config, telemetries) -> Path:
    path = tmp_path / "good.h5"
    _write(path, config, telemetries[:2])
    return path


def _bad(tmp_path: Path, good: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.h5"
    if kind == "text":
        path.write_text("step,loss\n1,0.5\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "plain_hdf5":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    else:
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "r+") as f:
            if kind == "newer":
                f.attrs["schema_version"] = 5
            elif kind == "marker":
                f.attrs["format"] = "something-else"
            elif kind == "missing":
                del f["flows/positions"]
            elif kind == "trailing_shape":
                del f["steps/landed"]
                f.create_dataset("steps/landed", shape=(0, 3), maxshape=(None, 3), dtype="i8")
    return path


@pytest.mark.parametrize("kind, message", [
    ("text", "not an HDF5 file"),
    ("empty", "empty file, not an HDF5 file"),
    ("truncated", r"truncated file \(\d+ of \d+ bytes present\)"),
    ("plain_hdf5", "not an energy-flow recording \\(no format marker"),
    ("newer", "schema version 5 is newer than this program's 4; upgrade energy-flow-studio"),
    ("marker", "not an energy-flow recording \\(format marker 'something-else'"),
    ("missing", "missing dataset 'flows/positions'"),
    ("trailing_shape", "inconsistent shapes: steps/landed has rows of shape \\(3,\\), expected \\(2,\\)"),
])
def test_bad_files_are_named_with_their_problem(tmp_path, good_file, kind, message):
    path = _bad(tmp_path, good_file, kind)
    with pytest.raises(RecordingError) as err:
        open_recording(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert re.search(message, text), text


def test_missing_file_and_inconsistent_offsets(tmp_path, good_file):
    with pytest.raises(RecordingError, match="nope.h5: no such file"):
        open_recording(tmp_path / "nope.h5")
    with h5py.File(good_file, "r+") as f:
        f["flows/positions"].resize(10, axis=0)
    with open_recording(good_file) as rec:
        with pytest.raises(RecordingError, match=r"good\.h5: inconsistent shapes: batch 0 needs rows .* of "
                                                 r"flows/positions, which has 10"):
            rec.batch(0)


# ---------------------------------------------------------------------------------- snapshots
def test_export_snapshot_is_atomic_and_names_unwritable_paths(tmp_path, config, telemetries):
    target = tmp_path / "snap.h5"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="not a recording; refusing to replace it"):
        export_snapshot(target, telemetries[1], {"step": 3}, config.to_dict(), {"model_name": "m"})
    assert target.read_bytes() == b"old"
    target.unlink()
    export_snapshot(target, telemetries[0], {"step": 2}, config.to_dict(), {"model_name": "m"})
    export_snapshot(target, telemetries[1], {"step": 3}, config.to_dict(), {"model_name": "m"})  # replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.h5"]
    with open_recording(target) as rec:
        assert rec.num_batches == 1 and rec.batch_info(0).step == 3
        assert_same_telemetry(telemetries[1], rec.batch(0))
    (tmp_path / "afile").write_text("a regular file, not a directory")
    bad = tmp_path / "afile" / "x.h5"
    with pytest.raises(OSError) as err:
        export_snapshot(bad, telemetries[1], {}, config.to_dict(), {})
    assert str(bad) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "snap.h5"]
    # An export replaces a recording, never a file of another kind (issue 31).
    notes = tmp_path / "notes.h5"
    notes.write_bytes(b"old")
    with pytest.raises(OSError, match="is not a recording; refusing to replace it"):
        export_snapshot(notes, telemetries[1], {}, config.to_dict(), {})
    assert notes.read_bytes() == b"old"


# ---------------------------------------------------------------------------------- CLI
def test_inspect_cli(tmp_path, good_file, capsys):
    assert cli_main(["inspect", str(good_file)]) == 0
    out = capsys.readouterr().out
    assert "schema version 4" in out and "2 complete" in out and "per batch" in out
    assert '"model_name": "test"' in out and "steps per batch" in out
    bad = _bad(tmp_path, good_file, "newer")
    assert cli_main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"{bad}: schema version 5 is newer than this program's 4; upgrade energy-flow-studio\n"
    done = subprocess.run([sys.executable, "-m", "energy_flow.trace", "inspect", str(tmp_path / "missing.h5")],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("missing.h5: no such file")


# ---------------------------------------------------------------------------------- recorder API
def test_toy_model_example_writes_a_readable_recording(tmp_path):
    path = tmp_path / "toy.h5"
    done = subprocess.run([sys.executable, str(REPO / "docs/examples/record_toy_model.py"), str(path),
                           "--batches", "2"], capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    with open_recording(path) as rec:
        assert rec.num_batches == 2 and rec.config["start_mode"] == "input_face"
        tel = rec.batch(1)
        agg, flows = tel.aggregates, tel.flows
        assert tel.lattice_shape == (8, 8, 6) and tel.plane_z == (1.0,)
        assert flows.num_flows == tel.total_flows == agg.active[0] + agg.spawn_granted.sum()
        assert agg.landed.sum() + agg.faded.sum() + agg.timed_out.sum() == tel.total_flows
        assert (agg.spawn_requested == agg.spawn_granted + agg.spawn_denied).all()
        assert set(np.unique(flows.reason)) <= {REASON_LANDED, REASON_FADED, REASON_TIMED_OUT}


def test_recorder_derives_aggregates_from_recorded_flows(tmp_path):
    path = tmp_path / "hand.h5"
    alive = np.ones(3, bool)
    with FlowRecorder(path, lattice_shape=(3, 3, 3), plane_z=(-1.0, 1.0), start_mode="center",
                      model_name="hand", energy_hist_bins=4) as rec:
        rec.begin_batch(step=4, loss=0.3)
        rec.record_step(np.array([[0, 0, 0], [1, 1, 0], [-1, -1, 0]], float), np.array([0.8, 0.6, 0.4]),
                        np.array([-1, -1, -1]), alive)
        # flow 1 lands on plane z=+1, flow 2 fades, flow 0 spawns child 3
        rec.record_step(np.array([[0, 0, 0.5], [1, 1, 1], [-1, -0.5, -0.2], [0.5, 0, 0.5]]),
                        np.array([0.7, 0.5, 0.01, 0.3]), np.array([-1, -1, -1, 0]),
                        np.array([True, False, False, True]))
        # flow 0 lands on plane z=-1, child 3 is still alive when the batch ends; dead flow 2 is
        # reported again (ignored)
        rec.record_step(np.array([[0, 0, -1], [0.5, 0.5, 0.6], [-1, -0.5, -0.2]]), np.array([0.6, 0.25, 0.01]),
                        np.array([-1, 0, -1]), np.array([False, True, False]), flow_ids=np.array([0, 3, 2]))
        tel = rec.end_batch()
    a, f = tel.aggregates, tel.flows
    np.testing.assert_array_equal(f.flow_id, [0, 1, 2, 3])
    np.testing.assert_array_equal(f.parent_id, [-1, -1, -1, 0])
    np.testing.assert_array_equal(f.birth_step, [0, 0, 0, 1])
    np.testing.assert_array_equal(f.end_step, [2, 1, 1, 2])
    np.testing.assert_array_equal(f.reason, [REASON_LANDED, REASON_LANDED, REASON_FADED, REASON_TIMED_OUT])
    assert np.isnan(f.positions[1, 2]).all() and np.isnan(f.energy[3, 0])
    np.testing.assert_array_equal(a.active, [3, 2, 0])
    np.testing.assert_array_equal(a.spawn_granted, [0, 1, 0])
    np.testing.assert_array_equal(a.spawn_requested, a.spawn_granted)
    np.testing.assert_array_equal(a.spawn_denied, [0, 0, 0])
    np.testing.assert_array_equal(a.landed, [[0, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(a.faded, [0, 1, 0])
    np.testing.assert_array_equal(a.timed_out, [0, 0, 1])
    np.testing.assert_array_equal(a.energy_hist, [[0, 1, 1, 1], [1, 0, 2, 0], [0, 1, 1, 0]])
    np.testing.assert_allclose(a.clamp_fraction, [np.nan, 2 / 3, 1 / 2])
    np.testing.assert_allclose(a.delta_min[1], [0, 0, -0.2], atol=1e-6)
    np.testing.assert_allclose(a.delta_max[1], [0, 0.5, 1], atol=1e-6)
    assert np.isnan(a.delta_min[0]).all() and np.isnan(a.delta_percentiles[0]).all()
    np.testing.assert_allclose(a.coverage, [[0, 0], [0, 1 / 9], [1 / 9, 1 / 9]], atol=1e-7)
    np.testing.assert_allclose(a.deposited_energy, [[0, 0], [0, 0.5], [0.6, 0.5]], atol=1e-6)
    np.testing.assert_allclose(a.active_energy, [1.8, 1.0, 0.0], atol=1e-6)
    assert tel.plane_energy[1, 2, 2] == pytest.approx(0.5) and tel.plane_energy[0, 1, 1] == pytest.approx(0.6)
    assert tel.plane_energy.sum() == pytest.approx(1.1) and tel.plane_reached.sum() == 2.0
    assert tel.input_energy_range == (float(np.float32(0.4)), float(np.float32(0.8)))
    with open_recording(path) as r:
        assert_same_telemetry(tel, r.batch(0))
        info = r.batch_info(0)
        assert info.step == 4 and info.loss == 0.3 and info.landed_fraction == 0.5
        assert math.isnan(info.mse)
        assert r.config["lattice_shape"] == [3, 3, 3] and r.provenance["model"] == {"name": "hand", "version": None}


def test_recorder_matches_our_model_where_both_see_the_same_flows(tmp_path, telemetries):
    """Replaying our model's trajectories through FlowRecorder gives back its flows and counts."""
    tel = telemetries[0]
    fs, agg = tel.flows, tel.aggregates
    assert fs.traced_samples == 4   # every sample traced: the sample is the whole population
    with FlowRecorder(tmp_path / "ours.h5", lattice_shape=tel.lattice_shape, plane_z=tel.plane_z,
                      start_mode=tel.start_mode, model_name="ours", energy_hist_bins=16) as rec:
        rec.begin_batch()
        for t in range(tel.num_steps + 1):
            here = ~np.isnan(fs.energy[:, t])
            rec.record_step(fs.positions[here, t], fs.energy[here, t], fs.parent_id[here],
                            fs.end_step[here] > t, flow_ids=fs.flow_id[here],
                            sample_index=fs.sample_index[here],
                            reasons=np.where(fs.end_step[here] == t, fs.reason[here], 0),
                            spawn_requested=int(agg.spawn_requested[t]), spawn_denied=int(agg.spawn_denied[t]))
        mine = rec.end_batch()
    for f in dataclasses.fields(fs):
        value = getattr(fs, f.name)
        if isinstance(value, np.ndarray):
            _same_array(value, getattr(mine.flows, f.name), f.name)
        else:
            assert value == getattr(mine.flows, f.name), f.name
    assert (mine.total_flows, mine.input_energy_range) == (tel.total_flows, tel.input_energy_range)
    for name in ("active", "spawn_requested", "spawn_granted", "spawn_denied", "landed", "faded",
                 "timed_out", "energy_hist", "energy_bin_edges", "clamp_fraction"):
        _same_array(getattr(agg, name), getattr(mine.aggregates, name), name)
    # the same float32 energies, interpolated by torch on the model's side and numpy on the
    # recorder's: equal to a few float32 ulps (seen: 1.1e-6 at a value of 0.35, 3e-6 relative)
    np.testing.assert_allclose(mine.aggregates.energy_percentiles, agg.energy_percentiles, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case, message", [
    ("vanished", "flow 1 is alive at step 0 but missing at step 1"),
    ("revived", "flow 0 ended at step 1 but is alive again at step 2"),
    ("orphan", "flow 5 appears at step 1 without a parent"),
    ("unknown_parent", "flow 5 names parent 9, which is not a flow of this batch"),
    ("not_bool", "alive must be a bool array"),
    ("outside", "positions must be normalised to \\[-1, 1\\]"),
    ("spawn_counts", "spawn_requested = 0 but 1 children appeared"),
])
def test_recorder_rejects_inconsistent_flows(tmp_path, case, message):
    p0 = np.zeros((2, 3))
    rec = FlowRecorder(tmp_path / "bad.h5", lattice_shape=(3, 3, 3), plane_z=(1.0,),
                       start_mode="input_face", model_name="bad")
    rec.begin_batch()
    with pytest.raises(ValueError, match=message) as err:
        if case == "not_bool":
            rec.record_step(p0, np.ones(2), np.array([-1, -1]), np.array([1, 1]))
        if case == "outside":
            rec.record_step(p0 + 1.5, np.ones(2), np.array([-1, -1]), np.ones(2, bool))
        rec.record_step(p0, np.ones(2), np.array([-1, -1]), np.ones(2, bool))
        if case == "vanished":
            rec.record_step(p0[:1], np.ones(1), np.array([-1]), np.ones(1, bool))
        elif case == "revived":
            rec.record_step(p0, np.ones(2), np.array([-1, -1]), np.array([False, True]))
            rec.record_step(p0, np.ones(2), np.array([-1, -1]), np.array([True, True]))
        elif case in ("orphan", "unknown_parent", "spawn_counts"):
            parent = {"orphan": -1, "unknown_parent": 9, "spawn_counts": 0}[case]
            rec.record_step(np.zeros((3, 3)), np.ones(3), np.array([-1, -1, parent]), np.ones(3, bool),
                            flow_ids=np.array([0, 1, 5]), spawn_requested=0 if case == "spawn_counts" else None)
        rec.end_batch()
    assert str(err.value).startswith(str(tmp_path / "bad.h5"))
    with pytest.raises(ValueError, match="closed with a batch begun but not ended"):
        rec.close()
    with open_recording(tmp_path / "bad.h5") as r:
        assert r.num_batches == 0
