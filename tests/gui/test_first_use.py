"""What a new user hit in the first fifteen minutes (issue 10, items 1-7), each held by a test.

Every test drives the real window (or dialog) the way the user did and checks what is on screen
against values computed independently from the snapshot, the recording or the worker.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PyQt6.QtCore import Qt

from app.sources.worker import TrainingWorker
from app.window.export import ExportDialog
from app.window.main_window import MainWindow
from energy_flow.trace import RecordingWriter
from energy_flow.trace.recording import report_fields_from
from energy_flow.training import EnergyTrainer, build_model

SNAPSHOT_TIMEOUT_MS = 15_000
RECORDED_BATCHES = 6


@pytest.fixture(scope="module")
def six_reports():
    """Six real training steps of the tiny preset (unit-norm random inputs and targets)."""
    from energy_flow.config import create_tiny_config
    config = create_tiny_config(device="cpu")
    trainer = EnergyTrainer(build_model(config), config)
    gen = torch.Generator().manual_seed(3)
    reports = []
    for _ in range(RECORDED_BATCHES):
        x, y = (torch.nn.functional.normalize(torch.randn(config.batch_size, config.teacher_dim, generator=gen),
                                              dim=1) for _ in range(2))
        reports.append(trainer.train_step((x, y)))
    return config, reports


@pytest.fixture
def six_batch_recording(tmp_path, six_reports) -> Path:
    config, reports = six_reports
    path = tmp_path / "six.h5"
    with RecordingWriter(path, config.to_dict(), {"model": "energy_flow.FlowProcessor"}) as writer:
        for report in reports:
            writer.append_batch(report.telemetry, report_fields_from(report))
    return path


def _replay_only_window(qtbot, small_config, tiny_dataset, path: Path) -> MainWindow:
    """What ``main.py --open PATH`` builds: the window replays, the worker is not started."""
    window = MainWindow(TrainingWorker(small_config(), dataset_factory=lambda: tiny_dataset))
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    qtbot.waitExposed(window)
    assert window.recordings.open_recording(path)
    window.recordings.replay_only()
    return window


def _step_once(qtbot, window):
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS) as shown:
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")
    return shown.args[0]


# --------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("typed", ["/", "~/", "/tmp/"])
def test_export_dialog_typing_a_folder_path_is_refused_not_an_internal_error(qtbot, tmp_path, typed):
    """Guards against ValueError "PosixPath('/') has an empty name" while typing an absolute path.

    Validation runs on every keystroke; ``base.with_name`` raised inside the textChanged slot
    (an "Internal error" banner and a traceback per key) and OK stayed enabled at "/".
    """
    dialog = ExportDialog(tmp_path / "run-batch2")
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    dialog.base_edit.clear()
    qtbot.keyClicks(dialog.base_edit, typed)       # pytest-qt fails the test on an exception in a slot
    assert dialog.base_edit.text() == typed
    assert not ok.isEnabled()
    assert "folder" in dialog.message.text() and "file name" in dialog.message.text()
    with pytest.raises(ValueError, match="file name"):
        dialog.request()
    qtbot.keyClicks(dialog.base_edit, "" if typed.endswith("/") else "/")
    dialog.base_edit.setText(str(tmp_path) + "/out")
    assert ok.isEnabled() and dialog.request().h5_path == tmp_path / "out.h5"
    dialog.base_edit.setText(str(tmp_path))               # an existing folder, without a slash
    assert not ok.isEnabled() and "folder" in dialog.message.text()


# --------------------------------------------------------------------------- items 2 and 3
def _assert_every_view_empty(window) -> None:
    assert window.latest_snapshot is None
    assert window.lattice_view.is_empty and window.lattice_view.empty_message == "no batch yet"
    for title in ("Spawn", "Energy", "Displacement", "Coverage", "Training"):
        panel = window.panels[title]
        assert panel._stack.currentWidget() is panel.empty_label, title
    assert window.text_bridge_panel.view.toPlainText() == "no batch yet"
    assert not window.health_panel.chips and "waiting" in window.health_panel.summary.text()
    for key in ("batch", "step", "active", "loss", "rate"):
        assert window.run_status.labels[key].text() == "–", key
    assert window.step_label.text().strip() == "– / –"


def test_apply_config_clears_every_view_at_once(qtbot, make_window):
    """Guards against stale views after Apply: the title said 8×6×5 while the 3D view kept
    "lattice 6 × 6 × 5", and the loss curve and status bar kept the old run's batch."""
    window = make_window()
    _step_once(qtbot, window)
    _step_once(qtbot, window)
    assert "lattice 6 × 6 × 5" in window.lattice_view.info_text
    panel = window.config_panel
    panel.confirm = lambda text: True
    panel.editors["lattice_width"].setText("8")
    with qtbot.waitSignal(window.worker.loaded, timeout=20_000):
        panel.apply_button.click()
    qtbot.waitUntil(lambda: window.worker.config.lattice_width == 8)
    assert window.windowTitle().endswith("8×6×5")
    _assert_every_view_empty(window)
    qtbot.wait(300)                      # no later frame brings the old batch back
    _assert_every_view_empty(window)
    snap = _step_once(qtbot, window)
    assert snap.report.step == 1 and snap.telemetry.lattice_shape == (8, 6, 5)
    assert "lattice 8 × 6 × 5" in window.lattice_view.info_text
    assert window.run_status.labels["batch"].text().startswith("batch 1 ")


