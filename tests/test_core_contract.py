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


def test_placement_fills_the_first_slots_and_leaves_the_rest_free():
    """Free slots carry the documented sentinels (flow id and parent −1, not alive, zero state);
    placed flows sit on their cells at the start plane; ``traced`` marks the first samples."""
    lat = lattice(max_active_flows=100)
    batch, cells, e = 2, 20, 3
    energy = torch.rand(batch, cells)
    payload = torch.rand(batch, cells, e)
    st = lat.place(energy, payload, (2, 7), traced_samples=1)
    n0 = batch * cells
    assert st.capacity == 100 and st.hidden.shape == (100, 2, 7) and st.hidden.abs().max() == 0
    assert st.alive[:n0].all() and not st.alive[n0:].any()
    assert st.flow_id[:n0].tolist() == list(range(n0)) and (st.flow_id[n0:] == -1).all()
    assert (st.parent_id == -1).all()
    assert st.traced[:cells].all() and not st.traced[cells:].any()
    assert st.sample[:n0].tolist() == [0] * cells + [1] * cells
    torch.testing.assert_close(st.pos[:n0, :2], lat.cell_xy().repeat(batch, 1))
    assert (st.pos[:n0, 2] == lat.start_z).all() and st.pos[n0:].abs().max() == 0
    torch.testing.assert_close(st.energy[:n0], energy.reshape(-1))
    torch.testing.assert_close(st.payload[:n0], payload.reshape(n0, e))
    assert st.energy[n0:].abs().max() == 0 and st.payload[n0:].abs().max() == 0
    assert int(st.next_id) == n0


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
