"""Replay of recordings (ReplaySource), the replay timeline and exports (batch file, PNG).

Recordings are made from real training steps of the tiny preset, written with the real
RecordingWriter; bad files are made from good ones by the damage a user would meet (not
HDF5, a truncated copy, a newer schema, a missing dataset, another program's HDF5 file).
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PyQt6.QtGui import QImage

from app.snapshot import Snapshot
from app.sources.replay import ReplaySource
from app.window.export import ExportDialog, ExportRequest, export_batch, save_png, write_export
from app.window.timeline import ReplayTimeline
from energy_flow.files import atomic
from energy_flow.config import create_tiny_config
from energy_flow.trace import SCHEMA_VERSION, RecordingWriter, open_recording
from energy_flow.trace.recording import report_fields_from
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training import EnergyTrainer, TrainReport, build_model

NUM_REPORTS = 4
PROVENANCE = {"model_name": "energy-flow tiny", "source": "unit-norm random inputs", "device": "cpu"}


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny():
    return create_tiny_config(device="cpu")


@pytest.fixture(scope="module")
def reports(tiny) -> list[TrainReport]:
    """Real training steps of the tiny preset on unit-norm random inputs (targets: other ones)."""
    trainer = EnergyTrainer(build_model(tiny), tiny)
    gen = torch.Generator().manual_seed(7)
    out = []
    for _ in range(NUM_REPORTS):
        x = torch.nn.functional.normalize(torch.randn(tiny.batch_size, tiny.teacher_dim, generator=gen), dim=1)
        y = torch.nn.functional.normalize(torch.randn(tiny.batch_size, tiny.teacher_dim, generator=gen), dim=1)
        report = trainer.train_step((x, y))
        assert report.telemetry is not None and report.telemetry.flows is not None
        out.append(report)
    return out


def write_recording(path: Path, tiny, reports: list[TrainReport]) -> Path:
    with RecordingWriter(path, tiny.to_dict(), PROVENANCE) as writer:
        for report in reports:
            writer.append_batch(report.telemetry, report_fields_from(report))
    return path


@pytest.fixture
def good(tmp_path, tiny, reports) -> Path:
    return write_recording(tmp_path / "good.h5", tiny, reports)


@pytest.fixture
def source(qtbot):
    src = ReplaySource(follow_interval_ms=100)
    yield src
    src.close()


def same_array(a: np.ndarray, b: np.ndarray, name: str) -> None:
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{name}: values differ"


def assert_same_telemetry(a: BatchTelemetry, b: BatchTelemetry) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("aggregates", "flows"):
            for g in dataclasses.fields(x):
                u, v = getattr(x, g.name), getattr(y, g.name)
                if isinstance(u, np.ndarray):
                    same_array(u, v, f"{f.name}.{g.name}")
                else:
                    assert u == v, f"{f.name}.{g.name}: {u!r} != {v!r}"
        elif isinstance(x, np.ndarray):
            same_array(x, y, f.name)
        else:
            assert x == y, f"{f.name}: {x!r} != {y!r}"


# ---------------------------------------------------------------------------------- ReplaySource
def test_snapshots_hold_the_recorded_telemetry_and_history(qtbot, source, good, reports):
    with qtbot.waitSignals([source.opened, source.batch_count_changed, source.snapshot_ready]) as blocker:
        assert source.open(good)
    path, info = blocker.all_signals_and_args[0].args
    assert path == str(good) and info["num_batches"] == NUM_REPORTS and info["schema_version"] == SCHEMA_VERSION
    assert info["provenance"]["model_name"] == PROVENANCE["model_name"]
    first = blocker.all_signals_and_args[2].args[0]
    assert isinstance(first, Snapshot) and first.batch_label.startswith(f"recording batch 1/{NUM_REPORTS}")

    with open_recording(good) as rec:
        for i in range(NUM_REPORTS):
            snap = source.snapshot(i)
            assert_same_telemetry(rec.batch(i), snap.telemetry)
            assert_same_telemetry(reports[i].telemetry, snap.telemetry)
            assert snap.report is None and snap.source == str(good)
            assert snap.batch_label == f"recording batch {i + 1}/{NUM_REPORTS} (training batch {reports[i].step})"
            hist = snap.history
            lengths = {name: arr.shape[0] for name, arr in hist.items()}
            assert set(lengths.values()) == {i + 1}, lengths
            for name in ("loss", "mse", "cosine_loss", "learning_rate"):
                np.testing.assert_array_equal(hist[name], [getattr(r, name) for r in reports[:i + 1]])
            np.testing.assert_array_equal(hist["step"], [r.step for r in reports[:i + 1]])
            np.testing.assert_array_equal(hist["landed_fraction"],
                                          [r.flow_stats.landed_fraction for r in reports[:i + 1]])
            assert np.isnan(hist["batches_per_second"]).all()   # not recorded: never invented
            assert hist["spawn_granted"][i] == int(reports[i].telemetry.aggregates.spawn_granted.sum())
            np.testing.assert_array_equal(hist["placed"],      # what the live history holds
                                          [int(r.telemetry.aggregates.active[0]) for r in reports[:i + 1]])
            assert not hist["loss"].flags.writeable

    # Scrubbing back: served from the cache, the same object.
    assert source.snapshot(NUM_REPORTS - 1).telemetry is source.snapshot(NUM_REPORTS - 1).telemetry
    with qtbot.waitSignal(source.snapshot_ready) as shown:
        assert source.show_batch(2)
    assert shown.args[0].batch_label.startswith("recording batch 3/") and source.current_index == 2
    with qtbot.waitSignal(source.error) as err:
        assert not source.show_batch(NUM_REPORTS)
    assert "out of range" in err.args[0] and str(good) in err.args[0]


def _damage(tmp_path: Path, good: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.h5"
    if kind == "not-hdf5":
        path.write_text("step,loss\n1,0.5\n")
        return path
    shutil.copyfile(good, path)
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "newer-schema":
        with h5py.File(path, "r+") as f:
            f.attrs["schema_version"] = np.int64(99)
    elif kind == "missing-dataset":
        with h5py.File(path, "r+") as f:
            del f["flows/positions"]
    elif kind == "wrong-format":
        with h5py.File(path, "r+") as f:
            f.attrs["format"] = "someone-elses-format"
    return path


@pytest.mark.parametrize("kind, message", [
    ("not-hdf5", "not an HDF5 file"),
    ("truncated", "truncated file"),
    ("newer-schema", f"schema version 99 is newer than this program's {SCHEMA_VERSION}"),
    ("missing-dataset", "missing dataset 'flows/positions'"),
    ("wrong-format", "not an energy-flow recording (format marker 'someone-elses-format'"),
    ("no-such-file", "no such file"),
])
def test_bad_file_reports_clearly_and_keeps_the_open_recording(qtbot, tmp_path, source, good, reports,
                                                               kind, message):
    assert source.open(good)
    source.show_batch(1)
    bad = tmp_path / "absent.h5" if kind == "no-such-file" else _damage(tmp_path, good, kind)
    opened: list[str] = []
    source.opened.connect(lambda p, _info: opened.append(p))
    with qtbot.waitSignal(source.error) as err:
        assert source.open(bad) is False
    text = err.args[0]
    assert str(bad) in text and message in text and "\n" not in text
    assert opened == []
    # The previous recording is still the open one, and still reads.
    assert source.path == good and source.num_batches == NUM_REPORTS and source.current_index == 1
    assert_same_telemetry(reports[3].telemetry, source.snapshot(3).telemetry)


def test_follow_latest_shows_batches_a_live_writer_appends(qtbot, tmp_path, tiny, reports, source):
    path = tmp_path / "live.h5"
    with RecordingWriter(path, tiny.to_dict(), PROVENANCE) as writer:
        writer.append_batch(reports[0].telemetry, report_fields_from(reports[0]))
        writer.append_batch(reports[1].telemetry, report_fields_from(reports[1]))
        assert source.open(path) and source.num_batches == 2
        counts: list[int] = []
        shown: list[Snapshot] = []
        source.batch_count_changed.connect(counts.append)
        source.snapshot_ready.connect(shown.append)
        with qtbot.waitSignal(source.following_changed) as follow:
            source.set_following(True)
        assert follow.args == [True]
        assert shown[-1].batch_label.startswith("recording batch 2/2")   # jumps to the newest

        writer.append_batch(reports[2].telemetry, report_fields_from(reports[2]))
        qtbot.waitUntil(lambda: counts == [3], timeout=5000)
        qtbot.waitUntil(lambda: shown[-1].batch_label.startswith("recording batch 3/3"), timeout=5000)
        assert_same_telemetry(reports[2].telemetry, shown[-1].telemetry)
        np.testing.assert_array_equal(shown[-1].history["loss"], [r.loss for r in reports[:3]])

        # Not following: the count still grows on refresh, but the shown batch stays.
        source.set_following(False)
        writer.append_batch(reports[3].telemetry, report_fields_from(reports[3]))
        before = len(shown)
        assert source.refresh() == 4 and counts == [3, 4] and len(shown) == before


# ---------------------------------------------------------------------------------- timeline
def test_timeline_plays_loops_and_selects_batches(qtbot):
    timeline = ReplayTimeline()
    qtbot.addWidget(timeline)
    timeline.show()
    timeline.set_batch_count(5)
    timeline.set_num_steps(3)
    steps: list[int] = []
    batches: list[int] = []
    timeline.step_selected.connect(steps.append)
    timeline.batch_selected.connect(batches.append)

    # Host updates never echo.
    timeline.set_batch(2)
    timeline.set_step(1)
    assert batches == [] and steps == [] and timeline.batch == 2 and timeline.step == 1
    assert timeline.batch_label.text() == "batch 3 of 5"

    timeline.speed_combo.setCurrentIndex(timeline.speed_combo.findData(4.0))   # 20 steps/s
    timeline.play()
    qtbot.waitUntil(lambda: not timeline.is_playing, timeout=3000)          # stops at T without loop
    assert steps == [2, 3] and timeline.step == 3

    steps.clear()
    timeline.loop_check.setChecked(True)
    timeline.play()                                    # from the last step: starts over at 0
    qtbot.waitUntil(lambda: len(steps) >= 6, timeout=3000)
    timeline.pause()
    assert steps[:6] == [0, 1, 2, 3, 0, 1] and not timeline.is_playing

    timeline.batch_slider.setValue(4)
    timeline.batch_spin.setValue(1)
    assert batches == [4, 0] and timeline.batch_label.text() == "batch 1 of 5"

    follows: list[bool] = []
    timeline.follow_toggled.connect(follows.append)
    timeline.follow_check.setChecked(True)
    timeline.batch_slider.setValue(4)          # the newest: following stays on
    timeline.batch_slider.setValue(1)          # an older one: following ends
    assert follows == [True, False] and batches[-2:] == [4, 1]


def test_timeline_drives_a_replay_source(qtbot, source, good):
    timeline = ReplayTimeline()
    qtbot.addWidget(timeline)
    source.batch_count_changed.connect(timeline.set_batch_count)
    source.snapshot_ready.connect(lambda s: timeline.set_num_steps(s.telemetry.num_steps))
    source.snapshot_ready.connect(lambda s: timeline.set_batch(source.current_index))
    timeline.batch_selected.connect(source.show_batch)
    assert source.open(good)
    assert timeline.batch_label.text() == f"batch 1 of {NUM_REPORTS}"
    with qtbot.waitSignal(source.snapshot_ready) as shown:
        timeline.batch_slider.setValue(2)
    assert shown.args[0].batch_label.startswith(f"recording batch 3/{NUM_REPORTS}")
    assert timeline.step_slider.maximum() == shown.args[0].telemetry.num_steps


# ---------------------------------------------------------------------------------- export
def test_export_batch_round_trips_live_and_replayed(qtbot, tmp_path, tiny, reports, source, good):
    live = Snapshot(telemetry=reports[1].telemetry, history={}, report=reports[1])
    out = export_batch(tmp_path / "live-batch.h5", live, tiny.to_dict(), PROVENANCE)
    with open_recording(out) as rec:
        assert rec.num_batches == 1 and rec.config == tiny.to_dict()
        assert_same_telemetry(reports[1].telemetry, rec.batch(0))
        info = rec.batch_info(0)
        assert (info.step, info.loss, info.mse) == (reports[1].step, reports[1].loss, reports[1].mse)

    # A replayed batch (no report): its scalars come from the recording, provenance is kept.
    assert source.open(good)
    replayed = source.snapshot(2)
    out2 = export_batch(tmp_path / "replayed.h5", replayed, source.config, source.provenance)
    with open_recording(out2) as rec, open_recording(good) as orig:
        assert_same_telemetry(orig.batch(2), rec.batch(0))
        assert rec.batch_info(0).as_dict() | {"index": 2} == orig.batch_info(2).as_dict()
        assert rec.provenance["created"] == orig.provenance["created"]
        # every recorded training signal travels with the exported batch (gradients, spreads …)
        assert replayed.report_fields is not None and replayed.report_fields["grad_norm"] > 0
        copied, recorded = rec.report_fields(0), orig.report_fields(2)
        assert set(copied) == set(recorded)
        assert all(copied[k] == recorded[k] or copied[k] != copied[k] for k in recorded)
        assert copied["update_ratios"] == recorded["update_ratios"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5", "live-batch.h5", "replayed.h5"]

    with pytest.raises(ValueError, match="no telemetry"):
        export_batch(tmp_path / "x.h5", dataclasses.replace(reports[0], telemetry=None), tiny.to_dict(), {})


def _test_image(w: int = 64, h: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128), np.full_like(xx, 255)],
                    axis=-1).astype(np.uint8)


def test_save_png_writes_the_image(qtbot, tmp_path):
    rgba = _test_image()
    path = save_png(tmp_path / "view.png", rgba)
    image = QImage(str(path))
    assert not image.isNull() and (image.width(), image.height()) == (64, 48)
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    back = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8).reshape(48, 64, 4)
    np.testing.assert_array_equal(back, rgba)
    assert back[..., :3].std() > 0   # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["view.png"]


def test_save_png_into_an_unwritable_place_names_the_path(qtbot, tmp_path):
    (tmp_path / "afile").write_text("a regular file, not a folder")
    target = tmp_path / "afile" / "x.png"
    with pytest.raises(OSError) as info:
        save_png(target, _test_image())
    assert str(target) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_save_png_on_a_full_disk_leaves_nothing_behind(qtbot, tmp_path, monkeypatch):
    target = tmp_path / "view.png"
    target.write_bytes(b"the previous export")

    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", full_disk)
    with pytest.raises(OSError) as info:
        save_png(target, _test_image())
    assert info.value.errno == errno.ENOSPC and str(target) in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["view.png"]
    assert target.read_bytes() == b"the previous export"   # untouched


def test_export_dialog_and_write_export(qtbot, tmp_path, tiny, reports):
    dialog = ExportDialog(tmp_path / "run-batch2.h5")
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    dialog.preset_combo.setCurrentIndex(dialog.preset_combo.findText("3840 × 2160 (4K UHD)"))
    assert dialog.request() == ExportRequest(tmp_path / "run-batch2.h5", tmp_path / "run-batch2.png", (3840, 2160))
    dialog.width_spin.setValue(320)
    dialog.height_spin.setValue(200)
    assert dialog.preset_combo.currentText() == "Custom" and ok.isEnabled()
    (tmp_path / "a-file").write_text("")
    dialog.base_edit.setText(str(tmp_path / "a-file" / "x"))
    assert not ok.isEnabled() and "is a file, not a folder" in dialog.message.text()
    dialog.base_edit.setText(str(tmp_path / "new" / "folder" / "x"))      # made by the export
    assert ok.isEnabled() and "will be made" in dialog.message.text()
    made = write_export(dialog.request(), Snapshot(telemetry=reports[0].telemetry, history={}, report=reports[0]),
                        tiny.to_dict(), PROVENANCE, lambda size: _test_image(*size))
    assert made == [tmp_path / "new" / "folder" / "x.h5", tmp_path / "new" / "folder" / "x.png"]
    dialog.base_edit.setText(str(tmp_path / "out"))
    dialog.h5_check.setChecked(False)
    dialog.png_check.setChecked(False)
    assert not ok.isEnabled()
    dialog.h5_check.setChecked(True)
    dialog.png_check.setChecked(True)
    request = dialog.request()
    assert request.png_size == (320, 200) and ok.isEnabled()

    sizes: list[tuple[int, int]] = []

    def render(size: tuple[int, int]) -> np.ndarray:
        sizes.append(size)
        return _test_image(*size)

    live = Snapshot(telemetry=reports[0].telemetry, history={}, report=reports[0])
    written = write_export(request, live, tiny.to_dict(), PROVENANCE, render)
    assert written == [tmp_path / "out.h5", tmp_path / "out.png"] and sizes == [(320, 200)]
    assert QImage(str(tmp_path / "out.png")).size().width() == 320
    with open_recording(tmp_path / "out.h5") as rec:
        assert_same_telemetry(reports[0].telemetry, rec.batch(0))

    no_view = ExportDialog(tmp_path / "y", can_render=False)
    qtbot.addWidget(no_view)
    assert no_view.request().png_path is None and not no_view.png_check.isEnabled()


@pytest.mark.parametrize("kind", ("external-storage", "external-link", "virtual"))
def test_a_recording_that_reaches_outside_itself_is_a_banner_not_a_secret(qtbot, tmp_path, source, good,
                                                                          reports, kind):
    """Issue 31: the app's health banner showed the content of the file a crafted recording
    pointed at. It is refused by name; the open recording stays and still reads."""
    from tests.test_self_contained import SECRET, craft

    assert source.open(good)
    bad, where = craft(tmp_path, reports[:2], kind)
    with qtbot.waitSignal(source.error) as err:
        assert source.open(bad) is False
    assert where in err.args[0] and str(bad) in err.args[0] and SECRET not in err.args[0]
    assert source.path == good and source.num_batches == NUM_REPORTS


@pytest.mark.parametrize("mutant", ("plane 60000 squared", "complete declares 10^8 complete", "num_steps huge",
                                    "schema_version array", "config deeply nested", "steps/active huge chunk"))
def test_a_crafted_recording_is_a_banner_and_the_app_stays_usable(qtbot, tmp_path, source, good, reports, mutant):
    """Issue 31: the app froze at 6.5 GB on a 346 KB crafted file. Such a file is refused by
    name before anything large is allocated; the open recording stays and still reads."""
    from tests.recording_mutants import mutate

    assert source.open(good)
    bad = mutate(good, tmp_path / "crafted.h5", mutant)
    with qtbot.waitSignal(source.error) as err:
        assert source.open(bad) is False
    assert str(bad) in err.args[0] and "\n" not in err.args[0]
    assert source.path == good and source.num_batches == NUM_REPORTS
    assert_same_telemetry(reports[3].telemetry, source.snapshot(3).telemetry)
