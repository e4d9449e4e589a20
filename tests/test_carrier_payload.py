"""The carrier's payload options: a gated payload that keeps what the flow carries, and flows
that start without sideways movement (the fix for outputs collapsing toward the mean)."""

from __future__ import annotations

import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core.carrier import EnergyCarrier
from energy_flow.training import EnergyTrainer, build_model
from energy_flow.training.checkpoint import incompatible_fields
from tests.conftest import unit_rows


def carrier(**overrides) -> tuple[EnergyCarrier, dict]:
    c = create_tiny_config(**overrides)
    torch.manual_seed(0)
    car = EnergyCarrier(c, input_dim=9)
    n, e = 5, c.energy_dim
    args = dict(x=torch.randn(n, 9), hidden=torch.zeros(n, c.carrier_num_layers, c.carrier_hidden_size),
                cell_part=torch.rand(n, e) - 0.5, payload=torch.rand(n, e) - 0.5)
    return car, args


def test_a_closed_gate_keeps_the_carried_payload_and_an_open_one_replaces_it() -> None:
    """Guards against an inverted gate (which would overwrite the input's part at once)."""
    gated, args = carrier(payload_update="gated")
    plain, _ = carrier()  # same seed: same GRU and head weights
    with torch.no_grad():
        gated.payload_gate.weight.zero_()
        gated.payload_gate.bias.fill_(-50.0)
        torch.testing.assert_close(gated(**args).payload, args["payload"])
        gated.payload_gate.bias.fill_(50.0)
        torch.testing.assert_close(gated(**args).payload, plain(**args).payload)
        gated.payload_gate.bias.fill_(-3.0)  # the initial gate keeps ~95 %
        mixed = gated(**args).payload
    share = torch.sigmoid(torch.tensor(-3.0))
    torch.testing.assert_close(mixed, args["payload"] + share * (plain(**args).payload - args["payload"]))


def test_still_start_moves_flows_only_in_depth_at_first() -> None:
    still, args = carrier(flow_xy_start="still")
    free, _ = carrier()
    assert still(**args).displacement[:, :2].abs().max() == 0
    assert still(**args).displacement[:, 2].abs().min() > 0
    assert free(**args).displacement[:, :2].abs().max() > 0


def test_the_gate_learns_and_the_options_are_validated_and_checkpointed(tmp_path) -> None:
    c = create_tiny_config(batch_size=8, max_active_flows=800, payload_update="gated", flow_xy_start="still")
    trainer = EnergyTrainer(build_model(c), c)
    report = trainer.train_step((unit_rows(8, seed=1), unit_rows(8, seed=2)))
    assert report.params_without_grad == ()
    assert trainer.processor.carrier.payload_gate.weight.grad.abs().sum() > 0
    assert incompatible_fields(c.to_dict(), c.replace(payload_update="replace")) == [
        "payload_update (checkpoint 'gated', model 'replace')"]
    for field, bad in (("payload_update", "keep"), ("flow_xy_start", "random")):
        with pytest.raises(ValueError, match=field):
            create_tiny_config(**{field: bad})
