"""Trained weights are never lost by a click (issue 28, item 5): Save/Open checkpoint from the
window, Reset/Open/close ask while trained batches are unsaved, and one action stops training."""

from __future__ import annotations

import torch
from PyQt6.QtGui import QKeySequence

from app.window.checkpoint_controls import close_question
from energy_flow.training.checkpoint import read_checkpoint

SNAPSHOT_TIMEOUT_MS = 15_000


def _step(qtbot, window) -> None:
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS):
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")


def test_save_then_open_a_checkpoint_restores_the_weights_and_only_unsaved_work_asks(qtbot, make_window, tmp_path):
    window = make_window()
    _step(qtbot, window)
    _step(qtbot, window)
    assert window.live.unsaved_batches == 2
    path = tmp_path / "model.pt"
    window.checkpoints._ask_save = lambda parent, default: str(path)
    with qtbot.waitSignal(window.worker.checkpoint_saved, timeout=10_000):
        window.checkpoints.save_action.trigger()
    qtbot.waitUntil(lambda: window.live.unsaved_batches == 0, timeout=2000)
    saved = read_checkpoint(path)
    assert saved["step_count"] == 2
    weights = {k: v.clone() for k, v in window.worker.trainer.processor.state_dict().items()}

    asked: list[str] = []
    window.confirm = lambda title, text: asked.append(text) is None and False    # answers "no"
    window.reset_action.trigger()                   # everything is saved: resets without asking
    qtbot.waitUntil(lambda: window.worker.trainer.step_count == 0 and window.worker_state == "idle", timeout=20_000)
    assert asked == []
    _step(qtbot, window)                            # one unsaved batch of the fresh model
    window.checkpoints._ask_open = lambda parent, folder: str(path)
    window.checkpoints.open_action.trigger()        # declined: the fresh model stays
    assert len(asked) == 1 and "1 trained batch " in asked[0]
    qtbot.wait(300)
    assert window.worker.trainer.step_count == 1

    window.confirm = lambda title, text: True
    with qtbot.waitSignal(window.worker.loaded, timeout=20_000):
        window.checkpoints.open_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "idle", timeout=5000)
    trainer = window.worker.trainer
    assert trainer.step_count == 2 and window.live.batches_trained == 2 and window.live.unsaved_batches == 0
    for name, value in trainer.processor.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_a_file_that_is_no_checkpoint_is_refused_and_the_model_stays(qtbot, make_window, tmp_path):
    window = make_window()
    _step(qtbot, window)
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    trainer = window.worker.trainer
    window.confirm = lambda title, text: True
    window.checkpoints._ask_open = lambda parent, folder: str(bad)
    with qtbot.waitSignal(window.worker.error, timeout=10_000) as error:
        window.checkpoints.open_action.trigger()
    assert str(bad) in error.args[0] and "current model is kept" in error.args[0]
    assert window.worker.trainer is trainer and trainer.step_count == 1


def test_closing_with_unsaved_batches_asks_and_cancel_keeps_the_window(qtbot, make_window):
    window = make_window()
    _step(qtbot, window)
    asked: list[str] = []
    window.close_guard.choose = lambda title, text: asked.append(text) or "cancel"
    window.close()
    assert len(asked) == 1 and "1 trained batch " in asked[0] and "not saved" in asked[0]
    assert window.isVisible() and window.worker_thread.isRunning()
    window.close_guard.choose = lambda title, text: "close"        # "Close without saving"
    window.close()
    assert not window.isVisible() and not window.worker_thread.isRunning()


def test_ctrl_c_and_scripts_close_with_unsaved_batches_without_a_question(qtbot, make_window):
    """Ctrl+C in the terminal (app/main.py) and scripts done with the window (scripts/screenshot.py)
    close through ``close_guard.discard_unsaved()``: with trained batches unsaved the window closes
    and no dialog waits for an answer. Guards against answering only the yes/no question (the
    three-way one then waited for a click: the screenshot script sat out its 540 s time-out)."""
    window = make_window()
    _step(qtbot, window)
    asked: list[str] = []
    window.close_guard.choose = lambda title, text: asked.append(text) or "cancel"   # a user who keeps it
    window.confirm = lambda title, text: asked.append(text) is None and False
    window.close_guard.discard_unsaved()
    window.close()
    assert asked == [] and not window.isVisible() and not window.worker_thread.isRunning()


def test_save_and_close_saves_the_trained_weights_then_closes(qtbot, make_window, tmp_path):
    window = make_window()
    _step(qtbot, window)
    window.run_action.trigger()                          # training while the user closes
    qtbot.waitUntil(lambda: window.live.batches_trained >= 2, timeout=SNAPSHOT_TIMEOUT_MS)
    path = tmp_path / "kept" / "model.pt"
    window.checkpoints._ask_save = lambda parent, default: str(path)
    window.close_guard.choose = lambda title, text: "save"
    window.close()                                       # pauses, saves, then closes itself
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20_000)
    assert not window.worker_thread.isRunning()
    saved = read_checkpoint(path)
    assert saved["step_count"] == window.worker.trainer.step_count >= 2   # every trained batch is in it


def test_save_and_close_that_cannot_save_keeps_the_window_open(qtbot, make_window, tmp_path):
    window = make_window()
    _step(qtbot, window)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    window.checkpoints._ask_save = lambda parent, default: str(blocker / "model.pt")
    window.close_guard.choose = lambda title, text: "save"
    with qtbot.waitSignal(window.worker.error, timeout=10_000):
        window.close()
    qtbot.wait(200)
    assert window.isVisible() and window.worker_thread.isRunning()
    assert window.close_guard.saving_to is None and window.live.unsaved_batches == 1
    assert "stays open" in window.banner.label.text()
    window.checkpoints._ask_save = lambda parent, default: None   # Save and close, then the file dialog cancelled
    window.close()
    assert window.isVisible() and "Not closed" in window.banner.label.text()


def test_close_question_names_the_batch_in_flight_and_the_unsaved_batches():
    assert close_question(0, 3, "done") is None
    assert close_question(0, 3, "snapshot") is None
    busy = close_question(0, 3, "backward")
    assert "Batch 3 is still training (backward pass)" in busy and "abandons it" in busy
    both = close_question(2, 3, "forward")
    assert "2 trained batches are not saved" in both and "Batch 3" in both


def test_pause_is_the_one_way_to_stop_and_esc_pauses(make_window):
    window = make_window()
    texts = [a.text() for a in window.toolbar.actions()]
    assert "Stop" not in texts and "Pause" in texts
    assert QKeySequence("Esc") in window.pause_action.shortcuts()


def test_save_checkpoint_into_a_folder_that_does_not_exist_yet_makes_it(qtbot, make_window, tmp_path):
    """Tried as a new user: Ctrl+S, typed runs/today/model.pt, and got "No such file or
    directory"; the folder typed in the dialog is made, as a shell's mkdir -p would."""
    window = make_window()
    _step(qtbot, window)
    path = tmp_path / "runs" / "today" / "model.pt"
    window.checkpoints._ask_save = lambda parent, default: str(path)
    with qtbot.waitSignal(window.worker.checkpoint_saved, timeout=10_000):
        window.checkpoints.save_action.trigger()
    assert read_checkpoint(path)["step_count"] == 1
