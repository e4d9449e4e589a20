"""Learned maps between teacher embeddings and the lattice's planes.

Both work through a coarse ``mapper_grid`` × ``mapper_grid`` grid so their size does not grow
with the lattice: the input mapper projects an embedding onto the coarse grid and interpolates
it bilinearly onto the start plane (each cell gets its own part of the embedding and an initial
energy); the output mapper pools each output plane's collected surface onto the coarse grid and
projects it back to an embedding. Output planes stay separate channels up to that projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from energy_flow.config import EnergyConfig


class InputMapper(nn.Module):
    def __init__(self, config: EnergyConfig):
        super().__init__()
        self.config = config
        g = config.mapper_grid
        self.channels = 1 + config.energy_dim
        self.proj = nn.Linear(config.teacher_dim, g * g * self.channels)
        # Inputs are normalised to unit length (sentence embeddings carry meaning in their
        # direction); weights ~ N(0, 1) then give each cell's part an O(1) spread at the start,
        # which is what lets the parts steer flows before anything is learned.
        nn.init.normal_(self.proj.weight, std=1.0)
        nn.init.zeros_(self.proj.bias)
        self.energy_bias = nn.Parameter(torch.tensor(1.5))  # initial energies ≈ sigmoid(1.5) ≈ 0.8

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, D] → (energy [B, H·W] in (0, 1), cell parts [B, H·W, E] in (−1, 1))."""
        c, g = self.config, self.config.mapper_grid
        coarse = self.proj(F.normalize(embeddings, dim=1)).view(-1, self.channels, g, g)
        field = F.interpolate(coarse, size=(c.lattice_height, c.lattice_width), mode="bilinear",
                              align_corners=True)
        field = field.flatten(2).transpose(1, 2)  # [B, H·W, C]
        energy = torch.sigmoid(field[..., 0] + self.energy_bias)
        return energy, torch.tanh(field[..., 1:])


class OutputMapper(nn.Module):
    def __init__(self, config: EnergyConfig):
        super().__init__()
        self.config = config
        g = config.mapper_grid
        self.channels = config.num_output_planes * (1 + config.energy_dim)
        self.proj = nn.Linear(self.channels * g * g, config.teacher_dim)

    @torch.no_grad()
    def tie_to(self, input_mapper: InputMapper) -> None:
        """``readout_init = "tied"``: every plane's payload channel ``e`` at coarse cell ``k``
        reads back through the input mapper's weights for the same channel and cell
        (transposed), the energy channels through zeros. Gaussian N(0, 1) input weights have
        nearly orthogonal columns, so Wᵀ·W ≈ (g²·E)·I and the composite starts close to a
        scaled identity wherever payloads land under their start cell; ``1 / (g²·E)`` undoes
        that scale. Planes are summed, since each flow lands on one of them."""
        c, g = self.config, self.config.mapper_grid
        cells, e = g * g, c.energy_dim
        w_in = input_mapper.proj.weight.view(1 + e, cells, c.teacher_dim)[1:]   # [E, g², D]
        readout = w_in.permute(2, 0, 1) / (cells * e)                           # [D, E, g²]
        weight = self.proj.weight.view(c.teacher_dim, c.num_output_planes, 1 + e, cells)
        weight.zero_()
        weight[:, :, :e] = readout.unsqueeze(1)
        self.proj.bias.zero_()

    def forward(self, payload: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """payload [B, P, H·W, E] (energy-weighted mean per cell), energy [B, P, H·W] → [B, D]."""
        c, g = self.config, self.config.mapper_grid
        b, p = energy.shape[:2]
        planes = torch.cat([payload, torch.log1p(energy).unsqueeze(-1)], dim=-1)  # [B,P,HW,E+1]
        planes = planes.permute(0, 1, 3, 2).reshape(b, self.channels, c.lattice_height, c.lattice_width)
        pooled = F.adaptive_avg_pool2d(planes, g)
        return self.proj(pooled.flatten(1))
