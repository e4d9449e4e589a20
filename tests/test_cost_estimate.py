"""The cost of a batch on this device, estimated before training (issue 28, item 4): computed
from the config and a probe on the device, warned about where slow or too big, checked against
the first batch, and without any effect on the training it estimates."""

from __future__ import annotations

import io

import pytest
from dataclasses import replace
import torch

from energy_flow.config import create_tiny_config
from energy_flow import headless
from energy_flow.headless import HeadlessOptions, run
from energy_flow.training import cost_estimate
from energy_flow.training.cost_estimate import BatchCost, TimeProbe, estimate_cost
from energy_flow.training.data import PairDataset
from energy_flow.training.report import DataProvenance
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.trainer import EnergyTrainer, build_model
from tests.conftest import unit_rows

GIB = 1024 ** 3


def _trainer(**overrides) -> EnergyTrainer:
    config = create_tiny_config(device="cpu", teacher_dim=32, **overrides)
    return EnergyTrainer(build_model(config), config)


def _data(n: int = 16, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return unit_rows(n, dim, seed=1), unit_rows(n, dim, seed=2)


def test_the_estimate_is_computed_from_the_config_and_a_probe():
    x, y = _data()
    small, large = _trainer(batch_size=2), _trainer(batch_size=16, lattice_width=12, lattice_height=12)
    a = estimate_cost(small.processor, small.config, x, y)
    b = estimate_cost(large.processor, large.config, x, y)
    assert a.probe is not None and a.probe.seconds > 0 and a.probe.flow_steps > 0
    assert a.placed_flows == 2 * 36 and b.placed_flows == 16 * 144
    # The time is the probe's cost per flow-step times the config's flow-steps (timings are noisy
    # on a loaded machine, so the order is checked with one probe's cost for both configs).
    assert a.seconds == pytest.approx(a.probe.seconds_per_flow_step * a.assumed_flow_steps + a.probe.optimizer_seconds)
    assert b.assumed_flow_steps == 32 * a.assumed_flow_steps
    assert replace(b, probe=a.probe).seconds > a.seconds
    assert b.memory.worst_case_bytes > a.memory.worst_case_bytes
    assert a.seconds <= a.seconds_upper
    line = a.line()
    assert "probe of 3 steps" in line and "per flow-step" in line and "per training step" in line
    checked = a.with_first_batch(0.5, 400)
    assert checked.check_line().startswith("first batch 500 ms, estimated ") and "400 flow-steps" in checked.check_line()


def test_a_config_too_big_or_too_slow_is_warned_about(monkeypatch):
    x, y = _data()
    trainer = _trainer()
    cost = estimate_cost(trainer.processor, trainer.config, x, y, device_memory=(64 * GIB, "RAM"))
    assert cost.warnings() == []
    tight = estimate_cost(trainer.processor, trainer.config, x, y, device_memory=(cost.memory.minimum_bytes - 1, "RAM"))
    assert any(w.startswith("will not fit") for w in tight.warnings())
    some = estimate_cost(trainer.processor, trainer.config, x, y,
                         device_memory=(cost.memory.worst_case_bytes - 1, "GPU memory of cuda"))
    assert any(w.startswith("may not fit") and "GPU memory" in w for w in some.warnings())
    # slow: the probe's own measurement over the threshold
    monkeypatch.setattr(cost_estimate, "SLOW_BATCH_S", cost.seconds / 2)
    assert any(w.startswith("slow") for w in cost.warnings())
    # and a measured 100 µs per flow-step at the experiment preset's 40,000 flows × 24 steps
    big = BatchCost(device="cpu", memory=cost.memory, device_memory=None, placed_flows=40_000, max_steps=24,
                    capacity=80_000, micro_batches=1,
                    probe=TimeProbe(steps=3, samples=3, flow_steps=10_000, seconds=1.0, optimizer_seconds=0.01))
    monkeypatch.undo()
    assert big.seconds == pytest.approx(96.01) and any("slow: about 96.0 s per batch" in w for w in big.warnings())


def test_the_probe_leaves_training_bit_identical():
    x, y = _data()
    plain, probed = _trainer(batch_size=4), _trainer(batch_size=4)
    sampler = BatchSampler(len(x), 4, plain.config.seed)
    rng = torch.get_rng_state()
    estimate_cost(probed.processor, probed.config, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in probed.processor.parameters())
    for trainer in (plain, probed):
        torch.manual_seed(7)        # the same global RNG for both runs at their start
        for step in range(3):
            idx = sampler.indices(step)
            trainer.train_step((x[idx], y[idx], idx))
            if trainer is probed:   # a probe between batches (Reset, Apply) changes nothing either
                estimate_cost(probed.processor, probed.config, x, y)
    a, b = plain.processor.state_dict(), probed.processor.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = plain.optimizer.state_dict()["state"], probed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_headless_prints_the_estimate_before_the_first_batch(monkeypatch, capsys):
    x, y = _data(24)
    dataset = PairDataset(x, y, None, None, DataProvenance("test rows", len(x), "none", 32))
    config = create_tiny_config(device="cpu", teacher_dim=32)
    out = io.StringIO()
    monkeypatch.setattr(headless, "load_data", lambda cfg, data, teacher: dataset)
    monkeypatch.setattr(cost_estimate, "SLOW_BATCH_S", 1e-9)     # every batch counts as slow
    code = run(HeadlessOptions(config=config, batches=2, progress=False), out=out)
    assert code == 0
    lines = out.getvalue().splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("Estimated cost: ≈"))
    first = next(i for i, line in enumerate(lines) if line.startswith("batch     1"))
    assert estimate < first and "per batch on cpu" in lines[estimate]
    assert lines[first + 1].startswith("first batch ") and ", estimated " in lines[first + 1]
    assert "warning: slow: about " in capsys.readouterr().err


def test_a_start_plane_larger_than_the_probe_budget_is_probed_one_sample_one_step():
    x, y = _data()
    trainer = _trainer()               # 36 cells per sample
    small = cost_estimate.probe_batch_time(trainer.processor, trainer.config, x, y, max_flows=10)
    assert (small.samples, small.steps, small.flow_steps) == (1, 1, 36)
    usual = cost_estimate.probe_batch_time(trainer.processor, trainer.config, x, y)
    assert usual.samples == trainer.config.batch_size and usual.steps == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_probe_on_a_gpu_times_the_gpu_and_leaves_its_random_state():
    x, y = _data()
    config = create_tiny_config(device="cuda", teacher_dim=32)
    trainer = EnergyTrainer(build_model(config), config)
    rng = torch.cuda.get_rng_state()
    cost = estimate_cost(trainer.processor, config, x, y)
    assert torch.equal(torch.cuda.get_rng_state(), rng)
    assert cost.device.startswith("cuda") and cost.probe is not None and cost.probe.seconds > 0
    assert cost.device_memory is not None and "GPU memory" in cost.device_memory[1]
