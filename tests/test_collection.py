"""OutputCollector's bilinear deposit against weights worked out by hand.

The batched step and the per-flow reference share the collector, so the reference test cannot
see a wrong cell or weight there; these tests place single flows at chosen points of a 6×6
plane and compare every cell with the hand-computed splat.
"""

from __future__ import annotations

import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core import EnergyLattice, OutputCollector
from energy_flow.core.collection import FULL_CELL_ENERGY

W = H = 6  # the tiny preset's plane; grid coordinate g ↔ normalised −1 + 2g/5


def _norm(gx: float, gy: float) -> list[float]:
    return [-1 + 2 * gx / (W - 1), -1 + 2 * gy / (H - 1)]


def _collector(batch: int = 1) -> OutputCollector:
    lattice = EnergyLattice(create_tiny_config())  # center mode: two output planes
    return OutputCollector(lattice, batch, payload_dim=2, device=torch.device("cpu"), dtype=torch.float32)


def _deposit(col: OutputCollector, xy, energy, payload, plane=None, sample=None, mask=None) -> None:
    n = len(xy)
    col.deposit(torch.tensor(sample or [0] * n), torch.tensor(plane or [0] * n), torch.tensor(xy),
                torch.tensor(energy), torch.tensor(payload), torch.tensor(mask or [True] * n))


def _grid(col: OutputCollector, sample: int = 0, plane: int = 0) -> torch.Tensor:
    """[H, W] energy of one output plane (row-major: y major, x minor)."""
    return col.surfaces()[1][sample, plane].view(H, W)


def test_a_flow_splats_its_energy_bilinearly_on_the_four_cells_around_it():
    """Guards against a wrong corner or weight (mutation testing: x0 taken from the y
    coordinate, or clamped to the wrong range, survived every other test)."""
    col = _collector()
    _deposit(col, [_norm(1.25, 3.5)], [0.8], [[0.5, -0.5]])
    expected = torch.zeros(H, W)
    expected[3, 1] = 0.8 * 0.75 * 0.5
    expected[3, 2] = 0.8 * 0.25 * 0.5
    expected[4, 1] = 0.8 * 0.75 * 0.5
    expected[4, 2] = 0.8 * 0.25 * 0.5
    torch.testing.assert_close(_grid(col), expected)
    assert _grid(col, plane=1).abs().sum() == 0  # the other plane got nothing
    payload = col.surfaces()[0][0, 0].view(H, W, 2)
    torch.testing.assert_close(payload[3, 1], torch.tensor([0.5, -0.5]), rtol=1e-5, atol=1e-5)


def test_flows_on_and_beyond_the_edges_land_on_the_edge_cells():
    """Out-of-range x/y go to the nearest edge cell, and a flow exactly on the last row or
    column puts all its energy there (the bilinear cell is clamped to W−2 / H−2, fraction 1)."""
    col = _collector()
    _deposit(col, [[1.0, 1.0], [-1.0, -1.0], [3.0, -7.0], [_norm(5.0, 2.0)[0], _norm(5.0, 2.0)[1]]],
             [0.2, 0.3, 0.4, 0.5], [[0.0, 0.0]] * 4)
    expected = torch.zeros(H, W)
    expected[5, 5] = 0.2
    expected[0, 0] = 0.3
    expected[0, 5] = 0.4
    expected[2, 5] = 0.5
    torch.testing.assert_close(_grid(col), expected)


def test_payloads_in_a_cell_combine_as_an_energy_weighted_mean_per_sample_and_plane():
    col = _collector(batch=2)
    cell = _norm(2.0, 3.0)
    _deposit(col, [cell, cell, cell, cell], [0.6, 0.2, 0.9, 0.7],
             [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [-1.0, -1.0]],
             plane=[1, 1, 1, 0], sample=[1, 1, 0, 1], mask=[True, True, False, True])
    payload, energy = col.surfaces()
    idx = 3 * W + 2
    torch.testing.assert_close(energy[1, 1, idx], torch.tensor(0.8))
    torch.testing.assert_close(payload[1, 1, idx], torch.tensor([0.75, 0.25]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(energy[1, 0, idx], torch.tensor(0.7))
    assert energy[0].abs().sum() == 0  # the masked flow of sample 0 deposited nothing
    assert col.reached()[1, 1, idx] and not col.reached()[0, 1, idx]
    assert int(col.reached().sum()) == 2


def test_the_deposit_is_differentiable_in_x_and_y():
    """The gradient of a cell's energy in x and y is that of its bilinear weight: moving right
    shifts energy into the right-hand cell, moving up shifts it to the next row."""
    col = _collector()
    xy = torch.tensor([_norm(1.25, 3.0)], requires_grad=True)
    col.deposit(torch.tensor([0]), torch.tensor([0]), xy, torch.tensor([1.0]), torch.zeros(1, 2),
                torch.tensor([True]))
    right = _grid(col)[3, 2]
    (grad,) = torch.autograd.grad(right, xy)
    # the cell's weight is fx·(1 − fy) with fx = 0.25, fy = 0; one normalised unit is 2.5 cells
    torch.testing.assert_close(grad, torch.tensor([[2.5 * (1 - 0.0), -0.25 * 2.5]]))


def test_a_cell_holding_little_energy_has_a_payload_that_fades_with_it():
    """A cell's payload is the energy-weighted mean only where the cell holds at least
    ``FULL_CELL_ENERGY``; below, it is the weighted sum, which goes to zero with the energy.
    Guards against the mean's singularity at empty cells (issue 19): divided by energy + 1e-6,
    the payload of an empty cell next to a flow jumped from 0 to the whole payload for any
    splat, so its gradient in x was ~10⁶ per unit payload, and the debug preset's first
    gradient was 3.7·10⁴ × grad_clip (the Clipping check failed at batch 1)."""
    col = _collector()
    xy = torch.tensor([_norm(2.0, 2.0)], requires_grad=True)   # exactly on a cell centre
    col.deposit(torch.tensor([0]), torch.tensor([0]), xy, torch.tensor([0.8]),
                torch.tensor([[0.5, -0.5]]), torch.tensor([True]))
    payload, energy = col.surfaces()
    cells = payload[0, 0].view(H, W, 2)
    torch.testing.assert_close(cells[2, 2], torch.tensor([0.5, -0.5]))  # a full cell: the mean
    (grad,) = torch.autograd.grad(cells[2, 3, 0], xy)   # the empty neighbour in +x
    pitch = 2 / (W - 1)
    # d(payload)/dx = e·p / FULL_CELL_ENERGY · (1 / pitch) = 0.8·0.5 / 0.05 / 0.4 = 20
    assert grad[0, 0] == pytest.approx(0.8 * 0.5 / FULL_CELL_ENERGY / pitch, rel=1e-5)
    assert grad.abs().max() < 100

    faint = _collector()
    _deposit(faint, [_norm(1.0, 1.0)], [0.01], [[0.5, -0.5]])   # one faint flow
    torch.testing.assert_close(faint.surfaces()[0][0, 0].view(H, W, 2)[1, 1],
                               torch.tensor([0.5, -0.5]) * 0.01 / FULL_CELL_ENERGY)
