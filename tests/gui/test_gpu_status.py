"""The app on a GPU: the memory line of the status bar and the out-of-memory pause."""

from __future__ import annotations

import pytest
import torch

from energy_flow.runtime.device import memory_text

SNAPSHOT_TIMEOUT_MS = 15_000


def test_out_of_memory_pauses_with_the_sizes_to_lower_and_the_window_stays_usable(qtbot, make_window):
    """An OOM in a step pauses training with a banner naming batch_size and max_active_flows
    (with their values), and the next Step trains. Guards against an OOM killing the worker thread
    or a message that does not say what to change."""
    window = make_window()
    worker, trainer = window.worker, window.worker.trainer
    real_step = trainer.train_step

    def out_of_memory(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer.train_step = out_of_memory
    window.step_action.trigger()
    qtbot.waitUntil(lambda: worker.state == "error" and "Out of memory" in window.banner.label.text(),
                    timeout=SNAPSHOT_TIMEOUT_MS)
    text = window.banner.label.text()
    c = worker.config
    assert "Out of memory" in text and "paused" in text
    assert f"batch_size (now {c.batch_size})" in text and f"max_active_flows (now {c.resolved_max_active_flows:,})" in text
    assert trainer.step_count == 0

    trainer.train_step = real_step
    window.step_action.trigger()
    qtbot.waitUntil(lambda: trainer.step_count == 1, timeout=SNAPSHOT_TIMEOUT_MS)


def test_cpu_has_no_gpu_memory_line():
    assert memory_text(torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_line_reports_in_use_and_peak():
    """The numbers are torch's allocator counters: a 1 GiB tensor shows in both."""
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(device)
    block = torch.empty(2**28, dtype=torch.float32, device=device)
    text = memory_text(device)
    assert "in use" in text and "peak" in text
    peak = float(text.split("peak ")[1].split(" GiB")[0])
    assert peak >= 1.0
    del block
