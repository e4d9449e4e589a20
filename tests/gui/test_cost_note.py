"""Config → Apply says what the new config costs in memory on this device before anything is
rebuilt (issue 28, item 4), and warns where it will not or may not fit."""

from __future__ import annotations

import re

from PyQt6.QtGui import QColor, QPalette

from app.panels import config_panel
from app.panels.config_panel import RECORDED, ConfigPanel, memory_note
from energy_flow.config import create_preset
from energy_flow.memory.estimate import estimate_memory

GIB = 1024 ** 3


def test_the_note_compares_the_estimate_with_this_devices_memory(monkeypatch):
    config = create_preset("debug", device="cpu")
    estimate = estimate_memory(config)
    monkeypatch.setattr(config_panel, "machine_memory_bytes", lambda device: (estimate.minimum_bytes - 1, "RAM"))
    assert memory_note(config).startswith("⚠ Will not fit")
    monkeypatch.setattr(config_panel, "machine_memory_bytes", lambda device: (estimate.worst_case_bytes - 1, "RAM"))
    assert memory_note(config).startswith("⚠ May not fit")
    monkeypatch.setattr(config_panel, "machine_memory_bytes", lambda device: (64 * GIB, "RAM"))
    assert memory_note(config).startswith("Memory per training step") and "64.0 GiB RAM" in memory_note(config)


def test_apply_shows_the_note_before_it_asks(qtbot, monkeypatch):
    monkeypatch.setattr(config_panel, "machine_memory_bytes", lambda device: (1 * GIB, "RAM"))
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    panel.set_config(create_preset("tiny", device="cpu"))
    panel.preset.setCurrentText("experiment")
    asked: list[str] = []
    panel.confirm = lambda text: asked.append(text) is None and False
    panel.apply()
    assert len(asked) == 1 and "⚠ May not fit" in asked[0] and "the RAM is 1.0 GiB" in asked[0]


def test_the_window_shows_the_time_and_memory_before_the_first_batch_and_checks_it(qtbot, make_window,
                                                                                      monkeypatch):
    from energy_flow.training import cost_estimate

    # this device's memory as too small for the model: the warning must reach the banner
    monkeypatch.setattr(cost_estimate, "machine_memory_bytes", lambda device: (1024, "RAM"))
    window = make_window()
    text = window.config_panel.cost.text()
    assert text.startswith("Estimated cost: ≈") and "per batch on cpu" in text and "probe of" in text
    assert "⚠ will not fit" in text
    assert window.banner.isVisible() and "will not fit" in window.banner.label.text()
    assert "per batch" in window.statusBar().currentMessage()
    phase = window.run_status.labels["phase"]
    qtbot.waitUntil(lambda: phase.text().startswith("est. ") and phase.text().endswith(" per batch"), timeout=2000)
    window.step_requested.emit()
    qtbot.waitUntil(lambda: "Checked: first batch" in window.config_panel.cost.text(), timeout=20_000)
    assert ", estimated " in window.config_panel.cost.text()
    qtbot.waitUntil(lambda: phase.text().startswith("last batch ") and "(est. " in phase.text(), timeout=2000)


def test_apply_estimates_the_new_configs_cost_before_it_trains(qtbot, make_window, small_config):
    window = make_window()
    assert "× 10 steps" in window.config_panel.cost.text()       # the tiny preset's max_steps
    window.config_requested.emit(small_config(max_steps=7))
    qtbot.waitUntil(lambda: "× 7 steps" in window.config_panel.cost.text(), timeout=20_000)
    text = window.config_panel.cost.text()
    assert text.startswith("Estimated cost: ≈") and "Checked" not in text
    assert window.worker_state == "idle" and window.live.batches_trained == 0


def _contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours."""
    def lum(c: QColor) -> float:
        ch = [v / 255 for v in (c.red(), c.green(), c.blue())]
        ch = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _text_colour(label) -> QColor:
    match = re.search(r"color:\s*(#[0-9a-fA-F]{6})", label.styleSheet())
    return QColor(match.group(1)) if match else label.palette().color(QPalette.ColorRole.WindowText)


def test_the_cost_note_and_the_message_read_on_the_panels_background_and_apply_names_unsaved_batches(
        qtbot, make_window):
    """Tried as a new user: the cost note's light grey on the light panel looked disabled, and
    Apply said nothing of the 30 trained batches it would discard (Reset and closing did)."""
    window = make_window()
    panel = window.config_panel
    background = panel.palette().color(QPalette.ColorRole.Window)
    assert panel.cost.text().startswith("Estimated cost")
    assert _contrast(_text_colour(panel.cost), background) >= 4.5
    assert _contrast(_text_colour(panel.message), background) >= 4.5
    with qtbot.waitSignal(window.snapshot_shown, timeout=15_000):
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")
    panel.editors["max_steps"].setText("7")
    asked: list[str] = []
    panel.confirm = lambda text: asked.append(text) is None and False
    panel.apply()
    assert len(asked) == 1 and "The weights of 1 trained batch are not saved" in asked[0]


def test_a_replayed_recordings_config_shows_no_preset_and_the_live_one_returns(qtbot):
    """Tried as a new user: a preset picked but not applied ("tiny") stayed in the preset box
    over a replayed recording's 20×20×10 fields."""
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    live = create_preset("debug", device="cpu")
    panel.set_config(live)
    panel.preset.setCurrentText("tiny")
    panel.show_recorded({"lattice_width": 20, "lattice_height": 20, "lattice_depth": 10}, "rec.h5")
    assert panel.preset.currentText() == RECORDED and panel.editors["lattice_width"].text() == "20"
    panel.leave_recorded()
    assert panel.preset.currentText() == "(current run)" and panel.preset.findText(RECORDED) < 0
    assert panel.editors["lattice_width"].text() == str(live.lattice_width)
