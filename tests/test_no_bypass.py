"""All information from input to output travels through the deposits on the output planes.

Guards against a shortcut (a skip connection from the input embedding or the input mapper to
the output mapper) that would let the model ignore its lattice: with every deposit zeroed the
output must be the same for every input, and carry no gradient back to the input.
"""

from __future__ import annotations

import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core.collection import OutputCollector
from energy_flow.training import build_model
from tests.conftest import unit_rows

CONFIGS = {
    "center": {},
    "input_face": {"start_mode": "input_face"},
    "contrastive": {"loss": "contrastive"},
    "finer mapper grid": {"mapper_grid": 6, "energy_dim": 6},
    "gated payload, still start": {"payload_update": "gated", "flow_xy_start": "still"},
    "tied readout": {"payload_update": "gated", "flow_xy_start": "still", "readout_init": "tied"},
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request):
    return build_model(create_tiny_config(batch_size=4, **CONFIGS[request.param]))


def test_outputs_depend_on_the_input_when_deposits_are_kept(model) -> None:
    """The control: without zeroing, two inputs give different outputs (else the test below
    would pass for a model that ignores its input altogether)."""
    a, b = unit_rows(4, seed=3), unit_rows(4, seed=4)
    with torch.no_grad():
        assert (model(a).outputs - model(b).outputs).abs().max() > 1e-4


def test_with_every_deposit_zeroed_the_output_does_not_depend_on_the_input(model, monkeypatch) -> None:
    original = OutputCollector.deposit

    def zeroed(self, sample, plane, xy, energy, payload, mask):
        original(self, sample, plane, xy, energy * 0.0, payload * 0.0, mask)

    monkeypatch.setattr(OutputCollector, "deposit", zeroed)
    a = unit_rows(4, seed=3).requires_grad_(True)
    b = unit_rows(4, seed=4)
    out_a = model(a).outputs
    out_b = model(b).outputs
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(out_a.sum(), a, allow_unused=True)
    assert grad is None or grad.abs().max() == 0