def test_reset_asks_first_and_keeps_the_weights_when_declined(qtbot, make_window):
    """Guards against Reset (Ctrl+R) throwing trained weights away on one keystroke."""
    window = make_window()
    _step_once(qtbot, window)
    trainer = window.worker.trainer
    asked: list[str] = []
    window.confirm = lambda title, text: asked.append(text) is not None and False
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.wait(500)
    assert len(asked) == 1 and "1 trained batch" in asked[0]
    assert window.worker.trainer is trainer and trainer.step_count == 1
    assert window.latest_snapshot is not None and window.latest_snapshot.report.step == 1

    window.confirm = lambda title, text: True
    with qtbot.waitSignal(window.worker.loaded, timeout=20_000):
        window.reset_action.trigger()
    qtbot.waitUntil(lambda: window.worker.trainer is not trainer and window.worker_state == "idle")
    assert window.worker.trainer.step_count == 0
    _assert_every_view_empty(window)


# --------------------------------------------------------------------------- item 5
def test_replay_states_agree_with_each_other(qtbot, small_config, tiny_dataset, six_batch_recording, six_reports):
    """Guards against a replay that contradicts itself: badge "loading" for ever, config "waiting
    for the model to load", text bridge "waiting for the first batch", a banner offering Run and
    Step while both are disabled, the replay step slider at 0 while every view is at the last
    step, and an empty "spawns per batch over the run" at the last batch."""
    _, reports = six_reports
    window = _replay_only_window(qtbot, small_config, tiny_dataset, six_batch_recording)
    qtbot.waitUntil(lambda: window.snapshots_drawn >= 1, timeout=10_000)   # every view has it
    steps = window.latest_snapshot.telemetry.num_steps
    assert steps == reports[0].telemetry.num_steps

    badge = window.run_status.labels["state"]
    assert badge.text() == "replay" and "not started" in badge.toolTip()
    assert not window.run_action.isEnabled() and not window.step_action.isEnabled()
    banner = window.banner.label.text()
    assert "Run" not in banner and "not started" in banner and "Start live training" in banner
    assert not window.notice.isVisible()
    message = window.config_panel.message.text()
    assert "six.h5" in message and "waiting" not in message
    assert window.config_panel.editors["lattice_width"].text() == "6"
    header = window.text_bridge_panel.header.text()
    assert "waiting" not in header and "recording" in header
    assert window.step_slider.value() == steps
    assert window.recordings.timeline.step == steps            # the replay slider agrees
    assert window.recordings.timeline.step_label.text() == f"step {steps} / {steps}"

    window.recordings.timeline.batch_selected.emit(RECORDED_BATCHES - 1)
    qtbot.waitUntil(lambda: window.latest_snapshot.batch_label.startswith(f"recording batch {RECORDED_BATCHES}/"),
                    timeout=10_000)
    qtbot.waitUntil(lambda: window.snapshots_drawn >= 2, timeout=10_000)
    granted = window.panels["Spawn"].history_curves["granted"]
    expected = [int(r.telemetry.aggregates.spawn_granted.sum()) / int(r.telemetry.aggregates.active[0])
                for r in reports]                                # children per placed flow
    np.testing.assert_allclose(np.asarray(granted.yData), expected)   # every batch, not only those viewed
    assert list(np.asarray(granted.xData)) == [r.step for r in reports]


