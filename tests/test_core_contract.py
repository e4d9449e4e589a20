"""Contracts of the lattice geometry, placement and telemetry packing that the propagation tests
reach only indirectly (mutation testing found them unpinned; issue 13).

Each test states the behaviour a caller relies on and computes the expected value by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice
from energy_flow.core.carrier import CarrierOutput
from energy_flow.core.tracing import StepTracer
from energy_flow.training import build_model
from tests.conftest import unit_rows


def lattice(**overrides) -> EnergyLattice:
    return EnergyLattice(create_tiny_config(lattice_width=5, lattice_height=4, **overrides))


def test_cell_xy_is_row_major_y_major_x_minor_over_minus_one_to_one():
    """Guards against swapped meshgrid axes ("xy" indexing) or a wrong range: the cell of row j,
    column i sits at (−1 + 2i/(W−1), −1 + 2j/(H−1)) and has index j·W + i."""
    lat = lattice()
    xy = lat.cell_xy()
    assert xy.shape == (20, 2)
    for j in range(4):
        for i in range(5):
            torch.testing.assert_close(xy[j * 5 + i], torch.tensor([-1 + 2 * i / 4, -1 + 2 * j / 3]))


def test_nearest_cell_rounds_and_clamps_to_the_last_row_and_column():
    """Guards against a clamp one cell short (x = +1 read from column W−2) or none at all."""
    lat = lattice()
    xy = torch.tensor([[1.0, 1.0], [5.0, 5.0], [-3.0, -3.0], [-1.0, 1.0], [0.0, -0.2], [0.26, -0.34]])
    # (0, −0.2) → grid (2, 1.2) → column 2, row 1; (0.26, −0.34) → grid (2.52, 0.99) → column 3, row 1
    assert lat.nearest_cell(xy).tolist() == [19, 19, 0, 15, 1 * 5 + 2, 1 * 5 + 3]


def test_placement_holds_one_row_per_placed_flow_and_nothing_else():
    """The state holds the placed flows only, sample-major (flow ``i`` is row ``i``), not the
    budget's worth of rows: placed flows sit on their cells at the start plane with a zero GRU
    state and no parent; ``traced`` marks the first samples."""
    lat = lattice(max_active_flows=100)
    batch, cells, e = 2, 20, 3
    energy = torch.rand(batch, cells)
    payload = torch.rand(batch, cells, e)
    keys = torch.tensor([7, 7])  # two samples with equal inputs: equal lineage keys
    st = lat.place(energy, payload, (2, 7), traced_samples=1, sample_keys=keys)
    n0 = batch * cells
    assert st.count == n0 and st.hidden.shape == (n0, 2, 7) and st.hidden.abs().max() == 0
    assert all(getattr(st, f).shape[0] == n0 for f in ("pos", "energy", "payload", "sample", "flow_id",
                                                        "parent_id", "age", "birth_step", "traced", "lineage"))
    assert st.flow_id.tolist() == list(range(n0))
    assert (st.parent_id == -1).all() and (st.age == 0).all() and (st.birth_step == 0).all()
    assert st.traced[:cells].all() and not st.traced[cells:].any()
    assert st.sample.tolist() == [0] * cells + [1] * cells
    assert torch.equal(st.lineage[:cells], st.lineage[cells:]) and st.lineage[:cells].unique().numel() == cells
    torch.testing.assert_close(st.pos[:, :2], lat.cell_xy().repeat(batch, 1))
    assert (st.pos[:, 2] == lat.start_z).all()
    torch.testing.assert_close(st.energy, energy.reshape(-1))
    torch.testing.assert_close(st.payload, payload.reshape(n0, e))
    assert int(st.next_id) == n0
    with pytest.raises(ValueError, match="batch of 6 needs 120 initial flows but max_active_flows = 100"):
        lat.place(torch.rand(6, cells), torch.rand(6, cells, e), (2, 7), traced_samples=1,
                  sample_keys=torch.arange(6))


def test_energy_histogram_edges_are_the_unit_interval_in_equal_bins():
    c = create_tiny_config(energy_hist_bins=16)
    tel = build_model(c)(unit_rows(c.batch_size, c.teacher_dim)).telemetry
    np.testing.assert_allclose(tel.aggregates.energy_bin_edges, np.linspace(0, 1, 17), atol=1e-7)


def test_a_family_that_exactly_fills_the_trace_cap_is_kept():
    """The trajectory sample keeps every sample whose flows fit in ``trace_max_flows``; a cap
    equal to the first sample's flow count keeps that sample and no more (guards against ``<``
    where ``≤`` is meant, which would drop to the one-sample minimum only by accident)."""
    base = create_tiny_config(max_spawn_per_step=0, max_active_flows=400)   # no children: 36 per sample
    cells = base.lattice_width * base.lattice_height
    for cap, samples in ((2 * cells, 2), (2 * cells - 1, 1), (3 * cells, 3)):
        c = base.replace(trace_max_flows=cap)
        tel = build_model(c)(unit_rows(c.batch_size, c.teacher_dim)).telemetry
        assert tel.flows.num_flows == samples * cells, (cap, tel.flows.num_flows)


def carrier_output(unit_z: float) -> CarrierOutput:
    n = 4
    unit = torch.zeros(n, 3)
    unit[:, 2] = unit_z
    return CarrierOutput(hidden=torch.zeros(n, 1, 2), retention=torch.full((n,), 0.5),
                         payload=torch.zeros(n, 2), displacement=unit * 0.1, displacement_unit=unit,
                         spawn_fraction=torch.full((n,), 0.5))


def test_saturation_reads_delta_z_as_a_sigmoid_only_in_input_face_mode():
    """In ``input_face`` mode Δz is a sigmoid (flows only move forward), so a unit Δz of 0.001
    is pinned at its lower limit; in ``center`` mode it is a tanh at its centre, not pinned.
    Guards against the mode test never matching (every Δz judged as a tanh)."""
    column = 2  # SATURATION_NAMES: retention, spawn, displacement, payload, hidden
    shares = {}
    for mode in ("input_face", "center"):
        c = create_tiny_config(start_mode=mode)
        tracer = StepTracer(c, EnergyLattice(c), batch=1, detailed=True, device=torch.device("cpu"))
        shares[mode] = float(tracer._saturation(carrier_output(0.001))[column])
    # one of three displacement axes pinned (x, y at 0 are centred in both modes)
    assert shares["input_face"] == pytest.approx(1 / 3) and shares["center"] == 0.0


def test_the_tied_readout_applies_its_gain_and_adds_its_bias():
    """The readout is ``gain · W · pooled + bias``: guards against the gain skipped (outputs
    g²·E = 512 times too long: cosine-based tests would not notice) and a subtracted bias."""
    c = create_tiny_config(readout_init="tied", payload_update="gated", flow_xy_start="still",
                           mapper_grid=3, energy_dim=4)
    mapper = build_model(c).output_mapper
    b, p, hw, e = 2, c.num_output_planes, c.lattice_width * c.lattice_height, c.energy_dim
    g = torch.Generator().manual_seed(0)
    payload, energy = torch.rand(b, p, hw, e, generator=g) - 0.5, torch.rand(b, p, hw, generator=g)
    planes = torch.cat([payload, torch.log1p(energy).unsqueeze(-1)], dim=-1)
    planes = planes.permute(0, 1, 3, 2).reshape(b, p * (e + 1), c.lattice_height, c.lattice_width)
    pooled = torch.nn.functional.adaptive_avg_pool2d(planes, c.mapper_grid).flatten(1)
    with torch.no_grad():
        mapper.proj.bias.copy_(torch.linspace(-1, 1, c.teacher_dim))
        expected = pooled @ mapper.proj.weight.T / (c.mapper_grid ** 2 * e) + mapper.proj.bias
        torch.testing.assert_close(mapper(payload, energy), expected)


def test_the_coarse_grid_corners_land_on_the_lattice_corners():
    """The input mapper interpolates with aligned corners: the start plane's corner cells get
    the coarse grid's corner values exactly (guards against ``align_corners=False``, which
    shifts every cell's part by a fraction of a coarse cell)."""
    c = create_tiny_config(lattice_width=7, lattice_height=5, mapper_grid=3, energy_dim=2)
    mapper = build_model(c).input_mapper
    x = unit_rows(2, c.teacher_dim, seed=3)
    with torch.no_grad():
        coarse = mapper.proj(torch.nn.functional.normalize(x, dim=1)).view(2, 1 + c.energy_dim, 3, 3)
        _, parts = mapper(x)
    parts = parts.view(2, 5, 7, c.energy_dim)
    for (row, col), (crow, ccol) in (((0, 0), (0, 0)), ((0, 6), (0, 2)), ((4, 0), (2, 0)), ((4, 6), (2, 2))):
        torch.testing.assert_close(parts[:, row, col], torch.tanh(coarse[:, 1:, crow, ccol]))
    # and between them, linearly in the aligned-corner coordinate: column 1 of 7 sits a third of
    # the way from coarse column 0 to 1
    third = coarse[:, 1:, 0, 0] * 2 / 3 + coarse[:, 1:, 0, 1] / 3
    torch.testing.assert_close(parts[:, 0, 1], torch.tanh(third))


