"""The 3D lattice view and the pyqtgraph panels draw what the telemetry says.

Telemetry comes from real training steps of the tiny preset (a fresh model spawns, is denied
by the budget, lands on both planes and times out), so every assertion compares a widget's
plotted data with the arrays of a real batch. Runs under Xvfb (pytest-xvfb); OpenGL is real.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QPointF, Qt
from PyQt6.QtGui import QImage, QWheelEvent
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication

from app.colormaps import DEPOSIT_LOG_LABEL
from app.panels.coverage_panel import CoveragePanel
from app.panels.displacement_panel import DisplacementPanel
from app.panels.energy_panel import EnergyPanel
from app.panels.spawn_panel import SpawnPanel
from app.panels.training_panel import TrainingPanel, debiased_ema
from app.snapshot import Snapshot
from app.view.geometry import build_geometry
from app.view.lattice_view import LatticeView
from app.view.sampling import sample_flows
from app.view.step_visuals import StepLinesVisual, StepPointsVisual
from vispy.visuals.shaders.program import ModularProgram
from app.view.style import LAYERS
from energy_flow.config import create_tiny_config
from energy_flow.trace.telemetry import REASON_ACTIVE
from tests.gui.builders import trained_snapshot

RENDER_SIZE = (480, 320)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    """A snapshot of the third real batch of a fresh tiny model, with its run history."""
    snap = trained_snapshot(batches=3, seed=0)
    flows = snap.telemetry.flows
    assert flows is not None and flows.num_flows > 100
    assert snap.telemetry.aggregates.spawn_granted.sum() > 0
    return snap


def _y(item) -> np.ndarray:
    """The data given to a curve (before clip-to-view and downsampling for display)."""
    return np.asarray(item.yData)


def _x(item) -> np.ndarray:
    return np.asarray(item.xData)


def _alive_in_sample(flows, rows: np.ndarray, t: int) -> int:
    pos = flows.positions[rows, t, 0]
    return int(((flows.birth_step[rows] <= t) & (t < flows.end_step[rows]) & np.isfinite(pos)).sum())


# ------------------------------------------------------------------------------ empty state
@pytest.mark.parametrize("cls", [SpawnPanel, EnergyPanel, DisplacementPanel, CoveragePanel, TrainingPanel])
def test_panels_say_no_batch_yet_before_the_first_snapshot(qtbot, cls, snapshot):
    panel = cls()
    qtbot.addWidget(panel)
    assert panel._stack.currentWidget() is panel.empty_label
    assert panel.empty_label.text() == "no batch yet"
    panel.set_step(3)                                  # no snapshot yet: must not fail
    panel.set_snapshot(snapshot)
    assert panel._stack.currentWidget() is not panel.empty_label


def test_lattice_view_empty_state_then_data(qtbot, snapshot):
    view = LatticeView()
    qtbot.addWidget(view)
    view.resize(640, 480)
    view.show()
    qtbot.waitExposed(view)
    assert view.is_empty and view.empty_message == "no batch yet"
    assert view.shown_flows == 0 and view.head_count == 0
    view.set_step(2)
    blank = view.render_image(RENDER_SIZE)
    assert blank.shape == (RENDER_SIZE[1], RENDER_SIZE[0], 4) and blank.dtype == np.uint8
    view.set_snapshot(snapshot)
    assert not view.is_empty and view.empty_message is None
    assert view.step == 2                              # the step asked for before the data arrived


# ------------------------------------------------------------------------------ lattice view
def _shown_view(qtbot, snapshot, width: int = 800, height: int = 600) -> LatticeView:
    """A lattice view on screen at ``width``×``height`` showing ``snapshot``."""
    v = LatticeView()
    qtbot.addWidget(v)
    v.resize(width, height)
    v.show()
    qtbot.waitExposed(v)
    v.set_snapshot(snapshot)
    return v


@pytest.fixture
def view(qtbot, snapshot) -> LatticeView:
    return _shown_view(qtbot, snapshot)


def test_showing_n_of_m_follows_budget_and_batch_total(view, snapshot):
    flows = snapshot.telemetry.flows
    assert view.total_flows == flows.total_flows == snapshot.telemetry.total_flows
    assert view.shown_flows == min(flows.num_flows, view.controls.budget_spin.value())
    assert f"showing {view.shown_flows:,} of {flows.total_flows:,} flows" in view.info_text
    view.set_display_budget(100)
    assert view.shown_flows == 100
    assert f"showing 100 of {flows.total_flows:,} flows" in view.info_text
    assert view.controls.budget_spin.value() == 100


def test_enter_in_flows_drawn_applies_it_and_gives_the_keys_back(qtbot, view, snapshot):
    """Issue 28: after typing in "Flows drawn", P and the other one-key shortcuts did nothing
    until the canvas was clicked — the spin box kept the keyboard."""
    from PyQt6.QtCore import Qt

    spin = view.controls.budget_spin
    view.activateWindow()
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "200")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert spin.value() == 200 and view.shown_flows == min(200, snapshot.telemetry.flows.num_flows)
    qtbot.waitUntil(lambda: not spin.hasFocus())


def test_heads_are_the_flows_alive_at_the_step(view, snapshot):
    agg = snapshot.telemetry.aggregates
    flows = snapshot.telemetry.flows
    assert flows.traced_samples == create_tiny_config().batch_size   # whole batch traced
    counts = []
    for t in range(agg.num_steps + 1):
        view.set_step(t)
        assert view.head_count == int(agg.active[t])   # every flow drawn: heads = active flows
        counts.append(view.head_count)
    assert len(set(counts)) > 2
    view.set_display_budget(120)
    rows = sample_flows(flows, 120)
    view.set_step(1)
    assert view.head_count == _alive_in_sample(flows, rows, 1)


def test_render_shows_trajectories_and_toggles_hide_layers(view, snapshot):
    view.set_step(snapshot.telemetry.num_steps)
    full = view.render_image(RENDER_SIZE).astype(np.int16)
    assert full.shape == (RENDER_SIZE[1], RENDER_SIZE[0], 4)
    background = full[2, RENDER_SIZE[0] // 2, :3]       # top strip between info text and colour bar
    assert (np.abs(full[..., :3] - background).sum(axis=2) > 30).mean() > 0.05, "render looks blank"

    for name in LAYERS:
        if name != "trajectories":
            view.set_layer_visible(name, False)
    lines_only = view.render_image(RENDER_SIZE).astype(np.int16)
    view.set_layer_visible("trajectories", False)
    nothing = view.render_image(RENDER_SIZE).astype(np.int16)
    assert not view.controls.checkboxes["trajectories"].isChecked()
    assert not view.layers["trajectories"][0].visible and not view.layers["heads"][0].visible
    changed = (np.abs(lines_only[..., :3] - nothing[..., :3]).sum(axis=2) > 20).sum()
    # The camera frames the whole box (edge cells included), so the scene fills less of the
    # 480×320 image than when its bottom was cut off; a few hundred line pixels remain.
    assert changed > 150, f"only {changed} pixels differ with trajectories on vs off"

    view.set_layer_visible("trajectories", True)
    view.set_step(0)                                   # no segment ends at step 0
    assert not view.layers["trajectories"][0].visible
    view.set_step(snapshot.telemetry.num_steps)
    assert view.layers["trajectories"][0].visible


def test_moving_through_the_steps_sets_a_uniform_and_uploads_nothing(view, snapshot, monkeypatch):
    """Guards against scrubbing that slices, recolours or re-uploads the flows: a batch is
    uploaded once and the step reaches the shaders as one uniform per visual."""
    uploads: list[str] = []
    for cls in (StepPointsVisual, StepLinesVisual):
        for method in ("set_data", "set_colors"):
            real = getattr(cls, method)
            monkeypatch.setattr(cls, method, lambda self, *a, _real=real, _name=method, **k:
                                (uploads.append(_name), _real(self, *a, **k))[1])
    visuals = [view.layers[name][0] for name in ("trajectories", "heads", "spawns", "terminations")]
    drawn = [(v.positions, v.colors, v.windows) for v in visuals]
    for t in [*range(snapshot.telemetry.num_steps + 1), 3, 0]:
        view.set_step(t)
        assert [v.shared_program["u_step"] for v in visuals] == [float(t)] * 4
        assert f"step {t}/" in view.info_text
    assert uploads == []
    assert all(v.positions is p and v.colors is c and v.windows is w for v, (p, c, w) in zip(visuals, drawn))


def test_a_new_batch_and_a_step_change_build_no_shader_program(view, snapshot, monkeypatch):
    """Guards against a view that makes VisPy parse, compile and link shader programs again for
    every batch (a new transform object or VisPy's Mesh did: ~90 ms of a new batch's ~150 ms on
    software GL) or every step: after the first draw only data and uniforms change."""
    for t in range(snapshot.telemetry.num_steps + 1):  # every program built once (each visual drawn)
        view.set_step(t)
        view.render_image(RENDER_SIZE)
    builds: list[ModularProgram] = []
    real = ModularProgram._build
    monkeypatch.setattr(ModularProgram, "_build", lambda self: (builds.append(self), real(self))[1])
    later = trained_snapshot(batches=4, seed=0)        # another real batch of the same run
    for snap, step in ((later, 2), (snapshot, snapshot.telemetry.num_steps), (later, 0)):
        view.set_snapshot(snap)
        view.set_step(step)
        view.render_image(RENDER_SIZE)
    assert builds == []


def test_grabbing_the_widget_shows_the_scene(view, snapshot):
    """Guards against screenshots (``QWidget.grab`` of the window, scripts/screenshot.py) with a
    blank hole where the view is: the canvas is a native window, which Qt's widget rendering
    does not see, so its host widget paints the scene for it."""
    view.set_step(snapshot.telemetry.num_steps)
    native = view.canvas.native
    grabbed = native.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    w, h = grabbed.width(), grabbed.height()
    assert (w, h) == tuple(int(v) for v in view.canvas.size)
    pixels = np.frombuffer(grabbed.constBits().asstring(grabbed.sizeInBytes()), np.uint8)
    image = pixels.reshape(h, grabbed.bytesPerLine() // 4, 4)[:, :w, :3].astype(np.int16)
    rendered = view.render_image((w, h))[..., :3].astype(np.int16)
    np.testing.assert_array_equal(image, rendered)


def test_dragging_and_wheeling_on_the_native_window_move_the_camera(view, qtbot):
    """Guards against a canvas that draws but ignores the real pointer: in the app, mouse and
    wheel events arrive at the native window the scene is drawn into, not at its host widget."""
    window = view.canvas.native.gl_window
    cam = view.view.camera
    azimuth, distance = cam.azimuth, cam.scale_factor
    start, end = QPoint(200, 200), QPoint(260, 200)
    QTest.mousePress(window, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for x in range(205, 261, 5):
        QTest.mouseMove(window, QPoint(x, 200))
    QTest.mouseRelease(window, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    assert cam.azimuth != azimuth
    wheel = QWheelEvent(QPointF(200, 200), QPointF(window.mapToGlobal(QPoint(200, 200))), QPoint(0, 0),
                        QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(window, wheel)
    assert cam.scale_factor < distance                 # wheeling forward zooms in


def test_one_frame_per_batch_reads_idle_not_zero_fps(view, snapshot, qtbot):
    """Guards against the '0.0 fps' a stranger saw while training: the view draws one frame per
    new batch, which is no frame rate; continuous redraws (turning the camera) are one."""
    view.set_snapshot(snapshot)
    qtbot.wait(1100)                                      # older frames leave the window
    view.set_snapshot(snapshot)
    qtbot.waitUntil(lambda: len(view._draw_times) > 0 and time.perf_counter() - view._draw_times[-1] < 0.5,
                    timeout=2000)
    assert view.idle
    view._refresh_fps_label()
    # Tried as a new user: a bare "idle" above the canvas read as the training's state.
    assert view.controls.fps_label.text() == "view: idle"
    assert "says nothing of training" in view.controls.fps_label.toolTip()
    for _ in range(5):
        view.view.camera.azimuth += 5
        view.canvas.update()
        qtbot.wait(40)
    assert not view.idle and view.fps > 0
    view._refresh_fps_label()
    assert view.controls.fps_label.text().endswith(" fps")


def test_a_points_visual_draws_only_the_symbols_its_shader_holds():
    """Guards against a point silently drawn with another symbol's shape: each points visual
    compiles only its own symbols (the heads only discs) and refuses the others."""
    heads = StepPointsVisual(symbols=("disc",))
    heads.set_data(np.zeros((2, 3), np.float32), (1, 1, 1, 1), "disc")
    with pytest.raises(ValueError, match="draws only"):
        heads.set_data(np.zeros((2, 3), np.float32), (1, 1, 1, 1), "star")
    with pytest.raises(ValueError):
        StepPointsVisual(symbols=("hexagon",))


def test_the_draw_call_gets_every_shown_item_and_skips_the_hidden_ones(view, snapshot):
    """Guards against a vertex range that cuts off shown items (they would vanish) or that
    still hands every hidden item to the vertex shader (the cost the range exists to avoid)."""
    geo = view.geometry
    for t in range(snapshot.telemetry.num_steps + 1):
        view.set_step(t)
        for name in ("trajectories", "heads", "spawns", "terminations"):
            visual = view.layers[name][0]
            first, last = visual.drawn_range
            shown = np.flatnonzero((visual.windows[:, 0] <= t) & (t < visual.windows[:, 1]))
            assert shown.shape[0] == 0 or (first <= shown.min() and shown.max() < last), (name, t)
            assert last - first == shown.shape[0], (name, t)     # sorted by step: nothing hidden drawn
        assert view.layers["heads"][0].drawn_range == (geo.heads_start[t], geo.heads_start[t + 1])


def test_geometry_items_sit_where_their_flow_is_at_their_step(snapshot):
    """Guards against segments joining the wrong points, heads of another step, and windows out of order."""
    geo = build_geometry(snapshot.telemetry.flows, budget=10**9)
    assert np.all(np.diff(geo.segment_step) >= 0) and np.all(np.diff(geo.head_step) >= 0)
    ends = geo.segment_pos.reshape(-1, 2, 3)
    np.testing.assert_allclose(ends[:, 0], geo.positions[geo.segment_flow, geo.segment_step - 1], rtol=1e-6)
    np.testing.assert_allclose(ends[:, 1], geo.positions[geo.segment_flow, geo.segment_step], rtol=1e-6)
    for t in range(snapshot.telemetry.num_steps + 1):
        heads, alive = geo.heads_at(t), geo.alive_at(t)
        np.testing.assert_array_equal(geo.head_flow[heads], np.flatnonzero(alive))
        assert np.all(geo.head_step[heads] == t)
        np.testing.assert_allclose(geo.head_pos[heads], geo.positions[alive, t], rtol=1e-6)


def test_exports_in_a_row_are_the_same_image(view, snapshot):
    """Guards against VisPy's cached canvas→FBO mapping: every render after the first, at a size
    larger than the canvas, came out shifted down by the difference in height."""
    size = (int(view.canvas.size[0]) + 200, int(view.canvas.size[1]) + 150)
    first = view.render_image(size)
    np.testing.assert_array_equal(view.render_image(size), first)
    np.testing.assert_array_equal(view.render_image(size), first)


def test_colour_modes_change_only_colours(view, snapshot):
    for name in LAYERS:
        view.set_layer_visible(name, name == "trajectories")
    by_energy = view.render_image(RENDER_SIZE).astype(np.int16)
    geometry, lines = view.geometry, view.layers["trajectories"][0]
    positions = lines.positions
    view.set_color_mode("sample")
    by_sample = view.render_image(RENDER_SIZE).astype(np.int16)
    assert view.geometry is geometry and lines.positions is positions     # geometry untouched
    np.testing.assert_array_equal(view.trajectory_colors, geometry.segment_colors["sample"])
    assert (np.abs(by_energy - by_sample).sum(axis=2) > 20).sum() > 300


def test_geometry_steps_are_prefixes_and_events_match_reasons(snapshot):
    flows = snapshot.telemetry.flows
    geo = build_geometry(flows, budget=10**9)
    t_max = snapshot.telemetry.num_steps
    assert geo.num_flows == flows.num_flows
    assert np.isfinite(geo.vertices).all()
    assert geo.segments_until[0] == 0 and geo.segments_until[t_max] == geo.segment_step.shape[0]
    assert np.all(np.diff(geo.segments_until) >= 0)
    children = int((flows.parent_id >= 0).sum())
    assert geo.spawns_until[t_max] == children == int(snapshot.telemetry.aggregates.spawn_granted.sum())
    assert geo.ends_until[t_max] == int((flows.reason != REASON_ACTIVE).sum()) == flows.num_flows
    for code in np.unique(flows.reason):
        assert (geo.end_reason == code).sum() == (flows.reason == code).sum()
    end_steps = flows.end_step[geo.rows][np.isin(flows.reason[geo.rows], list(np.unique(geo.end_reason)))]
    np.testing.assert_array_equal(np.diff(geo.ends_until), np.bincount(end_steps, minlength=t_max + 1)[1:])
    assert not (flows.reason == REASON_ACTIVE).any()


def test_budget_sampling_is_deterministic_exact_and_keeps_parents(snapshot):
    flows = snapshot.telemetry.flows
    budget = flows.num_flows // 3
    rows = sample_flows(flows, budget)
    assert rows.shape[0] == budget
    np.testing.assert_array_equal(rows, sample_flows(flows, budget))
    assert np.all(np.diff(rows) > 0)
    drawn = set(flows.flow_id[rows].tolist())
    child = flows.parent_id[rows] >= 0
    assert all(p in drawn for p in flows.parent_id[rows][child].tolist()), "a drawn child lost its parent"
    samples = np.unique(flows.sample_index[rows])
    assert samples.shape[0] == flows.traced_samples   # spread over every traced sample


# ------------------------------------------------------------------------------ panels
def test_spawn_panel_plots_the_batch_and_the_run(qtbot, snapshot):
    panel = SpawnPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    agg = snapshot.telemetry.aggregates
    for name, values in (("requested", agg.spawn_requested), ("granted", agg.spawn_granted),
                         ("denied", agg.spawn_denied)):
        np.testing.assert_array_equal(_y(panel.step_curves[name]), values)
        placed = snapshot.history["placed"]
        assert (placed > 0).all()
        np.testing.assert_allclose(_y(panel.history_curves[name]), snapshot.history[f"spawn_{name}"] / placed)
    np.testing.assert_array_equal(_x(panel.history_curves["granted"]), snapshot.history["step"])
    t = int(np.argmax(agg.spawn_requested))
    panel.set_step(t)
    assert panel.step_line.value() == t
    assert f"requested {int(agg.spawn_requested[t]):,}" in panel.step_plot.titleLabel.text


def test_a_smaller_batch_does_not_read_as_a_drop_in_spawning():
    """Guards against the dips a stranger read as a failure: the last batch of an epoch places
    fewer flows, so its raw child count is lower at the same rate of splitting."""
    from app.panels.spawn_panel import per_placed_flow
    granted = np.array([3200.0, 3300.0, 1200.0, 3250.0])
    placed = np.array([6400.0, 6400.0, 2400.0, 6400.0])          # batch 3: 6 samples of 16
    np.testing.assert_allclose(per_placed_flow(granted, placed), [0.5, 0.515625, 0.5, 0.5078125])
    assert np.isnan(per_placed_flow(np.array([1.0, 2.0]), np.array([0.0, np.nan]))).all()
    assert np.isnan(per_placed_flow(np.array([1.0, 2.0]), np.array([4.0]))[1])   # unknown: not drawn


def test_energy_panel_histogram_follows_the_step(qtbot, snapshot):
    panel = EnergyPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    agg = snapshot.telemetry.aggregates
    np.testing.assert_allclose(_x(panel.hist_curve), agg.energy_bin_edges)
    panel.set_step(0)
    np.testing.assert_array_equal(_y(panel.hist_curve), agg.energy_hist[0])
    panel.set_step(3)
    np.testing.assert_array_equal(_y(panel.hist_curve), agg.energy_hist[3])
    assert not np.array_equal(agg.energy_hist[0], agg.energy_hist[3])
    assert panel.step_line.value() == 3
    np.testing.assert_allclose(panel.input_range.getRegion(), snapshot.telemetry.input_energy_range, rtol=1e-6)
    finite = np.all(np.isfinite(agg.energy_percentiles), axis=1)
    np.testing.assert_allclose(_y(panel.band_curves["p50"]), agg.energy_percentiles[finite, 2], rtol=1e-6)
    np.testing.assert_allclose(_y(panel.band_curves["p95"]), agg.energy_percentiles[finite, 4], rtol=1e-6)


def test_energy_panel_draws_the_deposit_share_of_every_plane_over_the_run(qtbot):
    """The issue-27 figure end to end: measured per batch, kept in the history, one curve per plane."""
    from energy_flow.trace.figures import BATCH

    snap = trained_snapshot(3, seed=5)
    share = snap.history[BATCH.deposit_share.key]
    assert share.shape == (3, 2) and np.isfinite(share).all() and (share > 0).all() and (share < 1).all()
    agg = snap.telemetry.aggregates
    np.testing.assert_allclose(share[-1], agg.deposited_energy[-1] / agg.active_energy[0], rtol=1e-5)
    panel = EnergyPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snap)
    assert len(panel.share_curves) == 2
    for i, curve in enumerate(panel.share_curves):
        np.testing.assert_allclose(_x(curve), snap.history[BATCH.step.key])
        np.testing.assert_allclose(_y(curve), share[:, i])


def test_displacement_panel_skips_placement_without_warnings(qtbot, snapshot):
    agg = snapshot.telemetry.aggregates
    assert np.isnan(agg.delta_percentiles[0]).all()
    panel = DisplacementPanel()
    qtbot.addWidget(panel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        panel.set_snapshot(snapshot)
        panel.set_step(0)
        panel.set_step(2)
        qtbot.wait(10)
    steps = np.arange(1, agg.num_steps + 1)
    for axis in range(3):
        np.testing.assert_array_equal(_x(panel.band_curves[axis]["p50"]), steps)
        np.testing.assert_allclose(_y(panel.band_curves[axis]["p5"]), agg.delta_percentiles[1:, axis, 0], rtol=1e-6)
        np.testing.assert_allclose(_y(panel.band_curves[axis]["p75"]), agg.delta_percentiles[1:, axis, 3], rtol=1e-6)
        np.testing.assert_allclose(_y(panel.min_curves[axis]), agg.delta_min[1:, axis], rtol=1e-6)
        np.testing.assert_allclose(_y(panel.max_curves[axis]), agg.delta_max[1:, axis], rtol=1e-6)
    np.testing.assert_allclose(_y(panel.clamp_curve), agg.clamp_fraction[1:], rtol=1e-6)
    panel.set_step(0)
    assert "nothing moved" in panel.axis_plots[0].titleLabel.text
    assert all(line.value() == 0 for line in panel.step_lines)


def test_coverage_panel_one_image_per_plane_with_fixed_levels(qtbot, snapshot):
    tel = snapshot.telemetry
    panel = CoveragePanel()
    qtbot.addWidget(panel)
    panel.log_check.setChecked(False)
    panel.set_snapshot(snapshot)
    assert len(panel.images) == tel.num_planes == 2
    for p, image in enumerate(panel.images):
        assert image.image.dtype == np.float32 and image.image.shape == tel.plane_energy[p].shape
        np.testing.assert_array_equal(image.image, tel.plane_energy[p])
        assert tuple(image.getLevels()) == (0.0, pytest.approx(float(tel.plane_energy.max())))
    panel.set_mode("share of samples reaching")
    for p, image in enumerate(panel.images):
        np.testing.assert_array_equal(image.image, tel.plane_reached[p])
        assert tuple(image.getLevels()) == (0.0, 1.0)
    t = 4
    panel.set_step(t)
    for p, (plot, z) in enumerate(zip(panel.plane_plots, tel.plane_z)):
        title = plot.titleLabel.text
        per_step = tel.plane_energy_steps
        reached = np.mean((tel.plane_reached[p] if per_step is None else per_step[t, p]) > 0)
        assert f"z={'+' if z > 0 else '−'}1: {reached:.0%} of cells" in title
        assert f"{tel.aggregates.coverage[t, p]:.0%} per sample" in title
        assert f"per sample: at step {t}" in panel.caption.text()
        np.testing.assert_allclose(_y(panel.coverage_curves[p]), 100 * tel.aggregates.coverage[:, p], rtol=1e-6)


def _tensorboard_smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's scalar smoothing, written as its plain loop (the reference)."""
    out, last, n = [], 0.0, 0
    for v in values:
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return np.array(out)


