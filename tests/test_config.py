import json

import pytest

from energy_flow.config import (PRESETS, EnergyConfig, create_debug_config, create_experiment_config,
                                create_optimized_config, create_preset, create_tiny_config)
from energy_flow.training import build_model


@pytest.mark.parametrize("field,value,fragment", [
    ("lattice_width", 0, "lattice_width"),
    ("energy_threshold", 1.5, "energy_threshold"),
    ("spawn_threshold", -0.1, "spawn_threshold"),
    ("start_mode", "sideways", "start_mode"),
    ("carrier_hidden_size", -4, "carrier_hidden_size"),
    ("max_active_flows", 10, "max_active_flows"),
    ("mapper_grid", 50, "mapper_grid"),
    ("learning_rate", float("nan"), "learning_rate"),
    ("device", "tpu", "device"),
    ("readout_dropout", 1.0, "readout_dropout"),
    ("readout_dropout", -0.1, "readout_dropout"),
    ("held_out_every", -1, "held_out_every"),
    ("held_out_every", 2.5, "held_out_every"),
    ("held_out_sample", 1, "held_out_sample"),
])
def test_invalid_values_name_field_and_value(field, value, fragment):
    with pytest.raises(ValueError) as err:
        create_tiny_config(**{field: value})
    msg = str(err.value)
    assert fragment in msg and repr(value) in msg


def test_budget_smaller_than_one_batch_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match=r"max_active_flows.*6400"):
        create_debug_config(max_active_flows=6000)


def test_spawn_threshold_must_exceed_energy_threshold():
    with pytest.raises(ValueError, match="spawn_threshold"):
        create_tiny_config(energy_threshold=0.4, spawn_threshold=0.3)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    c = create_tiny_config(start_mode="input_face", seed=7, trace_enabled=False)
    path = tmp_path / f"cfg{suffix}"
    c.save(path)
    assert EnergyConfig.load(path) == c


def test_unknown_keys_rejected_by_name(tmp_path):
    path = tmp_path / "cfg.json"
    data = create_tiny_config().to_dict() | {"lattice_widht": 5}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lattice_widht"):
        EnergyConfig.load(path)


def test_wrong_type_in_file_names_field(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('batch_size = "eight"\n')
    with pytest.raises(ValueError, match="batch_size"):
        EnergyConfig.load(path)


def test_malformed_file_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("batch_size = = 3\n")
    with pytest.raises(ValueError, match="broken.toml"):
        EnergyConfig.load(path)


def test_presets_have_the_documented_sizes():
    assert create_debug_config().cells_per_plane == 20 * 20 and create_debug_config().lattice_depth == 10
    e = create_experiment_config()
    assert (e.lattice_width, e.lattice_height, e.lattice_depth) == (50, 50, 20)
    o = create_optimized_config()
    assert (o.lattice_width, o.lattice_height, o.lattice_depth) == (100, 100, 50)
    assert set(PRESETS) == {"tiny", "debug", "experiment", "optimized"}
    with pytest.raises(ValueError, match="unknown preset"):
        create_preset("huge")


def test_optimized_preset_carrier_is_a_3x1024_gru_with_its_analytic_parameter_count():
    c = create_optimized_config()
    model = build_model(c)
    h, e = c.carrier_hidden_size, c.energy_dim
    first_in = c.neuron_output_dim + e + 1
    gru = 3 * (first_in * h + h * h + 2 * h) + (c.carrier_num_layers - 1) * 3 * (2 * h * h + 2 * h)
    heads = (h + 1) * (1 + e) + (h + e + 1) * 3 + (h + 1)
    assert (h, c.carrier_num_layers) == (1024, 3)
    assert sum(p.numel() for p in model.carrier.parameters()) == gru + heads  # ≈16.0M


def test_simple_neuron_is_a_few_thousand_parameters():
    model = build_model(create_debug_config())
    n = sum(p.numel() for p in model.neuron.parameters())
    assert 500 < n < 10_000, n


def test_max_active_flows_follows_the_lattice_and_batch_like_the_mapper_grid():
    """0 (every preset) = flow_headroom × the flows one forward pass places, rounded up to a
    hundred: the presets' budgets are what they were by hand (400 / 16,000 / 80,000 / 120,000),
    and a bigger lattice, batch or accumulation follows instead of being refused."""
    budgets = [f().resolved_max_active_flows for f in (create_tiny_config, create_debug_config,
                                                         create_experiment_config, create_optimized_config)]
    assert budgets == [400, 16_000, 80_000, 120_000]
    bigger = create_debug_config().replace(lattice_width=40, lattice_height=30)
    assert bigger.max_active_flows == 0 and bigger.resolved_max_active_flows == 2.5 * 16 * 1200
    assert create_debug_config(grad_accumulation_steps=4).resolved_max_active_flows == 4_000
    assert create_tiny_config(batch_size=1, flow_headroom=1.0).resolved_max_active_flows == 100
    assert create_debug_config(max_active_flows=7_000).resolved_max_active_flows == 7_000  # kept as set
    assert EnergyConfig.from_dict(create_debug_config().to_dict()).resolved_max_active_flows == 16_000


def test_a_budget_set_by_hand_that_cannot_hold_the_start_plane_is_refused_by_name():
    with pytest.raises(ValueError, match=r"max_active_flows = 16000 .*cannot hold the start plane.*36000"):
        create_debug_config(max_active_flows=16_000, lattice_width=30, lattice_height=30, batch_size=40)
    for value in (-1, True, 2.5):
        with pytest.raises(ValueError, match="max_active_flows"):
            create_tiny_config(max_active_flows=value)
    for value in (0.9, float("nan"), "2"):
        with pytest.raises(ValueError, match="flow_headroom"):
            create_tiny_config(flow_headroom=value)


def test_the_cpu_is_described_with_its_thread_count_in_plain_english(monkeypatch):
    """Tried as a new user: the status bar and About said "cpu (1 threads)"."""
    import torch

    from energy_flow.runtime.device import describe_device
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert describe_device(torch.device("cpu")) == "cpu (1 thread)"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert describe_device(torch.device("cpu")) == "cpu (4 threads)"