def test_children_start_half_a_step_away_each_in_its_own_direction():
    """The design's spawn rule: child k of a parent starts at displacement_scale / 2 from it, at
    angle π/4 + 2πk/K in the x/y plane (guards against children stacked on their parent or
    thrown a step and a half away)."""
    c = create_tiny_config(max_spawn_per_step=3, displacement_scale=0.2)
    offsets = build_model(c).child_offsets
    angles = torch.pi / 4 + torch.arange(3) * 2 * torch.pi / 3
    expected = torch.stack([angles.cos(), angles.sin(), torch.zeros(3)], dim=1) * 0.1
    torch.testing.assert_close(offsets, expected)


def test_telemetry_keeps_its_documented_dtypes_and_per_plane_columns():
    """Recordings store what the telemetry holds: float32 values, integer counts, and one
    column per output plane even where there is only one (input_face mode). Guards against a
    plane column squeezed to 1-D and float64 arrays doubling a recording's size."""
    c = create_tiny_config(start_mode="input_face")
    tel = build_model(c)(unit_rows(c.batch_size, c.teacher_dim)).telemetry
    agg = tel.aggregates
    steps = agg.active.shape[0]
    for name in ("landed", "coverage", "deposited_energy"):
        assert getattr(agg, name).shape == (steps, 1), name
    for name in ("delta_min", "delta_max", "delta_percentiles", "energy_percentiles", "clamp_fraction"):
        assert getattr(agg, name).dtype == np.float32, name
    assert agg.spawn_denied.dtype == np.int64 and agg.active.dtype == np.int64
