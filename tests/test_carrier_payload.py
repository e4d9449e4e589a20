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
    tied = c.replace(readout_init="tied")
    assert incompatible_fields(tied.to_dict(), c) == ["readout_init (checkpoint 'tied', model 'random')"]
    older = {k: v for k, v in c.to_dict().items() if k != "readout_init"}  # written before the field
    assert incompatible_fields(older, c) == []
    assert incompatible_fields(older, tied) == ["readout_init (checkpoint 'random', model 'tied')"]
    for field, bad in (("payload_update", "keep"), ("flow_xy_start", "random"), ("readout_init", "copy")):
        with pytest.raises(ValueError, match=field):
            create_tiny_config(**{field: bad})


def test_a_tied_readout_reads_back_the_input_mappers_weights() -> None:
    """Guards against a readout tied to the wrong channel or cell (or to the energy channel):
    each plane's payload channel e at coarse cell k holds input weight row (1 + e)·g² + k,
    transposed; energy channels and the bias are zero; the fixed gain is 1 / (g²·E)."""
    c = create_tiny_config(readout_init="tied", mapper_grid=3, energy_dim=4)
    model = build_model(c)
    g2, e = c.mapper_grid ** 2, c.energy_dim
    w_in = model.input_mapper.proj.weight.detach()                       # [(1+E)·g², D]
    w_out = model.output_mapper.proj.weight.detach().view(c.teacher_dim, c.num_output_planes, 1 + e, g2)
    for plane in range(c.num_output_planes):
        for ch in range(e):
            for k in (0, g2 - 1):
                torch.testing.assert_close(w_out[:, plane, ch, k], w_in[(1 + ch) * g2 + k])
        assert w_out[:, plane, e].abs().max() == 0
    assert model.output_mapper.proj.bias.abs().max() == 0
    assert model.output_mapper.gain == 1 / (g2 * e)
    assert build_model(create_tiny_config()).output_mapper.gain == 1.0


def cosine_with_input(config_overrides: dict, mapper_grid: int = 4) -> float:
    c = create_tiny_config(lattice_width=12, lattice_height=12, mapper_grid=mapper_grid, energy_dim=8,
                           batch_size=8, max_active_flows=4_000, **config_overrides)
    x = unit_rows(8, c.teacher_dim, seed=5)
    with torch.no_grad():
        out = build_model(c)(x).outputs
    return torch.nn.functional.cosine_similarity(out, x, dim=1).mean().item()


def test_an_untrained_lattice_with_a_tied_readout_hands_the_output_its_input() -> None:
    """The point of ``readout_init = "tied"``: with payloads carried to the planes under their
    start cells, the untrained model's output already points along its input (measured on
    WordNet: held-out top-1 0.36 before any training, docs/BENCHMARKS.md); a random readout
    does not. Guards against a tie that scrambles cells or channels (cosine would drop to ~0)."""
    carried = {"payload_update": "gated", "flow_xy_start": "still"}
    assert cosine_with_input({**carried, "readout_init": "tied"}) > 0.3
    assert abs(cosine_with_input({**carried, "readout_init": "random"})) < 0.15


def test_a_mapper_grid_as_fine_as_the_lattice_hands_on_more_of_the_input() -> None:
    """The mappers' coarse grid blurs: the input mapper interpolates g×g up to the lattice and the
    readout pools it back, so at g < width the untrained tied model loses part of its input on
    the way. At g = width no two cells are pooled together (on WordNet, debug preset: cosine with
    the input 0.67 at g = 8, 0.93 at g = 20; docs/BENCHMARKS.md). Guards that finer grids keep more."""
    tied = {"payload_update": "gated", "flow_xy_start": "still", "readout_init": "tied"}
    coarse, fine = cosine_with_input(tied, mapper_grid=4), cosine_with_input(tied, mapper_grid=12)
    assert fine > 0.7
    assert fine > coarse + 0.2


def test_readout_dropout_acts_in_training_only_and_every_parameter_still_learns() -> None:
    """``readout_dropout`` drops pooled plane features on their way into the readout while
    training (the ridge-like shrinkage measured in docs/BENCHMARKS.md, "Issue 19"). Guards against
    dropout leaking into predictions (eval outputs must equal those of the same weights without
    it), against a field that does nothing in training, and against cutting a parameter's gradient."""
    c = create_tiny_config(readout_init="tied", payload_update="gated", flow_xy_start="still", batch_size=8,
                           max_active_flows=800)
    x = unit_rows(8, c.teacher_dim, seed=3)
    torch.manual_seed(0)
    plain = build_model(c)
    torch.manual_seed(0)
    dropped = build_model(c.replace(readout_dropout=0.5))
    dropped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.eval(), dropped.eval()
        torch.testing.assert_close(dropped(x).outputs, plain(x).outputs)
        plain.train(), dropped.train()
        torch.manual_seed(1)
        train_plain = plain(x).outputs
        torch.manual_seed(1)
        train_dropped = dropped(x).outputs
    assert (train_dropped - train_plain).abs().max() > 1e-3
    trainer = EnergyTrainer(dropped, dropped.config)
    report = trainer.train_step((x, unit_rows(8, c.teacher_dim, seed=4)))
    assert report.params_without_grad == ()
