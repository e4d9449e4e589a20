"""Size sanity: a config's memory is estimated from its fields, honestly, and configs no
machine can hold are refused with the estimate and the field to lower (issue 9, item 10)."""

from __future__ import annotations

import pytest
import torch

from energy_flow.config import create_debug_config, create_preset, create_tiny_config, PRESETS
from energy_flow.memory_estimate import (estimate_memory, lattice_bytes, parameter_count,
                                         saved_bytes_per_flow_step)
from energy_flow.training import build_model
from tests.conftest import unit_rows


@pytest.mark.parametrize("overrides", [{}, {"start_mode": "input_face"},
                                       {"carrier_num_layers": 3, "energy_dim": 7, "mapper_grid": 5}])
def test_parameter_count_is_exact(overrides):
    """The estimate's parameter count equals the built model's (guards against formula drift)."""
    c = create_tiny_config(**overrides)
    assert parameter_count(c) == sum(p.numel() for p in build_model(c).parameters())


def _saved_bytes(config) -> tuple[int, int]:
    """Bytes autograd keeps for backward in one forward (unique storages), and the flow-steps."""
    model = build_model(config)
    storages: dict[tuple[int, int], int] = {}

    def pack(t):
        st = t.untyped_storage()
        storages[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = model(unit_rows(config.batch_size, dim=config.teacher_dim, seed=1))
    return sum(storages.values()), int(result.flow_stats.active_per_step[1:].sum())


@pytest.mark.parametrize("overrides", [{}, {"carrier_hidden_size": 64, "carrier_num_layers": 3},
                                       {"neuron_hidden_dim": 64, "neuron_output_dim": 64, "energy_dim": 12},
                                       {"lattice_width": 12, "lattice_height": 12, "max_active_flows": 2000,
                                        "mapper_grid": 6}])
def test_activation_estimate_is_within_a_factor_of_two_of_the_measured(overrides):
    """Measured with saved_tensors_hooks on real forwards: estimate / measured in [0.5, 2]."""
    c = create_tiny_config(**overrides)
    measured, flow_steps = _saved_bytes(c)
    estimated = flow_steps * saved_bytes_per_flow_step(c) + lattice_bytes(c, c.batch_size)
    assert 0.5 <= estimated / measured <= 2.0, (estimated, measured, flow_steps)
    est = estimate_memory(c)
    assert est.activation_min_bytes <= measured * 2 and measured <= est.activation_max_bytes + est.lattice_bytes


@pytest.mark.parametrize("overrides, field", [
    ({"lattice_width": 10_000, "lattice_height": 10_000, "max_active_flows": 16 * 10**8}, "batch_size or the lattice size"),
    ({"carrier_hidden_size": 1_000_000}, "carrier_hidden_size"),
])
def test_configs_no_machine_can_hold_are_refused_naming_the_field(overrides, field):
    """Guards against such configs passing validation and dying in the allocator (8 GB / 12 TB)."""
    with pytest.raises(ValueError) as err:
        create_debug_config(**overrides)
    text = str(err.value)
    assert "too large for any machine" in text and f"lower {field}" in text and "TiB" in text


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_passes(name):
    est = estimate_memory(create_preset(name))
    assert est.minimum_bytes < est.worst_case_bytes < 1 << 40
