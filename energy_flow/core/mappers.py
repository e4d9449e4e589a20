"""Learned maps between teacher embeddings and the lattice's planes.

Both work through a coarse g × g grid (``config.resolved_mapper_grid``) so their size need not grow
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
        g = config.resolved_mapper_grid
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
        c, g = self.config, self.config.resolved_mapper_grid
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
        g = config.resolved_mapper_grid
        self.channels = config.num_output_planes * (1 + config.energy_dim)
        self.proj = nn.Linear(self.channels * g * g, config.teacher_dim)
        # "tied": the readout's weights are stored at the input mapper's scale (O(1)) and the
        # 1 / (g²·E) that undoes Wᵀ·W ≈ (g²·E)·I is a fixed gain in forward. Stored divided,
        # the weights would be ~0.002 and Adam's steps (≈ lr per parameter, whatever the
        # gradient's size) would wipe the tie out within a hundred batches; measured in
        # docs/BENCHMARKS.md.
        self.gain = 1.0 / (g * g * config.energy_dim) if config.readout_init == "tied" else 1.0
        self.dropout = nn.Dropout(config.readout_dropout)

    @torch.no_grad()
    def tie_to(self, input_mapper: InputMapper) -> None:
        """``readout_init = "tied"``: every plane's payload channel ``e`` at coarse cell ``k``
        reads back through the input mapper's weights for the same channel and cell
        (transposed), the energy channels through zeros. Gaussian N(0, 1) input weights have
        nearly orthogonal columns, so Wᵀ·W ≈ (g²·E)·I and the composite starts close to a
        scaled identity wherever payloads land under their start cell (``gain`` undoes the
        scale). Planes are summed, since each flow lands on one of them."""
        c = self.config
        cells, e = c.resolved_mapper_grid ** 2, c.energy_dim
        w_in = input_mapper.proj.weight.view(1 + e, cells, c.teacher_dim)[1:]   # [E, g², D]
        weight = self.proj.weight.view(c.teacher_dim, c.num_output_planes, 1 + e, cells)
        weight.zero_()
        weight[:, :, :e] = w_in.permute(2, 0, 1).unsqueeze(1)
        self.proj.bias.zero_()

    def features(self, payload: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """What the projection reads: the planes pooled onto the coarse grid, [B, P·(E+1)·g²]."""
        c, g = self.config, self.config.resolved_mapper_grid
        b = energy.shape[0]
        planes = torch.cat([payload, torch.log1p(energy).unsqueeze(-1)], dim=-1)  # [B,P,HW,E+1]
        planes = planes.permute(0, 1, 3, 2).reshape(b, self.channels, c.lattice_height, c.lattice_width)
        return F.adaptive_avg_pool2d(planes, g).flatten(1)

    def forward(self, payload: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """payload [B, P, H·W, E] (energy-weighted mean per cell), energy [B, P, H·W] → [B, D]."""
        pooled = self.dropout(self.features(payload, energy))
        if self.gain == 1.0:
            return self.proj(pooled)
        return F.linear(pooled, self.proj.weight) * self.gain + self.proj.bias