def test_training_plot_shows_a_single_batch(qtbot, make_window):
    """Guards against an empty training plot when the run has one batch (a line through one point
    draws nothing): after one Step the loss is a visible dot at (batch 1, loss)."""
    window = make_window()
    snap = _step_once(qtbot, window)
    panel = window.panels["Training"]
    for key in ("loss", "mse", "cosine_loss"):
        curve = panel.smooth_curves[key]
        assert curve.opts["symbol"] == "o", key
        assert list(curve.xData) == [1.0] and curve.yData[0] == pytest.approx(getattr(snap.report, key))
        assert curve.scatter.isVisible() and len(curve.scatter.data) == 1
    _step_once(qtbot, window)
    assert panel.smooth_curves["loss"].opts["symbol"] is None    # a line again from two batches


# --------------------------------------------------------------------------- item 4
def _with_plane_energy_steps(telemetry, steps: np.ndarray | None):
    """``telemetry`` carrying the given per-step deposits (None: a batch recorded without them)."""
    return dataclasses.replace(telemetry, plane_energy_steps=steps)


def test_coverage_heatmaps_follow_the_step_slider(qtbot, six_reports):
    """Guards against heatmaps that stay at the end of the batch while the caption names step t."""
    from app.panels.coverage_panel import CoveragePanel
    from app.snapshot import Snapshot

    _, reports = six_reports
    tel = reports[0].telemetry
    T = tel.num_steps
    final = tel.plane_energy.astype(np.float32)
    assert final.max() > 0
    # Cumulative deposits that grow step by step and end at plane_energy, cell by cell.
    growth = (np.arange(T + 1, dtype=np.float32) / T) ** 2
    steps = (growth[:, None, None, None] * final[None]).astype(np.float32)
    steps[T // 2, 0, 0, 0] = 0.0
    panel = CoveragePanel()
    qtbot.addWidget(panel)
    panel.log_check.setChecked(False)
    panel.set_snapshot(Snapshot(telemetry=_with_plane_energy_steps(tel, steps), history={}))
    for t in (2, T // 2, T):
        panel.set_step(t)
        for p, image in enumerate(panel.images):
            np.testing.assert_array_equal(image.image, steps[t, p])
        assert tuple(image.levels) == (0.0, pytest.approx(float(final.max())))   # fixed over steps
        assert f"up to step {t} of {T}" in panel.caption.text()
        reached = float(np.mean(steps[t, 0] > 0))
        assert f"{reached:.0%} of cells" in panel.plane_plots[0].titleLabel.text
    assert not np.array_equal(panel.images[0].image, steps[2, 0])

    old = CoveragePanel()                 # a recording without per-step deposits says so
    qtbot.addWidget(old)
    old.log_check.setChecked(False)
    old.set_snapshot(Snapshot(telemetry=_with_plane_energy_steps(reports[1].telemetry, None), history={}))
    old.set_step(2)
    assert "end of batch (this recording has no per-step deposits)" in old.caption.text()
    np.testing.assert_array_equal(old.images[0].image, reports[1].telemetry.plane_energy[0])


# --------------------------------------------------------------------------- item 7
@pytest.fixture(scope="module")
def debug_batch():
    """One real batch of the debug lattice (20×20×10, flat: the shape whose bottom was cut off)."""
    from energy_flow.config import create_debug_config
    config = create_debug_config(device="cpu", max_steps=6, batch_size=4)
    trainer = EnergyTrainer(build_model(config), config)
    gen = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(config.batch_size, config.teacher_dim, generator=gen), dim=1)
    return trainer.train_step((x, x.roll(1, 0)))


def test_3d_legend_tells_the_truth_and_the_box_is_framed(qtbot, debug_batch):
    """Guards against a legend that showed one orange square for heads drawn in the energy map's
    purples, an energy colour bar left up under "colour by sample", and a default camera (and
    exported PNG) that cut off the bottom of the box."""
    from app.colormaps import SAMPLE_PALETTE, energy_colors
    from app.snapshot import Snapshot
    from app.view.lattice_view import LatticeView
    from app.view.style import BACKGROUND

    view = LatticeView()
    qtbot.addWidget(view)
    view.resize(900, 560)
    view.show()
    qtbot.waitExposed(view)
    tel = debug_batch.telemetry
    view.set_snapshot(Snapshot(telemetry=tel, history={}, report=debug_batch))
    view.set_step(2)
    geo = view.geometry
    alive = geo.alive_at(2)
    assert alive.sum() > 10
    label, swatches, _ = view.legend_entries[0]
    assert "energy" in label and "flow energy" in view.colour_bars
    np.testing.assert_allclose(view.head_colors, energy_colors(geo.energy[alive, 2]))
    assert len(swatches) >= 3 and len({s for s in swatches}) == len(swatches)   # a range, not one colour

    view.set_color_mode("sample")
    label, swatches, _ = view.legend_entries[0]
    assert "sample" in label and "flow energy" not in view.colour_bars
    def colour_set(colors) -> set[tuple[float, ...]]:
        return {tuple(round(float(v), 3) for v in c) for c in colors}

    drawn = colour_set(view.head_colors)
    assert drawn == colour_set(SAMPLE_PALETTE[tel.flows.sample_index[geo.rows[alive]] % len(SAMPLE_PALETTE)])
    assert drawn <= colour_set(swatches)

    view.reset_view()
    w, h = view.canvas.size
    corners = view.box_corners_on_screen()
    assert corners[:, 0].min() >= 0 and corners[:, 0].max() <= w
    assert corners[:, 1].min() >= 0 and corners[:, 1].max() <= h
    background = np.array([int(BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)])
    for size in ((1920, 1080), (1280, 800)):
        image = view.render_image(size)
        edge = np.concatenate([image[-3:, :, :3].reshape(-1, 3), image[:, -3:, :3].reshape(-1, 3)])
        assert np.abs(edge.astype(int) - background).max() <= 2, f"scene cut at the edge of a {size} export"


# --------------------------------------------------------------------------- items 12-14
def test_window_says_what_the_batch_does_and_that_it_records(qtbot, make_window, tmp_path):
    """Guards against silence while a batch trains (no phase, no duration) and a recording shown
    only as a pressed button; Ctrl+C's summary names what was stopped and saved."""
    from app.main import interrupted_summary

    window = make_window()
    phases: list[tuple[int, str]] = []
    window.worker.phase_changed.connect(lambda batch, phase, _s: phases.append((batch, phase)))
    window.recordings._ask_record = lambda parent: str(tmp_path / "rec.h5")
    window.recordings.record_action.setChecked(True)
    qtbot.waitUntil(lambda: window.run_status.labels["rec"].isVisible(), timeout=5000)
    _step_once(qtbot, window)
    _step_once(qtbot, window)
    assert phases[:4] == [(1, "forward"), (1, "backward"), (1, "snapshot"), (1, "done")]
    assert phases[4:8] == [(2, "forward"), (2, "backward"), (2, "snapshot"), (2, "done")]
    qtbot.waitUntil(lambda: window.run_status.labels["phase"].text().startswith("last batch "), timeout=2000)
    assert not window.run_status.busy.isVisible()
    assert window.run_status.labels["rec"].text() == "REC rec.h5 · 2 batches"
    window.recordings.record_action.setChecked(False)
    qtbot.waitUntil(lambda: not window.run_status.labels["rec"].isVisible(), timeout=5000)
    assert window.recordings.start_folder() == str(tmp_path)        # Open starts where it recorded
    summary = interrupted_summary(window)
    assert "after 2 batches" in summary and "rec.h5: 2 batches recorded" in summary
    assert "\n" not in summary
