"""The profile summary (benchmarks/profile_summary.py) on a real, tiny CPU train step.

benchmarks/gpu_session.sh relies on it to turn a device profile into time shares, and a device
session has no time to debug it: so its classification and the recomputation replays' share are
checked here, where a step runs on the CPU.
"""

from __future__ import annotations

import pytest

from benchmarks.profile_step import profile_train_steps
from benchmarks.profile_summary import ORDER, kind_of, markdown, summarise, top_operators
from energy_flow.config import create_tiny_config
from energy_flow.training import build_model
from energy_flow.training.trainer import EnergyTrainer


@pytest.mark.parametrize("name,kind", [
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::_cudnn_rnn", "matmul"),
    ("aten::index_put_", "gather/scatter"), ("aten::index_add", "gather/scatter"), ("aten::nonzero", "gather/scatter"),
    ("aten::sigmoid", "elementwise"), ("aten::index_fill_", "gather/scatter"),
    ("aten::item", "host sync"), ("cudaStreamSynchronize", "host sync"), ("cudaMemcpyAsync", "elementwise"),
    ("cudaMalloc", "allocator"), ("aten::empty_strided", "allocator"), ("cudaLaunchKernel", "launch"),
    ("autograd::engine::evaluate_function: MmBackward0", "framework"),
])
def test_operators_fall_into_their_kind(name, kind):
    assert kind_of(name) == kind


def profiled_shares(checkpoint_steps: int):
    c = create_tiny_config(checkpoint_steps=checkpoint_steps, max_steps=6)
    prof, seconds = profile_train_steps(EnergyTrainer(build_model(c), c), steps=1)
    events = prof.events()
    return summarise(events), events, seconds


def test_a_cpu_step_is_summarised_on_the_cpu_clock_with_every_kind_of_its_work():
    shares, events, seconds = profiled_shares(0)
    assert set(shares) == {"cpu"}  # no device ran kernels
    cpu = shares["cpu"]
    assert sum(cpu.by_kind.values()) == pytest.approx(cpu.total_us)
    assert 0 < cpu.total_us / 1e6 <= seconds * 1.01  # self times add up to at most the wall time
    for kind in ("matmul", "gather/scatter", "elementwise"):
        assert cpu.share(kind) > 0.01, kind
    assert cpu.replay_us == 0  # nothing recomputed without checkpoint_steps
    table = markdown(shares, "tiny")
    assert table.count("\n") == 2 and all(kind in table for kind in ORDER)
    top = top_operators(events)
    assert len(top) == 12 and top[0][2] >= top[-1][2] > 0


def test_recomputation_replays_are_counted_apart():
    cpu = profiled_shares(2)[0]["cpu"]
    assert 0.02 < cpu.replay_share < 0.9
