"""Host synchronisation in the step loop (issue 11, item 3), counted on the CPU.

A CUDA step waits for the device whenever an op's output *shape* depends on tensor values
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``…) or a value is read on the
host (``.item()``, ``int(t)``, ``bool(t)`` → ``aten._local_scalar_dense``). Which ops a step
dispatches does not depend on the device, so a dispatch-mode log of a CPU training step counts
the synchronisations a GPU step would make — without a GPU.

The compaction ``nonzero`` on the alive mask is the one sync per step the design keeps: it both
shrinks the work to the live flows and says when every flow has ended. Anything beyond that in
an untraced training step (forward and backward) is a regression this test fails on.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from energy_flow.config import create_tiny_config
from energy_flow.training import build_model
from energy_flow.training.trainer import embedding_losses
from tests.conftest import unit_rows

#: aten ops whose output shape (or host value) depends on tensor values
SHAPE_FROM_VALUES = {"nonzero", "nonzero_static", "masked_select", "unique", "_unique", "_unique2",
                     "unique_consecutive", "unique_dim", "_local_scalar_dense", "is_nonzero",
                     "equal", "repeat_interleave", "masked_scatter"}


class SyncLog(TorchDispatchMode):
    """Counts every dispatched op that would wait for a CUDA device."""

    def __init__(self):
        super().__init__()
        self.syncs: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in SHAPE_FROM_VALUES:
            # repeat_interleave only syncs with a tensor of repeats (an int is fine)
            if name != "repeat_interleave" or isinstance(args[1] if len(args) > 1 else None, torch.Tensor):
                self.syncs[name] += 1
        elif name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.syncs[f"{name}[bool mask]"] += 1
        return func(*args, **(kwargs or {}))


def training_step_syncs(checkpoint_steps: int) -> tuple[collections.Counter, collections.Counter, int]:
    config = create_tiny_config(trace_enabled=False, checkpoint_steps=checkpoint_steps,
                                max_spawn_per_step=2)
    model = build_model(config)
    x, y = unit_rows(config.batch_size, config.teacher_dim, 1), unit_rows(config.batch_size, config.teacher_dim, 2)
    with SyncLog() as forward:
        result = model(x)
        loss = embedding_losses(result.outputs, y, config)[0]
    with SyncLog() as backward:
        loss.backward()
    steps = len(result.flow_stats.active_per_step) - 1  # row 0 is the placement
    return forward.syncs, backward.syncs, steps


def test_an_untraced_step_synchronises_once_for_compaction_and_never_reads_a_value():
    """Guards against an ``.item()``, ``if t.any():`` or boolean-mask index slipping into the step."""
    forward, backward, steps = training_step_syncs(checkpoint_steps=0)
    assert steps >= 3
    assert dict(forward) == {"nonzero": steps}, dict(forward)
    assert dict(backward) == {}, dict(backward)


@pytest.mark.parametrize("segment", [1, 3])
def test_recomputation_repeats_only_the_compaction(segment):
    """With recomputation, backward reruns steps, each with its one compaction and nothing else."""
    forward, backward, steps = training_step_syncs(checkpoint_steps=segment)
    assert dict(forward) == {"nonzero": steps}, dict(forward)
    assert set(backward) <= {"nonzero"}, dict(backward)
    assert backward["nonzero"] <= steps


def test_the_log_sees_the_syncs_it_is_meant_to_catch():
    """The counter itself: an ``.item()``, a boolean mask and a ``nonzero`` are each seen."""
    t = torch.arange(6.0)
    with SyncLog() as log:
        t.sum().item()
        _ = t[t > 2]
        torch.nonzero(t)
    assert log.syncs["_local_scalar_dense"] == 1
    assert log.syncs["index[bool mask]"] == 1
    assert log.syncs["nonzero"] == 1
