"""What a new user hit in the first fifteen minutes (issue 10, items 1-7), each held by a test.

Every test drives the real window (or dialog) the way the user did and checks what is on screen
against values computed independently from the snapshot, the recording or the worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from app.export import ExportDialog

SNAPSHOT_TIMEOUT_MS = 15_000


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
    for key in ("batch", "step", "active", "loss", "rate"):
        assert window.status_labels[key].text() == "–", key
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
    assert window.status_labels["batch"].text().startswith("batch 1 ")


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
