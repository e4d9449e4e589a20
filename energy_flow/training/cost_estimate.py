"""What one training batch of a config will cost on this device: memory and time, before it runs.

Memory comes from :func:`energy_flow.memory.estimate.estimate_memory` (the config alone) against
the device's memory. Time cannot be read off the config: it depends on the device, its threads
and the model's shapes. So it is **measured**: :func:`probe_batch_time` runs a few propagation
steps of a small real batch forward and backward, plus one optimiser step, on a *copy* of the
model, on the run's device, and divides the forward + backward time by the flow-steps it took
(flows alive at each step, summed). The batch estimate is that cost per flow-step times the
config's flow-steps — every placed flow (``batch_size`` × the start plane's cells) for every one
of ``max_steps`` steps — plus the optimiser step. Real batches differ from that count (children
are spawned, flows land early), which is why the first real batch is compared with the estimate
(:meth:`BatchCost.check_line`, with its own flow-steps) and why an upper bound (the whole flow
budget alive for every step) is named too.

The probe leaves the run as it was: it works on a deep copy of the model with its own optimiser
and restores the random number generators it may touch (``torch.random.fork_rng``), so a run
with the probe trains bit-identically to one without (tests/test_cost_estimate.py).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from energy_flow.config import EnergyConfig
from energy_flow.memory.estimate import MemoryEstimate, estimate_memory, format_bytes, machine_memory_bytes
from energy_flow.training.trainer import embedding_losses, make_optimizer

#: A batch estimated to take longer than this (s) is warned about as slow.
SLOW_BATCH_S = 30.0
#: Propagation steps the probe runs (fewer if the config has fewer).
PROBE_STEPS = 3
#: The probe uses as many of the batch's samples as place at most this many flows (at least 2
#: samples where the batch has them and a sample places at most this many, so the contrastive
#: loss has a negative; else one sample for one step): the cost per flow-step is measured at a
#: size where the per-call overhead is small, without paying for a whole batch of a large preset.
PROBE_FLOWS = 8_192


@dataclass(frozen=True)
class TimeProbe:
    """One timed probe: ``steps`` propagation steps of ``samples`` samples, forward + backward."""

    steps: int
    samples: int
    flow_steps: int            # flows stepped, summed over the probe's steps
    seconds: float             # forward + backward
    optimizer_seconds: float   # one AdamW step over every parameter

    @property
    def seconds_per_flow_step(self) -> float:
        return self.seconds / max(self.flow_steps, 1)


@dataclass(frozen=True)
class BatchCost:
    """A config's estimated cost per batch on ``device``; ``first_batch_s`` once one ran."""

    device: str
    memory: MemoryEstimate
    device_memory: tuple[int, str] | None     # (bytes, what) or None when unknown
    placed_flows: int                         # per batch: batch_size × cells of the start plane
    max_steps: int
    capacity: int                             # the flow budget of one forward pass
    micro_batches: int
    probe: TimeProbe | None                   # None: not measured (``probe_skipped`` says why)
    probe_skipped: str | None = None
    first_batch_s: float | None = None
    first_batch_flow_steps: int | None = None

    @property
    def assumed_flow_steps(self) -> int:
        return self.placed_flows * self.max_steps

    @property
    def seconds(self) -> float | None:
        """Estimated seconds per batch (None without a probe)."""
        if self.probe is None:
            return None
        return self.probe.seconds_per_flow_step * self.assumed_flow_steps + self.probe.optimizer_seconds

    @property
    def seconds_upper(self) -> float | None:
        """The whole flow budget alive for every step, in every micro-batch."""
        if self.probe is None:
            return None
        flow_steps = max(self.capacity * self.micro_batches, self.placed_flows) * self.max_steps
        return self.probe.seconds_per_flow_step * flow_steps + self.probe.optimizer_seconds

    def with_first_batch(self, seconds: float, flow_steps: int) -> BatchCost:
        return replace(self, first_batch_s=seconds, first_batch_flow_steps=flow_steps)

    # ------------------------------------------------------------------ words
    def time_text(self) -> str:
        if self.probe is None:
            return f"time per batch not estimated ({self.probe_skipped})"
        p = self.probe
        return (f"≈{format_seconds(self.seconds)} per batch on {self.device} (estimated from a "
                f"{format_seconds(p.seconds + p.optimizer_seconds)} probe of {_count(p.steps, 'step')} × "
                f"{_count(p.samples, 'sample')}: {p.seconds_per_flow_step * 1e6:.1f} µs per flow-step × {self.placed_flows:,} "
                f"placed flows × {self.max_steps} steps; up to {format_seconds(self.seconds_upper)} if all "
                f"{self.capacity:,} flows of the budget stay alive)")

    def memory_text(self) -> str:
        m = self.memory
        need = f"{format_bytes(m.minimum_bytes)}–{format_bytes(m.worst_case_bytes)}"
        if self.device_memory is None:
            return f"memory {need} per training step (this device's memory is unknown)"
        size, what = self.device_memory
        return f"memory {need} per training step of the {format_bytes(size)} {what}"

    def line(self) -> str:
        """The one line shown before training starts."""
        return f"Estimated cost: {self.time_text()}; {self.memory_text()}."

    def warnings(self) -> list[str]:
        """Where the config will be slow or may not fit (the run may still go on)."""
        return self.time_warnings() + self.memory_warnings()

    def time_warnings(self) -> list[str]:
        seconds = self.seconds
        if seconds is None or seconds <= SLOW_BATCH_S:
            return []
        return [f"slow: about {format_seconds(seconds)} per batch on {self.device} (over "
                f"{SLOW_BATCH_S:.0f} s); a smaller preset or a GPU is faster"]

    def memory_warnings(self) -> list[str]:
        out = []
        m = self.memory
        if self.device_memory is not None:
            size, what = self.device_memory
            if m.minimum_bytes > size:
                out.append(f"will not fit: a training step needs at least {format_bytes(m.minimum_bytes)}, "
                           f"the {what} is {format_bytes(size)}; {m.describe()}")
            elif m.worst_case_bytes > size:
                out.append(f"may not fit: a training step needs up to {format_bytes(m.worst_case_bytes)} if "
                           f"flows stay alive for many steps, the {what} is {format_bytes(size)}")
        return out

    def check_line(self) -> str | None:
        """Measured against estimated, once the first batch ran (None before)."""
        if self.first_batch_s is None:
            return None
        if self.seconds is None:
            return f"first batch {format_seconds(self.first_batch_s)} (no estimate: {self.probe_skipped})"
        flows = ("" if self.first_batch_flow_steps is None else
                 f"; it stepped {self.first_batch_flow_steps:,} flow-steps, the estimate assumed "
                 f"{self.assumed_flow_steps:,}")
        return (f"first batch {format_seconds(self.first_batch_s)}, estimated {format_seconds(self.seconds)} "
                f"({self.first_batch_s / self.seconds:.2f}×){flows}")


