"""Size sanity: a config's memory is estimated from its fields, honestly, and configs no
machine can hold are refused with the estimate and the field to lower (issue 9, item 10)."""

from __future__ import annotations

import pytest
import torch

from energy_flow.config import create_debug_config, create_preset, create_tiny_config, PRESETS
from energy_flow.memory.estimate import (estimate_memory, lattice_bytes, parameter_count,
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


def test_recomputation_estimate_follows_the_measured_transient_per_flow():
    """With segments of k steps recomputed, what backward holds grows per flow of the busiest
    step by k steps of inputs plus one carrier chunk's activations — not by the plain path's bytes
    for every flow-step. Measured with the profiler's allocator events (memory_timeline) as the
    slope between two batch sizes at the same capacity, every flow alive for all 12 steps (no
    spawning, slow flows). Guards against the estimate charging recomputing configs per flow-step
    (the optimized preset was estimated at up to 674 GiB), and against recomputation keeping more
    than its inputs."""
    from energy_flow.memory.saved import SavedTensorLedger, flow_steps
    from energy_flow.memory.estimate import kept_bytes_per_flow_step
    from energy_flow.memory.timeline import measure_live_tensors
    from energy_flow.training.trainer import embedding_losses

    base = dict(carrier_hidden_size=256, carrier_num_layers=3, max_active_flows=864, max_steps=12,
                displacement_scale=0.05, max_spawn_per_step=0, trace_enabled=False, checkpoint_steps=6)
    peaks, busiest = [], []
    for batch in (4, 8):
        c = create_tiny_config(**base, batch_size=batch)
        model = build_model(c)
        x, y = unit_rows(batch, seed=1), unit_rows(batch, seed=2)

        def forward_backward():
            result = model(x)
            embedding_losses(result.outputs, y, c)[0].backward()
            return result

        result, live = measure_live_tensors(forward_backward)
        assert result.flow_stats.steps == 12 and len(set(result.flow_stats.active_per_step[:-1])) == 1
        peaks.append(live.phase_peaks["backward+recompute"])
        busiest.append(int(max(result.flow_stats.active_per_step)))
    measured = (peaks[1] - peaks[0]) / (busiest[1] - busiest[0])
    estimated = 6 * kept_bytes_per_flow_step(c) + saved_bytes_per_flow_step(c)
    assert 0.67 <= estimated / measured <= 1.5, (estimated, measured)

    # the kept inputs of one recomputed flow-step, as autograd saves them (checkpoint_steps = 1)
    c1 = create_tiny_config(**{**base, "checkpoint_steps": 1}, batch_size=4)
    model = build_model(c1)
    with SavedTensorLedger(model) as ledger:
        result = model(unit_rows(4, seed=1))
    kept = ledger.result.total / flow_steps(result.flow_stats.active_per_step)
    assert 0.8 <= kept_bytes_per_flow_step(c1) / kept <= 1.25, (kept_bytes_per_flow_step(c1), kept)


def test_recomputing_presets_are_estimated_from_their_segments_not_per_flow_step():
    """The optimized preset (segments of 6 steps) fits its 32 GB aim in the estimate's worst case
    as well, in float32; the plain path would need hundreds of GiB. Guards against the estimate
    (and the headless warning) ignoring checkpoint_steps."""
    opt = create_preset("optimized")
    recomputed, plain = estimate_memory(opt), estimate_memory(opt.replace(checkpoint_steps=0))
    assert recomputed.worst_case_bytes < 32 * 2**30 < 10 * 32 * 2**30 < plain.worst_case_bytes
    assert recomputed.minimum_bytes < recomputed.worst_case_bytes
