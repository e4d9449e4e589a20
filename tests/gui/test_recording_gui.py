"""Recordings in the window: record while training, replay (open, drop, --open), export, bad files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from PyQt6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PyQt6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PyQt6.QtWidgets import QApplication

from app.window.export import ExportRequest
from energy_flow.trace import open_recording


def _record_batches(qtbot, window, path, batches: int) -> None:
    rec = window.recordings
    rec._ask_record = lambda parent: str(path)
    rec.record_action.setChecked(True)
    qtbot.waitUntil(lambda: window.worker.recording, timeout=5000)
    for _ in range(batches):
        count = window.worker.trainer.step_count
        window.step_action.trigger()
        qtbot.waitUntil(lambda: window.worker.trainer.step_count == count + 1 and window.worker_state != "running",
                        timeout=20_000)
    rec.record_action.setChecked(False)
    qtbot.waitUntil(lambda: not window.worker.recording, timeout=5000)


@pytest.fixture
def recorded(qtbot, make_window, tmp_path):
    """A window that trained and recorded 3 batches, and the recording's path."""
    window = make_window()
    path = tmp_path / "live.h5"
    _record_batches(qtbot, window, path, 3)
    return window, path


def test_record_toggle_appends_every_trained_batch(recorded):
    window, path = recorded
    assert not window.recordings.record_action.isChecked()
    with open_recording(path) as rec:
        assert rec.num_batches == 3
        assert [rec.batch_info(i).step for i in range(3)] == [1, 2, 3]
        assert rec.provenance["num_pairs"] == window.worker.dataset.provenance.num_pairs
        assert rec.config == window.worker.config.to_dict()


def test_recording_to_an_unwritable_path_is_refused_and_training_is_unaffected(qtbot, make_window, tmp_path):
    window = make_window()
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file, so nothing can be created under it")
    window.recordings._ask_record = lambda parent: str(blocker / "run.h5")
    window.recordings.record_action.setChecked(True)
    qtbot.waitUntil(lambda: window.banner.isVisible() and "afile" in window.banner.label.text(), timeout=5000)
    assert not window.recordings.record_action.isChecked()
    window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker.trainer.step_count == 1, timeout=20_000)


def _shows(window, tel, step: int) -> bool:
    """True when the Energy and Spawn panels and the 3D view draw ``tel`` at ``step``: the
    histogram curve holds that step's recorded counts, the spawn curve the recorded requests."""
    hist = window.panels["Energy"].hist_curve.getData()[1]
    requested = window.panels["Spawn"].step_curves["requested"].getData()[1]
    return (hist is not None and requested is not None
            and np.array_equal(hist, tel.aggregates.energy_hist[step])
            and np.array_equal(requested, tel.aggregates.spawn_requested)
            and window.lattice_view.total_flows == tel.flows.total_flows)


def test_replay_drives_the_view_and_panels_and_back_to_live(qtbot, recorded):
    """Replayed batches reach every view with their recorded content, follow the step slider
    and the batch slider, and Back to live hands the panels to live snapshots again. Guards
    against replayed snapshots that never reach the panels (planted: the frame round skipped
    the panels for replayed snapshots), which the window's latest snapshot alone did not show."""
    window, path = recorded
    rec = window.recordings
    assert window.step_slider.isVisible() and window.play_action.isVisible()
    assert rec.open_recording(path)
    assert rec.mode == "replay" and rec.timeline.isVisible()
    # one step slider on screen: the replay bar's; the toolbar's is hidden and still drives the views
    assert not window.play_action.isVisible()
    qtbot.waitUntil(lambda: not window.step_slider.isVisible() and not window.step_label.isVisible(), timeout=2000)
    assert rec.timeline.step_slider.isVisible()
    with open_recording(path) as r:
        first, last = r.batch(0), r.batch(2)
    assert not np.array_equal(first.aggregates.energy_hist, last.aggregates.energy_hist)
    qtbot.waitUntil(lambda: window.latest_snapshot is not None and window.latest_snapshot.report is None,
                    timeout=10_000)
    qtbot.waitUntil(lambda: _shows(window, first, window.current_step), timeout=10_000)
    window.step_slider.setValue(1)
    qtbot.waitUntil(lambda: window.current_step == 1 and _shows(window, first, 1), timeout=5000)
    # the batch slider shows another recorded batch in every view, at the selected step
    energy = window.panels["Energy"]
    rec.timeline.batch_selected.emit(2)
    qtbot.waitUntil(lambda: window.latest_snapshot.batch_label.startswith("recording batch 3/3"), timeout=10_000)
    qtbot.waitUntil(lambda: _shows(window, last, window.current_step), timeout=10_000)
    assert energy is window.panels["Energy"]
    # live snapshots are not drawn while replaying; Back to live restores them
    rec.back_to_live()
    assert rec.mode == "live" and not rec.timeline.isVisible() and window.play_action.isVisible()
    qtbot.waitUntil(window.step_slider.isVisible, timeout=2000)
    qtbot.waitUntil(lambda: window.latest_snapshot.report is not None, timeout=10_000)
    live = window.latest_snapshot.telemetry
    qtbot.waitUntil(lambda: _shows(window, live, window.current_step), timeout=10_000)


