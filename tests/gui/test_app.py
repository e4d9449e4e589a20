"""The whole app under Xvfb: window, worker thread, controls, panels, errors, shutdown.

Every window trains a real tiny model on real teacher embeddings of corpus pairs (see
conftest.py). Assertions compare what the widgets show with the snapshot the worker built
from the real batch — not merely that a signal fired.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PyQt6.QtCore import Qt, QTimer

from app.snapshot import Snapshot
from app.sources.worker import TrainingWorker
from app.view.lattice_view import LatticeView
from app.view.style import LAYERS
from app.window.failures import UnavailableWidget
from app.window.main_window import WINDOW_TITLE, MainWindow
from energy_flow.diagnostics import Level, assess_batch

SNAPSHOT_TIMEOUT_MS = 15_000


def _y(item) -> np.ndarray:
    return np.asarray(item.yData)


def _step_once(qtbot, window) -> Snapshot:
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS) as shown:
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")
    return shown.args[0]


def _pixels_differing(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.any(np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)) > 24, axis=-1).sum())


# --------------------------------------------------------------------------- opening
def test_window_opens_with_the_lattice_and_every_panel(qtbot, make_window):
    window = make_window()
    assert window.windowTitle().startswith(WINDOW_TITLE)
    assert isinstance(window.lattice_view, LatticeView) and window.lattice_view.isVisible()
    expected = {"Health", "Config", "Training", "Text bridge", "Spawn", "Energy", "Displacement", "Coverage",
                "Inspector", "Diagnostics", "Compare"}
    assert set(window.docks) == expected
    for title, dock in window.docks.items():
        # A tabbed dock behind another tab is hidden; its tab group must be on screen.
        assert dock.isVisible() or any(d.isVisible() for d in window.tabifiedDockWidgets(dock)), title
        panel = window.panels[title]
        assert not isinstance(panel, UnavailableWidget), f"{title}: {panel.text()}"
    assert window.lattice_view.is_empty                    # nothing drawn before the first batch
    assert window.run_status.labels["data"].text().startswith("bundled corpus")
    assert "cpu" in window.run_status.labels["device"].text()
    assert window.run_action.isEnabled() and not window.pause_action.isEnabled()
    assert window.config_panel.current is window.worker.config


# --------------------------------------------------------------------------- step
def test_step_runs_exactly_one_batch_and_every_panel_shows_it(qtbot, make_window):
    window = make_window()
    trainer = window.worker.trainer
    emitted: list[Snapshot] = []
    window.worker.snapshot_ready.connect(emitted.append)
    panels = window.panels
    for title in ("Spawn", "Energy", "Displacement", "Coverage", "Training"):
        assert panels[title]._stack.currentWidget() is panels[title].empty_label, title
    assert not window.health_panel.chips
    assert window.text_bridge_panel.view.toPlainText() == "no batch yet"

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)    # shortcuts need the active window
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS) as shown:
        qtbot.keyClick(window.lattice_view, Qt.Key.Key_S)      # the Step shortcut
    qtbot.waitUntil(lambda: window.worker_state == "paused")
    qtbot.wait(400)                                            # room for a second batch, if any
    assert trainer.step_count == 1
    assert len(emitted) == 1 and window.snapshots_received == 1
    snap = shown.args[0]
    assert snap is emitted[0] and snap.report.step == 1
    tel, agg, hist = snap.telemetry, snap.telemetry.aggregates, snap.history
    last = tel.num_steps
    assert window.step_slider.maximum() == last and window.step_slider.value() == last

    # the 3D view
    view = window.lattice_view
    assert not view.is_empty and view.step == last
    assert view.total_flows == tel.flows.total_flows and 0 < view.shown_flows <= tel.flows.num_flows
    assert snap.batch_label in view.info_text
    # pyqtgraph panels written elsewhere: their plotted arrays are the batch's arrays
    for title in ("Spawn", "Energy", "Displacement", "Coverage", "Training"):
        assert panels[title]._stack.currentWidget() is not panels[title].empty_label, title
    np.testing.assert_array_equal(_y(panels["Spawn"].step_curves["requested"]), agg.spawn_requested)
    np.testing.assert_array_equal(_y(panels["Spawn"].step_curves["denied"]), agg.spawn_denied)
    np.testing.assert_array_equal(_y(panels["Energy"].hist_curve), agg.energy_hist[last])
    np.testing.assert_allclose(_y(panels["Displacement"].band_curves[2]["p50"]), agg.delta_percentiles[1:, 2, 2],
                               rtol=1e-6)
    coverage = panels["Coverage"]
    for p, image in enumerate(coverage.images):
        expected = tel.plane_energy[p]
        if coverage.log_check.isChecked():
            expected = np.log1p(np.maximum(expected, 0.0))
        np.testing.assert_allclose(image.image, expected, rtol=1e-6)
    np.testing.assert_allclose(_y(panels["Training"].raw_curves["loss"]), hist["loss"])
    assert hist["loss"][-1] == pytest.approx(snap.report.loss)
    # text bridge: the batch's first samples, their nearest sentences and cos(output, target)
    text = window.text_bridge_panel.plain_text()
    assert len(snap.decoded) == 3
    for sample, row in zip(snap.decoded, snap.report.sample_indices):
        assert sample.input_text == window.worker.dataset.input_texts[row]
        assert sample.input_text in text and sample.target_text in text
        assert sample.decoded[0][0] in text and f"{sample.target_similarity:+.3f}" in text
        out, target = snap.report.outputs[list(snap.report.sample_indices).index(row)], \
            window.worker.dataset.targets[row].numpy()
        cos = float(out @ target / (np.linalg.norm(out) * np.linalg.norm(target)))
        assert sample.target_similarity == pytest.approx(cos, abs=1e-5)
    # health strip: a chip per verdict of this snapshot, worst first, problems spelled out
    panel = window.health_panel
    ordered = snap.health.worst_first()
    placed = sorted(panel.chips.values(), key=lambda c: (panel._grid.getItemPosition(panel._grid.indexOf(c))[:2]))
    assert [c.verdict for c in placed] == list(ordered)
    for chip in placed:
        assert chip.label.text() == f"{chip.verdict.level.mark} {chip.verdict.title}"
    problems = [v for v in ordered if v.level >= Level.WARNING][:2]
    shown = [label.full_text() for label in panel.detail_lines]
    for v, line in zip(problems, shown):
        assert line == f"{v.level.mark} {v.title}: {v.detail}"
    # status bar
    status = window.run_status.labels
    assert status["batch"].text() == snap.batch_label
    assert status["loss"].text() == f"loss {snap.report.loss:.4f}"
    assert status["active"].text() == f"active flows: {int(agg.active[last])}"

    # the step slider moves every step-aware panel (coalesced into the next frame)
    t = 2
    window.step_slider.setValue(t)
    qtbot.waitUntil(lambda: view.step == t, timeout=2000)
    np.testing.assert_array_equal(_y(panels["Energy"].hist_curve), agg.energy_hist[t])
    assert panels["Energy"].step_line.value() == t
    assert panels["Spawn"].step_line.value() == t
    assert all(line.value() == t for line in panels["Displacement"].step_lines)
    assert coverage.step_line.value() == t
    assert status["step"].text() == f"step {t}/{last}"
    assert status["active"].text() == f"active flows: {int(agg.active[t])}"


# --------------------------------------------------------------------------- run / pause
def test_run_then_pause_stops_within_one_batch(qtbot, make_window):
    window = make_window()
    trainer = window.worker.trainer
    window.run_action.trigger()
    qtbot.waitUntil(lambda: window.snapshots_received >= 3, timeout=SNAPSHOT_TIMEOUT_MS)
    assert window.worker_state == "running" and window.pause_action.isEnabled()
    at_pause = trainer.step_count
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused", timeout=5000)
    stopped_at = trainer.step_count
    assert stopped_at - at_pause <= 1          # at most the batch that was in flight
    qtbot.wait(500)
    assert trainer.step_count == stopped_at    # and nothing after it
    assert window.run_action.isEnabled() and not window.pause_action.isEnabled()


def test_closing_during_run_leaves_no_running_thread(qtbot, make_window, small_config):
    # A bigger lattice than "tiny" so a batch is long enough to be caught in flight.
    window = make_window(small_config(lattice_width=20, lattice_height=20, max_active_flows=4000))
    window.run_action.trigger()
    qtbot.waitUntil(lambda: window.snapshots_received >= 1, timeout=SNAPSHOT_TIMEOUT_MS)
    assert window.worker_thread.isRunning()
    asked: list[str] = []
    window.close_guard.choose = lambda title, text: asked.append(text) or "close"   # "Close without saving"
    t0 = time.perf_counter()
    window.close()
    elapsed = time.perf_counter() - t0
    assert asked and "not saved" in asked[0]      # trained batches would be lost: it asked first
    print(f"\nclose during Run joined the training thread in {elapsed * 1000:.0f} ms")
    assert not window.worker_thread.isRunning()
    assert elapsed < 5.0


# --------------------------------------------------------------------------- rendering
def test_rendered_lattice_is_not_blank_and_shows_trajectories(qtbot, make_window):
    window = make_window()
    _step_once(qtbot, window)
    view = window.lattice_view
    size = (640, 400)
    full = view.render_image(size)
    assert full.shape == (400, 640, 4)
    assert full[..., :3].std() > 5                         # not a flat image
    for name in LAYERS:
        view.set_layer_visible(name, name == "trajectories")
    only_trajectories = view.render_image(size)
    view.set_layer_visible("trajectories", False)
    nothing = view.render_image(size)                      # overlay text and legend only
    trajectory_pixels = _pixels_differing(only_trajectories, nothing)
    print(f"\ntrajectory pixels in a {size[0]}×{size[1]} render: {trajectory_pixels}")
    assert trajectory_pixels > 500


# --------------------------------------------------------------------------- config
def test_invalid_config_shows_the_error_and_changes_nothing(qtbot, make_window):
    window = make_window()
    worker, panel = window.worker, window.config_panel
    config, trainer = worker.config, worker.trainer
    asked: list[str] = []
    panel.confirm = lambda text: asked.append(text) or True
    with qtbot.assertNotEmitted(window.config_requested, wait=300):
        panel.editors["lattice_width"].setText("1")
        panel.apply_button.click()
    assert "EnergyConfig.lattice_width = 1 is invalid: must be an integer ≥ 2" in panel.message.text()
    panel.revert()
    with qtbot.assertNotEmitted(window.config_requested, wait=100):
        panel.editors["spawn_threshold"].setText("0.01")     # below energy_threshold: a cross-field rule
        panel.apply_button.click()
    assert "spawn_threshold" in panel.message.text() and "energy_threshold" in panel.message.text()
    assert not asked
    assert worker.config is config and worker.trainer is trainer and worker.state == "idle"

    # a valid change is confirmed, then the worker rebuilds the model with it
    panel.revert()
    panel.editors["lattice_width"].setText("7")
    panel.apply_button.click()
    assert len(asked) == 1 and "lattice_width: 6 → 7" in asked[0]
    qtbot.waitUntil(lambda: worker.config.lattice_width == 7, timeout=10_000)
    assert worker.trainer is not trainer and worker.trainer.step_count == 0
    qtbot.waitUntil(lambda: panel.current is worker.config, timeout=2000)
    snap = _step_once(qtbot, window)
    assert snap.telemetry.lattice_shape == (7, 6, 5)


# --------------------------------------------------------------------------- responsiveness
def test_gui_event_loop_keeps_ticking_while_training(qtbot, make_window):
    window = make_window()
    _step_once(qtbot, window)          # first draw (shader compilation) is not part of training
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    drawn_before = window.snapshots_drawn
    window.run_action.trigger()
    qtbot.wait(3000)
    window.pause_action.trigger()
    timer.stop()
    qtbot.waitUntil(lambda: window.worker_state == "paused", timeout=5000)
    longest = max(gaps)
    drawn = window.snapshots_drawn - drawn_before
    print(f"\nGUI timer over 3 s of Run: longest gap {longest * 1000:.0f} ms, median "
          f"{np.median(gaps) * 1000:.1f} ms; {window.worker.trainer.step_count} batches trained, "
          f"{drawn} snapshots drawn of {window.snapshots_received} received")
    assert drawn >= 2                  # it really drew while training
    assert longest < 0.5


# --------------------------------------------------------------------------- errors
def test_nonfinite_loss_pauses_and_the_window_stays_usable(qtbot, make_window, nan_dataset):
    window = make_window(dataset=nan_dataset)
    worker = window.worker
    trainer = worker.trainer
    # a NaN target has no direction: the text bridge is unavailable, and the panel says why
    assert worker.text_bridge is None
    assert "unavailable" in window.text_bridge_panel.plain_text()
    weights = {k: v.clone() for k, v in trainer.processor.state_dict().items()}

    window.run_action.trigger()
    # the worker's state flips in its own thread; the banner follows once the queued signal lands
    qtbot.waitUntil(lambda: worker.state == "error" and window.banner.isVisible(),
                    timeout=SNAPSHOT_TIMEOUT_MS)
    assert trainer.step_count == 1                        # paused after the first bad batch
    assert window.banner.kind == "error"
    assert "loss is nan" in window.banner.label.text() and "paused" in window.banner.label.text()
    for key, value in trainer.processor.state_dict().items():
        assert torch.equal(value, weights[key]), key      # the update was skipped
    qtbot.waitUntil(lambda: "finite" in window.health_panel.chips, timeout=2000)
    chip = window.health_panel.chips["finite"]
    assert chip.verdict.level is Level.FAILURE and "loss is nan" in chip.verdict.detail
    assert chip.label.text().startswith("✖")
    assert "loss is nan" in window.health_panel.detail_lines[0].full_text()   # worst first

    # still usable: the slider drives the view, Step trains again (and pauses again), Run is offered
    assert window.run_action.isEnabled() and window.step_action.isEnabled()
    window.step_slider.setValue(0)
    qtbot.waitUntil(lambda: window.lattice_view.step == 0, timeout=2000)
    window.banner.dismiss.click()
    assert not window.banner.isVisible()
    window.step_action.trigger()
    qtbot.waitUntil(lambda: trainer.step_count == 2 and window.banner.isVisible(), timeout=SNAPSHOT_TIMEOUT_MS)
    assert worker.state == "error"


# --------------------------------------------------------------------------- health (pure)
def test_a_broken_run_turns_the_strip_red_worst_first(qtbot, make_window):
    """Guards against the strip calling a broken run healthy: with the displacement head frozen
    (nobody moves, nobody lands) the landing, timeout and motion chips fail and lead the strip."""
    window = make_window()
    head = window.worker.trainer.processor.carrier.displacement_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    snap = _step_once(qtbot, window)
    assert snap.telemetry.aggregates.landed.sum() == 0
    panel = window.health_panel
    for key in ("landing", "timeouts", "motion"):
        assert panel.chips[key].verdict.level is Level.FAILURE, key
        assert panel.chips[key].label.text().startswith("✖")
    first_row = [panel._grid.itemAtPosition(0, c).widget().verdict.level for c in range(3)]
    assert first_row == [Level.FAILURE] * 3
    assert panel.summary.text().startswith("Health: ✖")
    assert any("Landing: 0 of" in label.full_text() for label in panel.detail_lines) or \
        "more" in panel.detail_lines[-1].full_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA (device='cuda' must fail)")
def test_a_model_that_cannot_be_built_is_reported_and_fixable_from_the_config_panel(
        qtbot, tiny_dataset, small_config):
    worker = TrainingWorker(small_config(device="cuda"), dataset_factory=lambda: tiny_dataset)
    window = MainWindow(worker)
    qtbot.addWidget(window)
    # 1600×1000 as in make_window: at the default ~1070×670, pytest runs of this test crashed
    # intermittently (segfault in pyqtgraph's ImageItem.paint, coverage panel; not understood yet).
    window.resize(1600, 1000)
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.worker_state == "error", timeout=20_000)
    assert worker.trainer is None
    assert "no CUDA device" in window.banner.label.text()
    assert not window.run_action.isEnabled() and not window.step_action.isEnabled()
    panel = window.config_panel
    assert panel.isEnabled() and "Not in effect" in panel.message.text()
    panel.confirm = lambda text: True
    panel.editors["device"].setCurrentText("cpu")
    panel.apply_button.click()
    qtbot.waitUntil(lambda: window.worker_state == "idle", timeout=10_000)
    assert worker.trainer is not None and worker.config.device == "cpu"
    assert window.step_action.isEnabled()
    _step_once(qtbot, window)
    assert worker.trainer.step_count == 1
    window.shutdown()


def test_a_snapshot_without_report_is_drawn_like_a_replayed_batch(qtbot, make_window):
    """``MainWindow.show_snapshot`` is the entry point for replayed batches too (report=None)."""
    window = make_window()
    live = _step_once(qtbot, window)
    replayed = Snapshot(telemetry=live.telemetry, history=live.history, report=None,
                        source="run.h5", batch_label="recording batch 1/1",
                        health=assess_batch(live.telemetry, None, live.history))
    with qtbot.waitSignal(window.snapshot_shown, timeout=5000) as shown:
        window.show_snapshot(replayed)
    assert shown.args[0] is replayed
    assert window.run_status.labels["batch"].text() == "recording batch 1/1"
    # No report: the loss is the history's (a recording's recorded loss), as the Training panel shows.
    assert window.run_status.labels["loss"].text() == f"loss {live.report.loss:.4f}"
    assert window.health_panel.chips["gradients"].verdict.level is Level.UNKNOWN
    assert "no decoded text for replayed batches" in window.text_bridge_panel.plain_text()
    assert "recording batch 1/1" in window.lattice_view.info_text


def test_bad_data_is_reported_and_the_window_stays_usable(qtbot, tmp_path, small_config):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"input": "a", "target": "b"}\n{"input": "c"}\n', encoding="utf-8")
    worker = TrainingWorker(small_config(), data_source=str(bad))   # the real loader, no injection
    window = MainWindow(worker)
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.worker_state == "error", timeout=20_000)
    text = window.banner.label.text()
    assert "Loading failed" in text and f"{bad}, line 2" in text and 'missing field "target"' in text
    assert worker.trainer is None and not window.run_action.isEnabled()
    window.step_slider.setValue(0)                      # the window still responds
    window.banner.dismiss.click()
    assert not window.banner.isVisible()
    window.shutdown()


def test_text_bridge_and_3d_view_always_show_the_same_batch(qtbot, make_window):
    """Issue 28: while training, the Text bridge (late in the drawing round) named an older batch
    than the 3D view. Checked between every two events while batches arrive faster than a round."""
    window = make_window()
    view, bridge = window.lattice_view, window.text_bridge_panel
    seen: list[tuple[str, str]] = []

    def check() -> None:
        if view._snapshot is not None:
            seen.append((view._snapshot.batch_label, bridge.snapshot.batch_label if bridge.snapshot else "none"))
    probe = QTimer()
    probe.setInterval(2)
    probe.timeout.connect(check)
    probe.start()
    window.run_action.trigger()
    qtbot.waitUntil(lambda: window.snapshots_drawn >= 6, timeout=60_000)
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused", timeout=20_000)
    probe.stop()
    labels = {shown for shown, _ in seen}
    assert len(labels) >= 4, labels
    differing = [pair for pair in seen if pair[0] != pair[1]]
    assert not differing, differing[:5]
    assert view._snapshot.batch_label in bridge.plain_text()


def test_a_step_chosen_on_the_slider_is_held_for_new_batches_and_says_so(qtbot, make_window):
    window = make_window()
    for _ in range(2):
        with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS):
            window.step_action.trigger()
        qtbot.waitUntil(lambda: window.worker_state == "paused")
        if window.current_step == window.step_slider.maximum():
            assert "held" not in window.step_label.text()          # following the last step
            window.step_slider.setValue(1)
    assert window.current_step == 1                                 # the second batch kept step 1
    assert window.step_label.text().strip() == f"1 / {window.step_slider.maximum()} · held"
    assert "stays chosen" in window.step_label.toolTip()
    window.step_slider.setValue(window.step_slider.maximum())        # back to following
    assert "held" not in window.step_label.text() and "follows" in window.step_label.toolTip()


def test_a_long_health_summary_wraps_into_lines_the_strip_has_room_for(qtbot, make_window):
    """With a warning, three checks that cannot judge and eleven ok the summary takes two lines
    at 1280 px; the strip was sized for one, so its first line was cut off at the top."""
    from dataclasses import replace as replaced

    from energy_flow.diagnostics import HealthReport
    window = make_window()
    window.resize(1280, 800)
    snap = _step_once(qtbot, window)
    levels = [Level.WARNING] + [Level.UNKNOWN] * 3
    verdicts = tuple(replaced(v, level=levels[i] if i < len(levels) else Level.OK,
                              detail=f"{v.detail} (planted level)")
                     for i, v in enumerate(snap.health.verdicts))
    window.health_panel.set_snapshot(replaced(snap, health=HealthReport(verdicts)))
    summary = window.health_panel.summary
    assert "1 warning" in summary.text() and "3 cannot judge" in summary.text()

    def fits() -> bool:
        return summary.heightForWidth(summary.width()) <= summary.height()
    qtbot.waitUntil(fits, timeout=3000)
    lines = summary.heightForWidth(summary.width()) // summary.fontMetrics().lineSpacing()
    print(f"\nsummary: {lines} line(s) at {summary.width()} px, label {summary.height()} px tall")
