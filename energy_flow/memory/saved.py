"""Counting the bytes autograd keeps for the backward pass, by where in the model they were saved.

GPU memory of a training step is dominated by what autograd saves between forward and backward:
every propagation step of every flow leaves activations behind until ``backward()``. Those bytes
are deterministic and the same on any device for a given dtype, so they can be measured on the
CPU and asserted in a test (``tests/test_memory.py``), which is how this project keeps the
optimized preset inside a 32 GB card without a GPU to try it on.

:class:`SavedTensorLedger` installs ``torch.autograd.graph.saved_tensors_hooks`` for the
duration of a forward pass and records each saved tensor once per *storage* (views of one buffer
are one buffer in memory). Parameters are left out (they exist whatever the batch). Each record
is attributed to a region — the module whose forward was running (neuron, carrier GRU, carrier
heads, mappers), the output collector's deposit, the GRU hidden state kept as the input of a
recomputed step, or the rest of the propagation step — and
flagged when its first dimension is the flow state's full capacity (a per-step copy of the whole
state rather than of the live flows).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from energy_flow.core.collection import OutputCollector


#: Region of saved flow-state hidden tensors ([n, layers, hidden]) outside any module: what a
#: recomputed step or segment keeps of the GRU state.
HIDDEN_REGION = "hidden state (kept for recomputation)"


@dataclass
class SavedBytes:
    """Unique saved bytes, by region and dtype, of one measured forward pass."""

    by_region: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_dtype: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    full_capacity: int = 0   # bytes in tensors whose first dimension is the flow budget
    #: bytes by first dimension: the flow state at a step sits under its number of live flows
    by_rows: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    count: int = 0           # unique storages

    @property
    def total(self) -> int:
        return sum(self.by_region.values())


class SavedTensorLedger:
    """Context manager: ``with SavedTensorLedger(model) as ledger: result = model(x)``.

    Holds a reference to every counted storage until it is closed, so a freed buffer's address
    cannot be reused by a later tensor and be wrongly taken for the same storage (autograd keeps
    them alive until backward anyway, so this adds nothing to the forward's footprint).
    """

    #: submodule attribute paths → region names; the innermost running module wins.
    REGIONS = (("input_mapper", "input mapper"), ("neuron", "neuron"), ("carrier", "carrier (other)"),
               ("carrier.gru", "carrier GRU"),
               ("carrier.energy_head", "carrier heads"), ("carrier.displacement_head", "carrier heads"),
               ("carrier.spawn_head", "carrier heads"), ("output_mapper", "output mapper"))

    def __init__(self, model: nn.Module, capacity: int | None = None,
                 hidden_shape: tuple[int, int] | None = None):
        """``capacity`` and ``hidden_shape`` (layers, size) default to ``model.config``'s."""
        self.model = model
        config = getattr(model, "config", None)
        self.capacity = capacity if capacity is not None else config.resolved_max_active_flows
        self.hidden_shape = hidden_shape or (config.carrier_num_layers, config.carrier_hidden_size)
        self.result = SavedBytes()
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: dict[int, torch.Tensor] = {}
        self._regions: list[str] = []
        self._handles: list = []
        self._hooks = None
        self._deposit = None

    # ------------------------------------------------------------------ region tracking
    def _enter(self, name: str):
        def hook(_module, _args):
            self._regions.append(name)
        return hook

    def _leave(self, _module, _args, _out):
        self._regions.pop()

    @contextmanager
    def _collector_region(self) -> Iterator[None]:
        original = OutputCollector.deposit
        ledger = self

        def deposit(collector, *args, **kwargs):
            ledger._regions.append("collector deposit")
            try:
                return original(collector, *args, **kwargs)
            finally:
                ledger._regions.pop()

        OutputCollector.deposit = deposit
        try:
            yield
        finally:
            OutputCollector.deposit = original

    # ------------------------------------------------------------------ the hooks
    def _pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._params and ptr not in self._seen and storage.nbytes() > 0:
            self._seen[ptr] = t
            nbytes = storage.nbytes()
            r = self.result
            if self._regions:
                region = self._regions[-1]
            elif t.dim() == 3 and tuple(t.shape[1:]) == self.hidden_shape:
                region = HIDDEN_REGION
            else:
                region = "propagation step (other)"
            r.by_region[region] += nbytes
            r.by_dtype[str(t.dtype).removeprefix("torch.")] += nbytes
            r.count += 1
            if t.dim() > 0:
                r.by_rows[t.shape[0]] += nbytes
                if t.shape[0] == self.capacity:
                    r.full_capacity += nbytes
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> "SavedTensorLedger":
        for path, name in self.REGIONS:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:  # a model without this part (e.g. a test's small module)
                continue
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave))
        self._deposit = self._collector_region()
        self._deposit.__enter__()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._deposit.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()


def flow_steps(active_per_step) -> int:
    """Flow-steps a forward pass computed: the flows alive before each step that was taken
    (``FlowStats.active_per_step`` has one entry per step plus the placement)."""
    return int(sum(int(v) for v in active_per_step[:-1]))