@pytest.mark.parametrize("damage", ["not_hdf5", "truncated", "newer_schema", "missing_dataset"])
def test_bad_recording_shows_the_reason_and_keeps_what_was_open(qtbot, recorded, tmp_path, damage):
    window, path = recorded
    rec = window.recordings
    assert rec.open_recording(path)
    bad = tmp_path / f"{damage}.h5"
    if damage == "not_hdf5":
        bad.write_text("just text")
    elif damage == "truncated":
        data = path.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        shutil.copy(path, bad)
        with h5py.File(bad, "r+") as f:
            if damage == "newer_schema":
                f.attrs["schema_version"] = 99
            else:
                del f["flows/positions"]
    assert not rec.open_recording(bad)
    qtbot.waitUntil(lambda: window.banner.isVisible() and bad.name in window.banner.label.text(), timeout=5000)
    assert rec.mode == "replay" and rec.replay.path == path  # the previous recording stays open
    assert rec.replay.show_batch(1)


def test_dropping_a_recording_on_the_window_opens_it(qtbot, recorded):
    window, path = recorded
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = QPointF(window.width() / 2, window.height() / 2)
    enter = QDragEnterEvent(QPoint(int(pos.x()), int(pos.y())), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)
    assert window.recordings.mode == "replay" and window.recordings.replay.path == path


def test_export_from_the_window_writes_a_recording_and_a_png_at_the_chosen_size(qtbot, recorded, tmp_path):
    window, _ = recorded
    qtbot.waitUntil(window.recordings.export_action.isEnabled, timeout=10_000)  # a batch is drawn
    request = ExportRequest(tmp_path / "snap.h5", tmp_path / "snap.png", (1280, 720))
    window.recordings._ask_export = lambda parent, base, can_render: request
    window.recordings.export_action.trigger()
    with open_recording(request.h5_path) as r:
        assert r.num_batches == 1
        assert np.array_equal(r.batch(0).aggregates.active, window.latest_snapshot.telemetry.aggregates.active)
    image = QImage(str(request.png_path))
    assert (image.width(), image.height()) == (1280, 720)
    pixels = np.frombuffer(image.convertToFormat(QImage.Format.Format_RGBA8888).constBits().asstring(
        1280 * 720 * 4), dtype=np.uint8).reshape(720, 1280, 4)
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50  # a real render, not a blank fill
    # the next Open, Record or Export dialog starts where this export went
    assert window.recordings.start_folder() == str(tmp_path)
    asked = []
    window.recordings._ask_export = lambda parent, base, can_render: asked.append(base)
    window.recordings.export_action.trigger()
    assert asked and asked[0].parent == tmp_path


