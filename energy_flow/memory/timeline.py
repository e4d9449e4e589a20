"""Live tensor bytes through a call, and what was live at its peak, by the line that allocated it.

:class:`energy_flow.memory.saved.SavedTensorLedger` counts what autograd keeps between forward and
backward. A training step's peak is more than that: transient copies in the forward, the
recomputation of checkpointed steps in backward, gradients, the optimiser. This module replays
the CPU allocator's events that ``torch.profiler`` records (``profile_memory=True``; on the CPU
the allocator reports every tensor allocation and free to it) in time order, finds the moment
of the highest live total, and attributes every allocation still live then to

* its *phase* — ``forward``, ``backward`` (run by the autograd engine), ``recompute`` (a
  checkpointed region run again inside backward) or ``optimizer``;
* its *site* — the line of the watched package (``energy_flow``) whose call allocated it; an
  allocation made by a backward node is attributed to the line whose forward op created the node
  (linked by the autograd sequence number), prefixed ``grad of``.

Only bytes allocated during the call are seen: the profiler does not report the free of a block
allocated before it started (torch warns "Memory block of unknown size…"), so a call that frees
older tensors (the previous step's gradients, at ``zero_grad``) is over-stated by them. Free them
before the call to measure it exactly (the benchmark does).

This is a measuring tool (benchmarks/bench_marginal_memory.py, tests): the profiler slows the
call several times over, and it sees torch's tensors only — not what the C heap keeps around
them, which is why the benchmark compares this peak with the process's peak RSS.
"""

from __future__ import annotations

import linecache
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

_BACKWARD = "autograd::engine::evaluate_function: "
_OPTIMIZER = "Optimizer."
_BACKWARD_PHASES = ("backward", "recompute")


@dataclass(frozen=True)
class LiveTensorPeak:
    """Live CPU tensor bytes of one call, relative to its start."""

    peak_bytes: int                  # highest total of the call's allocations live at once
    end_bytes: int                   # the same at the call's end (what it left allocated)
    allocated_bytes: int             # every byte allocated during the call, freed or not
    at_peak: dict[tuple[str, str], int] = field(default_factory=dict)  # (phase, site) → live bytes
    #: per phase, the most bytes allocated in it that were live at once, wherever the overall peak
    #: was; "backward+recompute" is what backward adds on top of what the forward left
    phase_peaks: dict[str, int] = field(default_factory=dict)

    def by_phase(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (phase, _), nbytes in self.at_peak.items():
            out[phase] += nbytes
        return dict(out)


def measure_live_tensors(fn: Callable[[], Any], package: str = "energy_flow") -> tuple[Any, LiveTensorPeak]:
    """Run ``fn()`` under the profiler; returns its result and the live-bytes summary. Sites are
    lines of files under a directory named ``package``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True) as prof:
        result = fn()
    return result, _replay(prof.profiler.kineto_results.experimental_event_tree(), package)


# ---------------------------------------------------------------------- replay of the events
def _replay(roots, package: str) -> LiveTensorPeak:
    marker = f"{os.sep}{package}{os.sep}"
    events, forward_site = [], {}
    stack = list(roots)
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation:
            events.append(e)
        elif e.tag == _EventType.TorchOp and not e.name.startswith(_BACKWARD):
            seq = e.extra_fields.sequence_number
            if seq >= 0:  # a differentiable op: remember where its backward node came from
                forward_site[(e.start_tid, seq)] = _site(e, marker)
    events.sort(key=lambda e: e.start_time_ns)

    live: dict[int, tuple[int, tuple[str, str]]] = {}  # ptr → (bytes, (phase, site))
    total = peak = allocated = 0
    peak_live: dict[int, tuple[int, tuple[str, str]]] = {}
    by_phase: dict[str, int] = defaultdict(int)
    phase_peaks: dict[str, int] = defaultdict(int)
    for e in events:
        f = e.extra_fields
        size = f.alloc_size
        if size > 0:
            key = _label(e, marker, forward_site)
            live[f.ptr] = (size, key)
            allocated += size
        elif f.ptr in live:
            key = live.pop(f.ptr)[1]
        else:
            continue  # not reported by the profiler (allocated before it started), see above
        total += size
        by_phase[key[0]] += size
        for name in (key[0], "backward+recompute") if key[0] in _BACKWARD_PHASES else (key[0],):
            value = by_phase[key[0]] if name == key[0] else sum(by_phase[p] for p in _BACKWARD_PHASES)
            phase_peaks[name] = max(phase_peaks[name], value)
        if total > peak:
            peak, peak_live = total, dict(live)
    at_peak: dict[tuple[str, str], int] = defaultdict(int)
    for size, key in peak_live.values():
        at_peak[key] += size
    return LiveTensorPeak(peak_bytes=peak, end_bytes=total, allocated_bytes=allocated, at_peak=dict(at_peak),
                          phase_peaks=dict(phase_peaks))


def _label(alloc, marker: str, forward_site: dict) -> tuple[str, str]:
    """(phase, site) of one allocation event."""
    phase, backward_node = "forward", None
    recompute = False
    p = alloc.parent
    while p is not None:
        if p.tag == _EventType.TorchOp:
            if p.name.startswith(_BACKWARD) and backward_node is None:
                backward_node = p
            elif p.name.startswith(_OPTIMIZER):
                phase = "optimizer"
        elif p.tag == _EventType.PyCall and p.extra_fields.callsite.function_name == "recompute_fn":
            recompute = True
        p = p.parent
    if recompute:
        return "recompute", _site(alloc, marker)
    if backward_node is None:
        return phase, _site(alloc, marker)
    seq = backward_node.extra_fields.sequence_number
    origin = forward_site.get((backward_node.start_tid, seq))
    node = backward_node.name[len(_BACKWARD):]
    return "backward", f"grad of {origin} ({node})" if origin else node


def _site(event, marker: str) -> str:
    """The innermost line of the package on the Python call stack of ``event``. A tensor operator
    (``a * b``, ``t[idx]``) is no Python call, so the profiler knows only its enclosing function:
    such a site is that function and the outermost torch op below it (``step: aten::index``)."""
    p, op = event.parent, event.name if event.tag == _EventType.TorchOp else None
    while p is not None:
        if p.tag == _EventType.TorchOp:
            op = p.name
        elif p.tag == _EventType.PyCall and _in_package(p.extra_fields.callsite.file_name, marker):
            callsite = p.extra_fields.callsite
            return f"{_short(callsite.file_name, marker)} {callsite.function_name}: {op} (an operator)"
        elif p.tag in (_EventType.PyCall, _EventType.PyCCall) and _in_package(p.extra_fields.caller.file_name, marker):
            caller = p.extra_fields.caller
            code = linecache.getline(_source_path(caller.file_name, marker), caller.line_number).strip()
            return f"{_short(caller.file_name, marker)}:{caller.line_number} {caller.function_name}: {code}"
        p = p.parent
    return "(outside the package)"


def _in_package(path: str, marker: str) -> bool:
    # the profiler names files relative to their sys.path entry ("energy_flow/core/x.py")
    return path.startswith(marker.lstrip(os.sep)) or marker in path


def _short(path: str, marker: str) -> str:
    return path.split(marker, 1)[1] if marker in path else path[len(marker) - 1:]


def _source_path(path: str, marker: str) -> str:
    if os.path.isabs(path):
        return path
    return next((os.path.join(entry, path) for entry in sys.path if os.path.isfile(os.path.join(entry or ".", path))),
                path)
