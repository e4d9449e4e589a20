"""A batch in flight says where it is (issue 28, item 4): propagation step k of N, forward or
backward, counted on the host by the model's hooks, and shown in the status bar."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from app.sources import progress
from app.sources.progress import BatchCancelled, BatchProgress
from energy_flow.config import create_tiny_config
from energy_flow.training import EnergyTrainer, build_model


def _trainer() -> tuple[EnergyTrainer, tuple[torch.Tensor, torch.Tensor]]:
    c = create_tiny_config(device="cpu")
    g = torch.Generator().manual_seed(0)
    batch = (F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1),
             F.normalize(torch.randn(c.batch_size, c.teacher_dim, generator=g), dim=1))
    return EnergyTrainer(build_model(c), c), batch


def test_every_propagation_step_is_counted_forward_then_backward(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.0)      # report every step
    trainer, batch = _trainer()
    phases: list[str] = []
    steps: list[tuple[str, int, int]] = []
    tracker = BatchProgress(threading.Event(), lambda phase, _s: phases.append(phase),
                            lambda phase, k, n: steps.append((phase, k, n)))
    tracker.attach(trainer)
    report = trainer.train_step(batch)
    forward = [s for s in steps if s[0] == "forward"]
    backward = [s for s in steps if s[0] == "backward"]
    ran = report.telemetry.num_steps
    assert phases[:2] == ["forward", "backward"]
    assert [k for _, k, _ in forward] == list(range(1, len(forward) + 1))
    assert all(n == trainer.config.max_steps for _, _, n in forward) and len(forward) >= ran
    assert [k for _, k, _ in backward] == list(range(1, len(backward) + 1))
    assert all(n == max(len(forward), k) for _, k, n in backward)


def test_a_cancelled_batch_stops_within_one_step():
    trainer, batch = _trainer()
    cancel = threading.Event()
    steps: list[int] = []

    def on_step(phase: str, k: int, n: int) -> None:
        steps.append(k)
        cancel.set()                  # cancelled during the first step: the next one raises

    BatchProgress(cancel, lambda *_: None, on_step).attach(trainer)
    try:
        trainer.train_step(batch)
        raise AssertionError("the batch was not abandoned")
    except BatchCancelled:
        pass
    assert steps == [1] and trainer.step_count == 0


def test_the_status_bar_shows_the_step_of_the_pass(qtbot, make_window):
    window = make_window()
    status = window.run_status

    def shown() -> str:     # the step text, without the model's estimated time per batch after it
        return status.labels["phase"].text().split(" (est. ")[0]

    status.show_phase(3, "forward", float("nan"))
    status.show_progress("forward", 5, 16)
    qtbot.waitUntil(lambda: shown() == "batch 3: forward, step 5 of ≤16…", timeout=2000)
    status.show_phase(3, "backward", float("nan"))
    status.show_progress("backward", 2, 9)
    qtbot.waitUntil(lambda: shown() == "batch 3: backward, step 2 of 9…", timeout=2000)
    status.show_phase(3, "done", 1.5)
    status.show_progress("backward", 3, 9)       # a report that arrives after the batch ended
    qtbot.waitUntil(lambda: shown() == "last batch 1.50 s", timeout=2000)