def test_export_to_an_unwritable_path_is_reported_and_training_carries_on(qtbot, recorded, tmp_path):
    window, _ = recorded
    qtbot.waitUntil(window.recordings.export_action.isEnabled, timeout=10_000)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    window.recordings._ask_export = lambda parent, base, can_render: ExportRequest(
        blocker / "snap.h5", None, (640, 480))
    window.recordings.export_action.trigger()
    assert window.banner.isVisible() and "afile" in window.banner.label.text()
    count = window.worker.trainer.step_count
    window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker.trainer.step_count == count + 1, timeout=20_000)


def test_open_at_start_up_replays_without_training_until_asked(qtbot, recorded, tiny_dataset, small_config):
    from app.sources.worker import TrainingWorker
    from app.window.main_window import MainWindow

    _, path = recorded
    window = MainWindow(TrainingWorker(small_config(), dataset_factory=lambda: tiny_dataset))
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    assert window.recordings.open_recording(path)  # what run_gui does for --open
    window.recordings.replay_only()
    qtbot.waitUntil(lambda: window.latest_snapshot is not None, timeout=10_000)
    assert not window.worker_thread.isRunning() and window.worker.trainer is None
    assert window.recordings.live_action.isEnabled()
    window.recordings.live_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "idle", timeout=20_000)
    assert window.recordings.mode == "live"
    window.shutdown()


def test_flowrecorder_recordings_open_in_the_window_without_an_error(qtbot, make_window, tmp_path):
    """Guards against the issue-7 crash ("set_snapshot: ValueError: cannot convert float NaN to
    integer") on a batch without a training step, and against energies outside [0, 1] or the
    model's own reason codes breaking a view: each such recording opens, every view draws it,
    and no error banner appears."""
    from tests.test_recorder import _custom_reason_recording, write_research_like
    from energy_flow.trace import FlowRecorder
    from app.colormaps import energy_range_of

    research = tmp_path / "research.h5"
    write_research_like(research)
    custom = tmp_path / "custom.h5"
    _custom_reason_recording(custom)
    signed = tmp_path / "signed.h5"
    with FlowRecorder(signed, lattice_shape=(4, 4, 4), plane_z=(1.0,), start_mode="input_face",
                      model_name="signed") as rec:
        rec.begin_batch()
        p0 = np.array([[-1, -1, -1], [1, 1, -1], [0, 0, -1]], float)
        rec.record_step(p0, np.array([-0.5, 1.5, 3.0]), np.full(3, -1), np.ones(3, bool))
        p1 = p0 + [0, 0, 2]
        rec.record_step(p1, np.array([-0.4, 1.2, 2.5]), np.full(3, -1), np.zeros(3, bool))
        rec.end_batch()
    window = make_window()
    for path in (research, custom, signed):
        assert window.recordings.open_recording(path)
        qtbot.waitUntil(lambda: window.latest_snapshot is not None
                        and window.latest_snapshot.source == str(path), timeout=10_000)
        for step in (0, 1):
            window.step_slider.setValue(step)
            qtbot.wait(100)
        assert not (window.banner.isVisible() and window.banner.kind == "error"), window.banner.label.text()
    shown = window.latest_snapshot.telemetry
    assert energy_range_of(shown) == (-0.5, 3.0)
    assert window.lattice_view._overlay.energy_range == (-0.5, 3.0)
    hist_plot = window.panels["Energy"].hist_plot   # panels redraw staggered after the view
    qtbot.waitUntil(lambda: hist_plot.viewRange()[0][0] < -0.5 and hist_plot.viewRange()[0][1] > 3.0,
                    timeout=5000)


def test_export_never_replaces_the_open_recording_nor_another_kind_of_file(qtbot, recorded, tmp_path):
    """Issue 31: every output is checked against the inputs; an export replaces a recording,
    never the one being replayed and never a file of another kind."""
    window, path = recorded
    rec = window.recordings
    assert rec.open_recording(path)
    qtbot.waitUntil(rec.export_action.isEnabled, timeout=10_000)
    notes = tmp_path / "notes.h5"
    notes.write_text("not a recording\n")
    for target, named in ((path, "same file"), (notes, "is not a recording")):
        before = target.read_bytes()
        rec._ask_export = lambda parent, base, can_render, target=target: ExportRequest(target, None, (640, 480))
        rec.export_action.trigger()
        assert window.banner.isVisible() and named in window.banner.label.text()
        assert target.read_bytes() == before
    assert rec.mode == "replay" and rec.replay.show_batch(0)


