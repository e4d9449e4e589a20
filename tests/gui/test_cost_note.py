"""Config → Apply says what the new config costs in memory on this device before anything is
rebuilt (issue 28, item 4), and warns where it will not or may not fit."""

from __future__ import annotations

from app.panels import config_panel
from app.panels.config_panel import ConfigPanel, memory_note
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
