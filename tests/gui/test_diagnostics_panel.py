"""The diagnostics panel draws the real training signals, and changes when a run breaks.

Runs are constructed as in tests/test_diagnostics.py: retention pinned by a bias of 40 (its
sigmoid is 1 − 4e-18: saturated), or grad_clip = 1e-7 (every gradient millions of times the
clip). Expected values come from the TrainReports and telemetry directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.panels.diagnostics_panel import DiagnosticsPanel
from app.snapshot import RunHistory, Snapshot
from energy_flow.config import create_tiny_config
from energy_flow.trace.telemetry import SATURATION_NAMES
from energy_flow.trace.training_signals import MODULES
from energy_flow.training import EnergyTrainer, build_model


def run(batches: int = 3, breaker=None, **overrides) -> tuple[Snapshot, list]:
    c = create_tiny_config(device="cpu", **overrides)
    trainer = EnergyTrainer(build_model(c), c)
    if breaker is not None:
        breaker(trainer)
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
    y = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
    history, reports = RunHistory(), []
    for _ in range(batches):
        report = trainer.train_step((x, y))
        history.append(report, 1.0)
        reports.append(report)
    return Snapshot(telemetry=report.telemetry, history=history.arrays(), report=report), reports


def pin_retention(trainer) -> None:
    with torch.no_grad():
        trainer.processor.carrier.energy_head.weight[0].zero_()
        trainer.processor.carrier.energy_head.bias[0] = 40.0


@pytest.fixture(scope="module")
def healthy():
    return run()


def _panel(qtbot, snapshot) -> DiagnosticsPanel:
    panel = DiagnosticsPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    return panel


def test_curves_are_the_reports_values(qtbot, healthy):
    """Guards against a module's column drawn under another's name, or log y fed raw values."""
    snapshot, reports = healthy
    panel = _panel(qtbot, snapshot)
    for m in MODULES:
        np.testing.assert_allclose(panel.grad_curves[m].yData, [r.grad_norms[m] for r in reports])
        np.testing.assert_allclose(panel.update_curves[m].yData, [r.update_ratios[m] for r in reports])
    np.testing.assert_allclose(panel.total_curve.yData, [r.grad_norm for r in reports])
    np.testing.assert_allclose(panel.output_spread_curve.yData, [r.output_spread for r in reports])
    np.testing.assert_allclose(panel.target_spread_curve.yData, [r.target_spread for r in reports])
    np.testing.assert_allclose(panel.clip_line.value(), np.log10(reports[-1].grad_clip))
    sat = snapshot.telemetry.aggregates.saturation
    np.testing.assert_allclose(panel.saturation_curves["retention"].yData, sat[1:, 0], rtol=1e-6)
    assert panel.grad_plot.getViewBox().toolTip().count("Bad:") == 1
    panel.set_step(2)
    assert panel.step_line.value() == 2


def test_pinned_retention_shows_as_saturation(qtbot, healthy):
    """Guards against a saturation plot that stays low when a head is really pinned."""
    panel = _panel(qtbot, healthy[0])
    before = np.asarray(panel.saturation_curves["retention"].yData).max()
    assert before < 0.5
    snapshot, _ = run(batches=1, breaker=pin_retention)
    panel.set_snapshot(snapshot)
    after = np.asarray(panel.saturation_curves["retention"].yData)
    assert after.min() > 0.99
    assert "worst retention 100%" in panel.saturation_plot.titleLabel.text


def test_exploding_gradients_show_far_above_the_clip_line(qtbot, healthy):
    """Guards against a clip line drawn at the wrong height, or a title that hides the excess."""
    panel = _panel(qtbot, healthy[0])
    snapshot, reports = run(grad_clip=1e-7)
    panel.set_snapshot(snapshot)
    total = np.asarray(panel.total_curve.yData)
    clip = 10 ** panel.clip_line.value()
    assert clip == pytest.approx(1e-7)
    assert (total > 1e4 * clip).all()
    ratio = reports[-1].grad_norm / 1e-7
    assert f"{ratio:.3g}× clip" in panel.grad_plot.titleLabel.text


def test_a_recording_without_training_signals_says_not_recorded(qtbot, healthy):
    snapshot, _ = healthy
    hist = {k: v for k, v in snapshot.history.items() if k in ("step", "loss")}
    panel = _panel(qtbot, Snapshot(telemetry=snapshot.telemetry, history=hist))
    assert "not recorded" in panel.grad_plot.titleLabel.text
    assert "not recorded" in panel.spread_plot.titleLabel.text
    assert panel.grad_curves["carrier"].yData is None or len(panel.grad_curves["carrier"].yData) == 0
    assert set(SATURATION_NAMES) == set(panel.saturation_curves)


def test_each_plots_data_area_is_tall_enough_to_read_at_the_panels_minimum_size(qtbot, healthy):
    """Tried as a new user at 1100×700: title, x axis and legend left each curve ~40 px, and the
    ‖Δθ‖/‖θ‖ axis title was longer than its axis. At the smallest size the panel is drawn at (it
    scrolls below it) every plot keeps at least 90 px of data and its y title fits its axis."""
    from app.panels.registry import DIAGNOSTICS

    snapshot, _ = healthy
    panel = _panel(qtbot, snapshot)
    panel.resize(*DIAGNOSTICS.min_size)
    panel.show()
    qtbot.waitExposed(panel)
    qtbot.wait(100)
    for plot in (panel.grad_plot, panel.update_plot, panel.saturation_plot, panel.spread_plot):
        height = plot.getViewBox().sceneBoundingRect().height()
        assert height >= 90, f"{plot.titleLabel.text!r}: {height:.0f} px of data"
        axis = plot.getAxis("left")
        assert axis.label.boundingRect().width() <= axis.boundingRect().height(), plot.titleLabel.text