def format_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def probe_batch_time(processor: nn.Module, config: EnergyConfig, inputs: torch.Tensor, targets: torch.Tensor,
                     steps: int = PROBE_STEPS, max_flows: int = PROBE_FLOWS) -> TimeProbe:
    """Time ``steps`` propagation steps forward + backward and one optimiser step on a copy of
    ``processor`` (on its device) for the first samples of ``inputs``/``targets`` (at most one
    micro-batch of them, at most ``max_flows`` placed flows where that leaves two samples).

    Call it before progress hooks are put on ``processor`` (the copy would carry them). The
    model, its gradients and the random number generators are as they were afterwards."""
    device = next(processor.parameters()).device
    cells = config.cells_per_plane
    micro = max(1, config.batch_size // max(1, config.grad_accumulation_steps))   # one forward pass's rows
    available = min(len(inputs), micro)
    fit = max_flows // max(cells, 1)            # samples whose placed flows fit the probe's budget
    samples = min(available, max(fit, 2 if cells <= max_flows else 1))
    x = inputs[:samples].to(device, torch.float32)
    y = targets[:samples].to(device, torch.float32)
    # A start plane larger than the budget (the optimized preset's 10,000 cells) is probed for
    # one step only: its flow-steps are already many, and each is costly.
    steps = max(1, min(steps if cells <= max_flows else 1, config.max_steps))
    short = config.replace(max_steps=steps)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        probe = copy.deepcopy(processor)
        probe.config = short
        probe.lattice.config = short
        probe.batch_parts = 1
        probe.train()
        optimizer = make_optimizer(probe.parameters(), config)   # as the trainer makes it
        autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda
                    else contextlib.nullcontext())
        _sync(cuda)
        t0 = time.perf_counter()
        with autocast:
            result = probe(x)
        loss = embedding_losses(result.outputs, y, config)[0]
        loss.backward()
        _sync(cuda)
        t1 = time.perf_counter()
        optimizer.step()
        _sync(cuda)
        t2 = time.perf_counter()
    active = result.trace.flow_stats().active_per_step
    return TimeProbe(steps=steps, samples=samples, flow_steps=int(active[:-1].sum()),
                     seconds=t1 - t0, optimizer_seconds=t2 - t1)


def estimate_cost(processor: nn.Module, config: EnergyConfig, inputs: torch.Tensor | None,
                  targets: torch.Tensor | None, device_memory: tuple[int, str] | None = None) -> BatchCost:
    """The config's cost per batch on ``processor``'s device: memory from the config, time from
    a probe on ``inputs``/``targets`` (real samples of the run; None: not measured, said so).

    ``device_memory`` replaces the device's own figure (tests; a shared GPU)."""
    device = next(processor.parameters()).device
    if device_memory is None:
        device_memory = machine_memory_bytes(str(device))
    probe, skipped = None, None
    if inputs is None or targets is None or len(inputs) == 0:
        skipped = "no samples to probe with"
    else:
        try:
            probe = probe_batch_time(processor, config, inputs, targets)
        except (RuntimeError, MemoryError) as exc:   # out of memory included: said, never hidden
            skipped = f"the probe failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return BatchCost(device=str(device), memory=estimate_memory(config), device_memory=device_memory,
                     placed_flows=config.batch_size * config.cells_per_plane, max_steps=config.max_steps,
                     capacity=config.resolved_max_active_flows,
                     micro_batches=max(1, min(config.grad_accumulation_steps, config.batch_size)),
                     probe=probe, probe_skipped=skipped)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()
