"""NaN or inf in inputs is reported, never a crash (issue 9, item 7)."""

from __future__ import annotations

import math

import torch

from energy_flow.config import create_tiny_config
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows


def make(**overrides):
    c = create_tiny_config(batch_size=8, max_active_flows=800, **overrides)
    return EnergyTrainer(build_model(c), c)


def test_deposit_of_a_nan_position_does_not_raise_and_stays_in_its_sample():
    """Guards against NaN positions turned into indices (IndexError in index_add)."""
    c = create_tiny_config()
    lat = EnergyLattice(c)
    col = OutputCollector(lat, batch=2, payload_dim=3, device=torch.device("cpu"), dtype=torch.float32)
    xy = torch.tensor([[float("nan"), 0.2], [0.1, -0.3]])
    col.deposit(sample=torch.tensor([0, 1]), plane=torch.tensor([1, 1]), xy=xy,
                energy=torch.tensor([0.5, 0.5]), payload=torch.ones(2, 3), mask=torch.tensor([True, True]))
    payload, energy = col.surfaces()
    assert torch.isnan(energy[0]).any()                      # the NaN is not hidden...
    assert torch.isfinite(energy[1]).all()                   # ...nor spread to another sample
    assert math.isclose(float(energy[1].sum()), 0.5, rel_tol=1e-5)


def test_train_step_reports_nan_inputs_as_a_skipped_batch_naming_the_samples():
    """Guards against train_step raising IndexError on NaN inputs."""
    trainer = make()
    x, y = unit_rows(8, seed=1), unit_rows(8, seed=2)
    x[5, 3] = float("nan")
    y[2, 0] = float("inf")
    before = [p.detach().clone() for p in trainer.processor.parameters()]
    report = trainer.train_step((x, y, torch.arange(100, 108)))
    assert report.skipped
    assert "2 sample(s)" in report.nonfinite and "dataset indices 102, 105" in report.nonfinite
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.processor.parameters()))
    assert all(p.grad is None for p in trainer.processor.parameters())


def test_a_nonfinite_micro_batch_leaves_no_gradients_behind():
    """Guards against the first micro-batch's gradients surviving a failing second one."""
    trainer = make(grad_accumulation_steps=2)
    x, y = unit_rows(8, seed=1), unit_rows(8, seed=2)
    x[6] = float("nan")  # in the second micro-batch
    report = trainer.train_step((x, y))
    assert report.skipped and "dataset indices 6" in report.nonfinite
    assert all(p.grad is None for p in trainer.processor.parameters())
    ok = trainer.train_step((unit_rows(8, seed=1), unit_rows(8, seed=2)))
    assert not ok.skipped


def test_predict_gives_nan_rows_for_nan_inputs_and_finite_rows_for_the_rest():
    """Guards against predict crashing on one bad row."""
    trainer = make()
    x = unit_rows(8, seed=1)
    x[5, 0] = float("nan")
    out = trainer.predict(x)
    finite = torch.isfinite(out).all(1)
    assert not finite[5] and finite[torch.arange(8) != 5].all()
