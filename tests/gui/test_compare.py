"""Reference runs beside live training, and panels saved as PNG, in the real window.

The reference is a recording of real tiny-preset training steps written here; the live run
is the window's own worker, which must keep training while the reference is opened.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PyQt6.QtGui import QImage

from app.panels.training_panel import debiased_ema
from app.sources.references import config_differences
from app.window.dock_layout import scroll_area
from energy_flow.config import create_tiny_config
from energy_flow.trace import RecordingWriter, report_fields_from
from energy_flow.training import EnergyTrainer, build_model

SNAPSHOT_TIMEOUT_MS = 30_000


def write_reference(path, batches: int = 4, **overrides):
    c = create_tiny_config(device="cpu", **overrides)
    trainer = EnergyTrainer(build_model(c), c)
    g = torch.Generator().manual_seed(5)
    losses = []
    with RecordingWriter(path, c.to_dict(), {"note": "reference for tests"}) as writer:
        for _ in range(batches):
            x = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
            y = F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1)
            report = trainer.train_step((x, y))
            writer.append_batch(report.telemetry, report_fields_from(report))
            losses.append(report.loss)
    return np.array(losses)


def test_reference_curves_appear_while_live_training_goes_on(qtbot, make_window, tmp_path):
    """Guards against opening a reference pausing the live run (as opening a replay does), and
    against reference curves that are not the recording's losses."""
    losses = write_reference(tmp_path / "yesterday.h5", learning_rate=3e-3)
    window = make_window()
    training = window.panels["Training"]
    training.set_smoothing(0.0)
    window.run_action.trigger()
    qtbot.waitUntil(lambda: window.worker.trainer.step_count >= 2, timeout=SNAPSHOT_TIMEOUT_MS)
    # Tried as a new user: with no reference, "this run" over two empty tables looked broken.
    assert window.inspection.comparison.health_table.isHidden()
    assert "Open a recording to compare" in window.inspection.comparison.hint.text()
    name = window.inspection.open_reference(tmp_path / "yesterday.h5")
    assert name == "yesterday"
    assert not window.inspection.comparison.health_table.isHidden()
    steps_at_open = window.worker.trainer.step_count
    loss_curve, landed_curve = window.inspection.references.curves(name)
    assert loss_curve in training.loss_plot.items and landed_curve in training.landed_plot.items
    np.testing.assert_allclose(loss_curve.yData, losses)
    np.testing.assert_array_equal(loss_curve.xData, np.arange(1, 5))
    assert name in [label.text for _, label in training.loss_plot.legend.items]
    # The live run keeps training and drawing beside it.
    qtbot.waitUntil(lambda: window.worker.trainer.step_count >= steps_at_open + 2, timeout=SNAPSHOT_TIMEOUT_MS)
    assert window.worker_state == "running"
    assert loss_curve in training.loss_plot.items
    training.set_smoothing(0.6)                  # the reference is smoothed as the panel smooths
    np.testing.assert_allclose(loss_curve.yData, debiased_ema(losses, 0.6))

    panel = window.inspection.comparison
    assert panel.config_rows()["learning_rate"] == [repr(window.worker.config.learning_rate), "0.003"]
    assert "✔" in panel.health_cell("finite", "yesterday") or "⚠" in panel.health_cell("finite", "yesterday")

    # A second reference, hidden, then closed.
    write_reference(tmp_path / "other.h5", batches=2)
    other = window.inspection.open_reference(tmp_path / "other.h5")
    assert window.inspection.references.color(other) != window.inspection.references.color(name)
    panel.row_widgets[other][0].setChecked(False)
    other_curve = window.inspection.references.curves(other)[0]
    assert not other_curve.isVisible()
    assert other not in [label.text for _, label in training.loss_plot.legend.items]
    panel.row_widgets[other][1].click()
    assert other not in window.inspection.references.names and other_curve not in training.loss_plot.items
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused", timeout=SNAPSHOT_TIMEOUT_MS)


def test_a_bad_reference_is_reported_and_nothing_changes(qtbot, make_window, tmp_path):
    window = make_window()
    bad = tmp_path / "not-a-recording.h5"
    bad.write_text("hello")
    assert window.inspection.open_reference(bad) is None
    assert window.banner.isVisible() and str(bad) in window.banner.label.text()
    assert window.inspection.references.names == []


def test_config_differences_list_only_differing_keys():
    diffs = dict(config_differences({"a": {"x": 1, "y": 2, "device": "cpu"}, "b": {"x": 1, "y": 3, "z": True,
                                                                              "device": "cuda"}}))
    assert diffs == {"y": ["2", "3"], "z": ["—", "true"]}


@pytest.mark.parametrize("title", ["Diagnostics", "Inspector", "Training"])
def test_any_panel_saves_as_png(qtbot, make_window, tmp_path, title):
    """Guards against an empty or wrongly sized image (a hidden dock grabs nothing)."""
    window = make_window()
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS):
        window.step_action.trigger()
    window.docks[title].raise_()
    qtbot.wait(50)
    widget = scroll_area(window.docks[title])
    path = window.inspection.save_panel_png(title, tmp_path / f"{title}.png")
    image = QImage(str(path))
    assert (image.width(), image.height()) == (widget.width(), widget.height())
    pixels = np.frombuffer(image.convertToFormat(QImage.Format.Format_RGBA8888).constBits().asstring(
        image.sizeInBytes()), np.uint8)
    assert np.unique(pixels.reshape(-1, 4)[:, :3], axis=0).shape[0] > 10   # a drawn panel, not a blank