def test_replay_banner_counts_and_status_bar_follow_the_recording_not_the_live_run(qtbot, make_window, tmp_path):
    """Issue 28: a recording with no batch yet showed the live run's panels under "replay"; after
    Follow latest reached batch N the banner still said "0 batches"; the status bar kept the live
    "last batch 2.92 s" and said "loss –" while the Training panel showed the replayed loss."""
    import torch
    import torch.nn.functional as F

    from energy_flow.config import create_tiny_config
    from energy_flow.trace import RecordingWriter
    from energy_flow.trace.recording import report_fields_from
    from energy_flow.training import EnergyTrainer, build_model

    window = make_window()
    window.step_action.trigger()
    qtbot.waitUntil(lambda: window.latest_snapshot is not None and window.worker_state == "paused", timeout=20_000)
    labels = window.run_status.labels
    qtbot.waitUntil(lambda: labels["phase"].text().startswith("last batch"), timeout=5000)
    config = create_tiny_config(device="cpu")
    trainer = EnergyTrainer(build_model(config), config)
    g = torch.Generator().manual_seed(3)
    pairs = [F.normalize(torch.randn(config.batch_size, config.teacher_dim, generator=g), dim=1) for _ in range(2)]
    path = tmp_path / "growing.h5"
    with RecordingWriter(path, config.to_dict(), {"source": "test", "device": "cpu"}) as writer:
        assert window.recordings.open_recording(path)
        qtbot.wait(200)
        text = window.banner.label.text()
        assert "0 batches" in text and "nothing to show yet" in text, text
        assert window.latest_snapshot is None and window.lattice_view.total_flows == 0
        assert window.panels["Training"].loss_plot.listDataItems()[0].getData()[0] is None or \
            len(window.panels["Training"].loss_plot.listDataItems()[0].getData()[0]) == 0
        assert labels["phase"].text() == "" and labels["batch"].text() == "–"   # nothing of the live run
        window.recordings.timeline.follow_check.setChecked(True)
        reports = []
        for count in (1, 2):
            reports.append(trainer.train_step((pairs[0], pairs[1])))
            writer.append_batch(reports[-1].telemetry, report_fields_from(reports[-1]))
            word = "batch" if count == 1 else "batches"
            qtbot.waitUntil(lambda: f"— {count} {word}," in window.banner.label.text(), timeout=5000)
            qtbot.waitUntil(lambda: window.latest_snapshot is not None
                            and window.latest_snapshot.batch_label.startswith(f"recording batch {count}/"), timeout=5000)
            qtbot.waitUntil(lambda: labels["loss"].text() == f"loss {reports[-1].loss:.4f}", timeout=5000)
            assert labels["phase"].text() == "", labels["phase"].text()
    window.recordings.back_to_live()
    qtbot.waitUntil(lambda: labels["phase"].text().startswith("last batch"), timeout=5000)


