"""SimpleNeuron: the tiny network shared by every cell of the lattice.

It turns where a flow is (its normalised coordinates) and what the input embedding says at
that cell (the cell's part of the embedding, from the input mapper) into the carrier GRU's
input. One set of weights serves all cells, so it stays small (a few thousand parameters)
whatever the lattice size.
"""

from __future__ import annotations

import torch
from torch import nn

from energy_flow.config import EnergyConfig


class SimpleNeuron(nn.Module):
    def __init__(self, config: EnergyConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(3 + config.energy_dim, config.neuron_hidden_dim),
            nn.GELU(),
            nn.Linear(config.neuron_hidden_dim, config.neuron_output_dim),
            nn.GELU(),
        )

    @property
    def output_dim(self) -> int:
        return self.config.neuron_output_dim

    def forward(self, coords: torch.Tensor, cell_part: torch.Tensor) -> torch.Tensor:
        """coords [n, 3] in [-1, 1], cell_part [n, E] → carrier input [n, neuron_output_dim]."""
        return self.net(torch.cat([coords, cell_part], dim=1))