@pytest.mark.parametrize("weight", [0.0, 0.6, 0.9, 0.99])
def test_debiased_ema_matches_tensorboard(weight):
    values = np.random.default_rng(0).lognormal(size=3000)
    np.testing.assert_allclose(debiased_ema(values, weight), _tensorboard_smooth(values, weight), rtol=1e-9)


def test_training_panel_raw_and_smoothed_curves(qtbot, snapshot):
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    hist = snapshot.history
    for key in ("loss", "mse", "cosine_loss"):
        np.testing.assert_allclose(_y(panel.raw_curves[key]), hist[key])
        np.testing.assert_allclose(_y(panel.smooth_curves[key]), _tensorboard_smooth(hist[key], 0.6), rtol=1e-9)
    np.testing.assert_allclose(_y(panel.landed_curve), hist["landed_fraction"])
    np.testing.assert_allclose(_y(panel.speed_curve), hist["batches_per_second"])
    np.testing.assert_allclose(_y(panel.lr_curve), hist["learning_rate"])
    panel.set_smoothing(0.9)
    np.testing.assert_allclose(_y(panel.smooth_curves["loss"]), _tensorboard_smooth(hist["loss"], 0.9), rtol=1e-9)


def test_training_panel_takes_a_long_run(qtbot, snapshot):
    """20k batches of history (a long run), with a skipped non-finite batch, in one update."""
    n = 20_000
    rng = np.random.default_rng(1)
    loss = np.exp(-np.arange(n) / 5000) + 0.05 * rng.random(n)
    loss[123] = np.nan
    hist = {key: np.asarray(v, dtype=np.float64) for key, v in {
        "step": np.arange(1, n + 1), "loss": loss, "mse": loss / 2, "cosine_loss": loss / 2,
        "learning_rate": np.full(n, 1e-3), "landed_fraction": rng.random(n), "batches_per_second": rng.random(n) + 1,
        "spawn_requested": np.zeros(n), "spawn_granted": np.zeros(n), "spawn_denied": np.zeros(n)}.items()}
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    panel.log_check.setChecked(True)
    panel.set_snapshot(Snapshot(telemetry=snapshot.telemetry, history=hist))
    assert _y(panel.raw_curves["loss"]).shape[0] == n - 1
    assert np.isfinite(_y(panel.smooth_curves["loss"])).all()