def test_record_target_is_checked_before_any_overwrite_question(qtbot, make_window, tmp_path, monkeypatch):
    """Issue 28: Qt's save dialog asked "replace it?" for an HDF5 file of another program, then the
    app refused to replace it. The dialog asks nothing; the app asks only about what it will do:
    a recording is replaced after a question naming it; another kind of file is refused at once,
    with the reason, and nobody is asked to confirm it."""
    from PyQt6.QtWidgets import QFileDialog

    from app.window import recording_controls

    seen: dict = {}

    def fake_dialog(parent, caption, default, filters, selected_filter="", options=None):
        seen["options"] = options
        return "", ""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake_dialog))
    assert recording_controls._ask_record(None, str(tmp_path)) is None
    assert seen["options"] & QFileDialog.Option.DontConfirmOverwrite

    window = make_window()
    asked: list[str] = []
    window.confirm = lambda title, text: asked.append(text) or False
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(5)
    before = foreign.read_bytes()
    rec = window.recordings
    rec._ask_record = lambda parent: str(foreign)
    rec.record_action.setChecked(True)
    assert asked == []
    assert not rec.record_action.isChecked()
    text = window.banner.label.text()
    assert window.banner.kind == "error" and "other.h5" in text and "not a recording" in text, text
    assert foreign.read_bytes() == before

    _record_batches(qtbot, window, tmp_path / "old.h5", 1)
    old = tmp_path / "old.h5"
    kept = old.read_bytes()
    rec._ask_record = lambda parent: str(old)
    rec.record_action.setChecked(True)
    assert len(asked) == 1 and "old.h5" in asked[0] and "1 batch" in asked[0] and "replace" in asked[0].lower()
    assert not rec.record_action.isChecked() and old.read_bytes() == kept
    window.confirm = lambda title, text: True
    rec.record_action.setChecked(True)
    qtbot.waitUntil(lambda: window.worker.recording, timeout=5000)
    qtbot.waitUntil(lambda: rec.record_action.isChecked(), timeout=5000)
    rec.record_action.setChecked(False)
    qtbot.waitUntil(lambda: not window.worker.recording, timeout=5000)


def test_open_of_a_missing_file_at_start_up_leaves_an_idle_window_that_says_so(qtbot, tiny_dataset, small_config,
                                                                               tmp_path):
    """Issue 28: ``--open missing.h5`` showed the error, then "loading" and "Loading — starting the
    training worker…" as if live training were starting. Nothing trains, and the window says so."""
    from app.sources.worker import TrainingWorker
    from app.window.main_window import MainWindow

    window = MainWindow(TrainingWorker(small_config(), dataset_factory=lambda: tiny_dataset))
    qtbot.addWidget(window)
    window.show()
    missing = tmp_path / "missing.h5"
    assert not window.recordings.open_recording(missing)   # what run_gui does for --open
    window.recordings.replay_only()
    qtbot.wait(500)
    assert not window.worker_thread.isRunning() and window.worker.trainer is None
    assert window.banner.kind == "error" and "missing.h5" in window.banner.label.text()
    assert window.run_status.labels["state"].text() == "not started"
    assert window.notice.isVisible() and "not started" in window.notice.text()
    assert "Loading" not in window.notice.text()
    window.recordings.live_action.trigger()          # the user asks for it: now it loads
    qtbot.waitUntil(lambda: window.worker_state == "idle", timeout=20_000)
    assert window.run_status.labels["state"].text() == "idle"
    window.shutdown()


def test_export_starts_outside_the_source_tree_and_remembers_its_folder(qtbot, make_window, tmp_path, monkeypatch):
    """Issue 28: the Export dialog started in the repository (the working directory). With no
    folder used yet it starts in the user's Documents folder (else home; ./runs where that
    exists); after an export, the next one starts where that one went."""
    from PyQt6.QtCore import QStandardPaths

    source_tree = tmp_path / "repo"
    source_tree.mkdir()
    documents = tmp_path / "Documents"
    documents.mkdir()
    monkeypatch.chdir(source_tree)
    monkeypatch.setattr(QStandardPaths, "writableLocation",
                        staticmethod(lambda kind: str(documents) if kind == QStandardPaths.StandardLocation.DocumentsLocation
                                     else str(tmp_path)))
    window = make_window()
    window.step_action.trigger()
    qtbot.waitUntil(lambda: window.latest_snapshot is not None, timeout=20_000)
    bases: list = []
    chosen = tmp_path / "exports"
    chosen.mkdir()

    def provider(parent, base, can_render):
        bases.append(base)
        return ExportRequest(chosen / "batch.h5", None, (64, 48))
    window.recordings._ask_export = provider
    window.recordings.export()
    assert bases[0].parent == documents, bases[0]
    assert (chosen / "batch.h5").exists()
    window.recordings.export()
    assert bases[1].parent == chosen
    (source_tree / "runs").mkdir()
    window.recordings.last_folder = None
    assert window.recordings.start_folder() == str(source_tree / "runs")
