"""Time shares of a ``torch.profiler`` run: where a train step's time goes, by kind of work.

Every profiled operator's *self* time (its own, without the operators it called) goes to one
kind, by its name:

- ``matmul`` — matrix products: the carrier GRU (its gates are three matmuls per layer, forward
  and backward), the heads, the neuron and the mappers; cuDNN's fused RNN kernels too;
- ``gather/scatter`` — indexing and moving rows: the step's gathers of the active flows, the
  state rewrite, the deposit's ``index_add``, ``nonzero``'s compaction, ``cat``;
- ``elementwise`` — pointwise maths and copies (gates' sigmoids and tanh, clamps, ``where``…)
  and reductions;
- ``host sync`` — the host waiting for the device (``item``, stream synchronisation, blocking
  copies);
- ``allocator`` — allocation and release (``empty``, ``cudaMalloc``/``cudaFree``);
- ``launch`` — kernel launches (the CPU side of a device step bound by them);
- ``framework`` — autograd's engine, the optimiser's Python and profiler ranges' own time.

Separately, the share of time spent inside recomputation replays (``checkpoint_steps``): every
operator under the ``energy_flow::recompute`` range FlowProcessor puts around each replay.
Shares are of CPU self time (on a CPU run, the step's time) and, where a device ran kernels, of
device self time (kernels attributed to the operator that launched them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from energy_flow.core.processor import REPLAY_RANGE

#: (kind, pattern on the operator's name); the first match wins, unmatched names are elementwise.
KINDS: tuple[tuple[str, re.Pattern], ...] = (
    ("host sync", re.compile(r"Synchronize|cudaMemcpy(?!Async)|aten::item$|aten::_local_scalar_dense|"
                             r"cudaStreamWaitEvent")),
    ("allocator", re.compile(r"cudaMalloc|cudaFree|cudaHostAlloc|aten::empty|aten::resize_|\[memory\]")),
    ("launch", re.compile(r"cudaLaunch|cuLaunch|cudaGraphLaunch")),
    ("matmul", re.compile(r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_cudnn_rnn|miopen_rnn|mkldnn_rnn|"
                          r"_thnn_fused_gru_cell|gru_cell)\b|gemm|cudnn|cutlass|sm\d+_xmma")),
    ("gather/scatter", re.compile(r"aten::(index|index_put_?|_index_put_impl_|index_add_?|index_select|"
                                  r"index_fill_?|scatter_?|scatter_add_?|gather|nonzero|masked_select|"
                                  r"masked_scatter_?|cat|repeat_interleave|take|embedding|narrow_copy)\b|"
                                  r"IndexBackward|IndexPutBackward|CatBackward")),
    ("framework", re.compile(r"^autograd::engine|^Optimizer\.|^ProfilerStep|^energy_flow::|"
                             r"^torch/autograd|^<built-in|^## ")),
)
ELEMENTWISE = "elementwise"
ORDER = ("matmul", "gather/scatter", ELEMENTWISE, "host sync", "allocator", "launch", "framework")

#: Device kernels by their own names, for the ``kernels`` clock (kernels no operator claimed).
KERNEL_KINDS: tuple[tuple[str, re.Pattern], ...] = (
    ("matmul", re.compile(r"gemm|cutlass|xmma|cublas|cudnn|rnn|wgmma|Kernel2", re.I)),
    ("gather/scatter", re.compile(r"index|scatter|gather|nonzero|cat|compact|embedding|take", re.I)),
    ("allocator", re.compile(r"Memset|Memcpy", re.I)),
)


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(name)), ELEMENTWISE)


@dataclass(frozen=True)
class TimeShares:
    """Self time (µs) per kind, and inside recomputation replays, of one clock."""

    clock: str                  # "cpu" or "device"
    total_us: float
    by_kind: dict[str, float]   # kind → µs
    replay_us: float            # µs inside recomputation replays (any kind)

    def share(self, kind: str) -> float:
        return self.by_kind.get(kind, 0.0) / self.total_us if self.total_us else 0.0

    @property
    def replay_share(self) -> float:
        return self.replay_us / self.total_us if self.total_us else 0.0


def _in_replay(event: Any) -> bool:
    p = event.cpu_parent
    while p is not None:
        if p.name == REPLAY_RANGE:
            return True
        p = p.cpu_parent
    return False


def kernel_kind_of(name: str) -> str:
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), ELEMENTWISE)


def _is_device_event(event: Any) -> bool:
    return getattr(event.device_type, "name", "CPU") != "CPU"


def summarise(events: Iterable[Any]) -> dict[str, TimeShares]:
    """``prof.events()`` → time shares per clock: ``cpu`` (operators' self CPU time), and where
    a device ran kernels ``device`` (each operator's kernels) and ``kernels`` (every kernel by
    its own name: the same time, classified without the operator that launched it)."""
    totals: dict[str, dict[str, float]] = {"cpu": {}, "device": {}, "kernels": {}}
    replay = {"cpu": 0.0, "device": 0.0, "kernels": 0.0}
    for e in events:
        if _is_device_event(e):
            clocks = (("kernels", kernel_kind_of(e.name), e.self_device_time_total),)
        else:
            kind = kind_of(e.name)
            clocks = (("cpu", kind, e.self_cpu_time_total), ("device", kind, e.self_device_time_total))
        in_replay = _in_replay(e)
        for clock, kind, us in clocks:
            if us <= 0:
                continue
            totals[clock][kind] = totals[clock].get(kind, 0.0) + us
            if in_replay:
                replay[clock] += us
    return {clock: TimeShares(clock, sum(by.values()), dict(by), replay[clock])
            for clock, by in totals.items() if by}


def markdown(shares: dict[str, TimeShares], title: str) -> str:
    """One table row per clock: total ms and each kind's share, then the replays' share."""
    head = "| " + title + " | total (ms) | " + " | ".join(ORDER) + " | of which in recomputation replays |"
    lines = [head, "|---" + "|---:" * (len(ORDER) + 2) + "|"]
    for clock, s in shares.items():
        cells = " | ".join(f"{100 * s.share(kind):.1f} %" for kind in ORDER)
        lines.append(f"| {clock} self time | {s.total_us / 1e3:.1f} | {cells} | {100 * s.replay_share:.1f} % |")
    return "\n".join(lines)


def top_operators(events: Iterable[Any], clock: str = "cpu", n: int = 12) -> list[tuple[str, str, float]]:
    """The ``n`` operators (kernels, for ``clock="kernels"``) with the most self time on
    ``clock``: (name, kind, µs)."""
    by_name: dict[str, float] = {}
    for e in events:
        if _is_device_event(e) != (clock == "kernels"):
            continue
        us = e.self_cpu_time_total if clock == "cpu" else e.self_device_time_total
        by_name[e.name] = by_name.get(e.name, 0.0) + us
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:n]
    classify = kernel_kind_of if clock == "kernels" else kind_of
    return [(name, classify(name), us) for name, us in ranked]