def test_the_3d_deposits_follow_the_step_and_agree_with_coverage_at_every_step(qtbot, view, snapshot):
    """Guards against output planes fully lit at step 0 while Coverage says 0 % of cells (the 3D
    view drew the end of the batch at every step), and two colour bars in different units."""
    tel = snapshot.telemetry
    assert tel.plane_energy_steps is not None
    panel = CoveragePanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    assert panel.log_check.isChecked()                    # the default: the 3D view's unit
    counts = []
    for t in range(tel.num_steps + 1):
        view.set_step(t)
        panel.set_step(t)
        shown = sum(int(np.count_nonzero(image.image > 0)) for image in panel.images)
        assert view.deposit_cells == shown, f"step {t}"
        counts.append(shown)
    assert counts[0] == 0 and counts[-1] > 0 and counts == sorted(counts)   # nothing at step 0, then grows
    assert view.deposit_scale == pytest.approx(panel.colorbar.levels()[1])
    assert panel.colorbar.axis.labelText == DEPOSIT_LOG_LABEL and DEPOSIT_LOG_LABEL in view.colour_bars


def test_the_framed_lattice_keeps_its_corners_out_from_under_the_colour_bars_and_legend(qtbot, snapshot):
    """Guards against the lattice's corners drawn under the colour bars and the legend in a small
    window (1100×700 gives the canvas ~720×460)."""
    v = _shown_view(qtbot, snapshot, 720, 460)
    v.reset_view()
    corners = v.box_corners_on_screen()
    boxes = v._overlay.reserved_boxes(v.canvas.size)
    assert len(boxes) == 2                     # the bars (colour by energy + deposits) and the legend
    for x0, y0, x1, y1 in boxes:
        inside = (corners[:, 0] > x0) & (corners[:, 0] < x1) & (corners[:, 1] > y0) & (corners[:, 1] < y1)
        assert not inside.any(), (x0, y0, x1, y1, corners[inside])


def test_displacement_titles_never_read_minus_zero():
    """Tried as a new user: "p5–p95 [-0.000, +0.003]"; a value that rounds to zero keeps its
    sign and size instead."""
    from app.panels.displacement_panel import signed
    assert signed(-0.0004) == "-4.0e-04" and signed(0.00012) == "+1.2e-04"
    assert signed(0.0) == "0" and signed(-0.25) == "-0.250" and signed(0.0031) == "+0.003"
    assert "0.000" not in signed(-0.0004999)


def test_before_the_first_batch_no_bare_colour_bars_are_drawn(qtbot, snapshot):
    """Tried as a new user: before batch 1 the canvas showed two colour bars with no title or
    range beside "no batch yet". They come with the first batch, titles and all."""
    v = LatticeView()
    qtbot.addWidget(v)
    v.resize(800, 600)
    v.show()
    qtbot.waitExposed(v)
    v.resize(820, 610)                       # a resize lays the overlay out again
    qtbot.wait(50)
    overlay = v._overlay
    assert overlay.empty.visible and not overlay.bars.visible and not overlay.frames.visible
    v.set_snapshot(snapshot)
    assert overlay.bars.visible and overlay.text.visible and "flow energy" in overlay.bar_titles
