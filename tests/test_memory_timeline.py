"""The live-tensor peak of a call, and the attribution of what is live at it (phase, line).

Every case builds its allocations by hand, so the expected bytes are known exactly."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from energy_flow.memory.timeline import measure_live_tensors

MB = 1_000_000


def _sites(peak, phase: str) -> dict[str, int]:
    return {site: n for (p, site), n in peak.at_peak.items() if p == phase}


def test_peak_is_the_highest_live_total_and_names_the_lines_live_at_it():
    """Guards against: a peak taken as the sum of all allocations (ignoring frees), the end total
    reported as the peak, and allocations attributed to the wrong line."""
    def work():
        a = torch.ones(MB // 4)        # 1 MB
        b = torch.ones(2 * MB // 4)    # 2 MB: a + b = 3 MB is the peak
        del a
        c = torch.ones(MB // 8)        # 0.5 MB, after a was freed
        return b, c

    (b, c), peak = measure_live_tensors(work, package="tests")
    assert peak.peak_bytes == 3 * MB
    assert peak.end_bytes == 2 * MB + MB // 2
    assert peak.allocated_bytes == 3 * MB + MB // 2
    sites = _sites(peak, "forward")
    assert sum(sites.values()) == 3 * MB
    (a_line,) = [s for s in sites if "a = torch.ones(MB // 4)" in s]
    (b_line,) = [s for s in sites if "b = torch.ones(2 * MB // 4)" in s]
    assert sites[a_line] == MB and sites[b_line] == 2 * MB
    assert a_line.startswith("test_memory_timeline.py:")
    assert peak.phase_peaks == {"forward": 3 * MB}


def test_blocks_allocated_before_the_call_are_not_counted():
    """The profiler sees neither the allocation nor the free of an older block; the peak is that of
    the call's own allocations (a documented over-statement when the call frees older blocks).
    Guards against a free of an unknown block being subtracted from the call's own total."""
    old = [torch.ones(MB // 4)]

    def work():
        old.pop()
        return torch.ones(3 * MB // 4)

    _, peak = measure_live_tensors(work, package="tests")
    assert peak.peak_bytes == peak.end_bytes == peak.allocated_bytes == 3 * MB


def test_backward_allocations_are_attributed_to_the_forward_line_and_recomputation_to_its_own_phase():
    """A gradient buffer is named after the forward line whose op created its backward node; ops a
    checkpointed function runs again in backward are phase ``recompute``. Guards against backward
    memory reported as forward memory, or recomputation hidden inside "backward"."""
    x = torch.ones(MB // 4, requires_grad=True)

    def block(t):
        return (t * 3.0).sin()

    def work():
        y = x.exp()
        z = checkpoint(block, y, use_reentrant=False)
        z.sum().backward()

    _, peak = measure_live_tensors(work, package="tests")
    phases = peak.by_phase()
    assert phases.get("recompute", 0) >= MB  # t * 3.0 recomputed (1 MB)
    backward = _sites(peak, "backward")
    assert any(s.startswith("grad of ") for s in backward)
    assert all("grad of" in s or "Backward" in s for s in backward)
    x.grad = None


def test_phase_peaks_measure_what_backward_adds_wherever_the_overall_peak_is():
    """The overall peak here is in the forward (4 MB held, then dropped before backward); backward's
    own peak (its gradient buffers and the recomputation) is still reported. Guards against a
    transient of backward that never makes the overall peak going unmeasured."""
    x = torch.ones(MB // 4, requires_grad=True)

    def block(t):
        return (t * 3.0).sin()

    def work():
        big = torch.ones(MB)              # 4 MB, freed before backward
        del big
        z = checkpoint(block, x, use_reentrant=False)
        z.sum().backward()

    _, peak = measure_live_tensors(work, package="tests")
    assert peak.peak_bytes >= 4 * MB and peak.phase_peaks["forward"] >= 4 * MB
    assert peak.phase_peaks["recompute"] >= MB
    assert peak.phase_peaks["backward+recompute"] >= peak.phase_peaks["recompute"] + MB  # + x's gradient
    assert peak.phase_peaks["backward+recompute"] < 4 * MB
    x.grad = None
