"""Collection of landed flows onto the output planes.

A landing flow splats its energy bilinearly onto the four cells around its (x, y), so the
deposit — and through it the loss — is differentiable in x and y and the displacement head
learns where to land. Positions are clamped to the lattice, so an out-of-range x/y lands on the
nearest edge cell. Per cell, payloads of several flows are combined by an energy-weighted
average: ``payload = Σ w·e·p / max(Σ w·e, FULL_CELL_ENERGY)``; the cell's energy is ``Σ w·e``.
The floor makes a nearly empty cell's payload fade with its energy instead of jumping to a whole
payload at the first splat: with a vanishing floor (``+ 1e-6``) an empty cell beside a flow had a
gradient of ~10⁶ per unit payload in that flow's x and y, and the first gradients of a training
run were clipped by a factor of 10⁴ (docs/health.md, "Clipping").

The sums are kept as autograd-tracked tensors replaced out of place at each deposit, so every
step's landings stay in the graph until backward.
"""

from __future__ import annotations

import torch

from energy_flow.core.lattice import EnergyLattice


#: Below this energy a cell's payload is the energy-weighted *sum*, not the mean: a tenth of what
#: a placed flow starts with (≈ 0.8), and the default energy_threshold, below which a flow fades.
FULL_CELL_ENERGY = 0.05


class OutputCollector:
    """Accumulates deposits for one batch: [B, P, H·W] energy and energy-weighted payload sums."""

    def __init__(self, lattice: EnergyLattice, batch: int, payload_dim: int,
                 device: torch.device, dtype: torch.dtype):
        self.lattice = lattice
        self.batch = batch
        self.cells = lattice.width * lattice.height
        rows = batch * lattice.num_planes * self.cells
        self.energy = torch.zeros(rows, device=device, dtype=dtype)
        self.weighted_payload = torch.zeros(rows, payload_dim, device=device, dtype=dtype)

    def with_sums(self, energy: torch.Tensor, weighted_payload: torch.Tensor) -> "OutputCollector":
        """A collector for the same batch that continues from the given sums (a recomputed
        propagation segment deposits into its own copy, never into this one)."""
        other = object.__new__(OutputCollector)
        other.lattice, other.batch, other.cells = self.lattice, self.batch, self.cells
        other.energy, other.weighted_payload = energy, weighted_payload
        return other

    def deposit(self, sample: torch.Tensor, plane: torch.Tensor, xy: torch.Tensor,
                energy: torch.Tensor, payload: torch.Tensor, mask: torch.Tensor) -> None:
        """Deposit the flows where ``mask`` is set (others contribute zero weight)."""
        lat = self.lattice
        g = lat.to_grid(xy)
        # A NaN position (from NaN inputs or weights) must not become an index: NaN → long is
        # out of range and raised IndexError. Its cell is taken as 0 while its weights stay NaN,
        # so the NaN still reaches that sample's output and the loss, where it is reported.
        x0 = torch.nan_to_num(g[:, 0].detach(), nan=0.0).floor().clamp(0, lat.width - 2)
        y0 = torch.nan_to_num(g[:, 1].detach(), nan=0.0).floor().clamp(0, lat.height - 2)
        fx = (g[:, 0] - x0).clamp(0.0, 1.0)
        fy = (g[:, 1] - y0).clamp(0.0, 1.0)
        x0 = x0.long()
        y0 = y0.long()
        base = (sample * lat.num_planes + plane.clamp(min=0)) * self.cells
        e = energy * mask.to(energy.dtype)
        corners = (
            (y0 * lat.width + x0, (1 - fx) * (1 - fy)),
            (y0 * lat.width + x0 + 1, fx * (1 - fy)),
            ((y0 + 1) * lat.width + x0, (1 - fx) * fy),
            ((y0 + 1) * lat.width + x0 + 1, fx * fy),
        )
        rows = torch.cat([base + cell for cell, _ in corners])
        weights = torch.cat([w * e for _, w in corners])
        self.energy = self.energy.index_add(0, rows, weights)
        self.weighted_payload = self.weighted_payload.index_add(
            0, rows, weights.unsqueeze(1) * payload.repeat(4, 1))

    # ------------------------------------------------------------------ results
    def surfaces(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(payload [B, P, H·W, E] energy-weighted mean — sum ÷ FULL_CELL_ENERGY in cells holding
        less — and energy [B, P, H·W])."""
        shape = (self.batch, self.lattice.num_planes, self.cells)
        energy = self.energy.view(shape)
        payload = self.weighted_payload.view(*shape, -1) / energy.clamp(min=FULL_CELL_ENERGY).unsqueeze(-1)
        return payload, energy

    def reached(self, eps: float = 1e-6) -> torch.Tensor:
        """[B, P, H·W] bool: cells that received any energy."""
        return (self.energy.detach() > eps).view(self.batch, self.lattice.num_planes, self.cells)
