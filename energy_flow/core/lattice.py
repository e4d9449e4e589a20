"""EnergyLattice: the lattice's geometry and the flow state (struct of arrays).

Coordinates are normalised to [-1, 1] here and nowhere else: cell (i, j) of a plane sits at
``x = -1 + 2 i / (W - 1)``, ``y = -1 + 2 j / (H - 1)``; the depth axis is continuous in
[-1, 1] with the start plane and output planes given by the config.

The flow state is a fixed-capacity struct of arrays (``max_active_flows`` slots). A slot is
either alive or free; spawning fills free slots. Floating-point fields take part in autograd
and are replaced out of place every step (so the graph of every step survives until the
backward pass); integer bookkeeping needs no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.spawning import placed_keys


@dataclass
class FlowState:
    """All flows of one batch, ``capacity`` slots each. Free slots have ``alive == False``."""

    pos: torch.Tensor         # [N, 3] float, in [-1, 1]
    energy: torch.Tensor      # [N] float, in (0, 1]
    payload: torch.Tensor     # [N, E] float: what the flow carries to the output plane
    hidden: torch.Tensor      # [N, L, H] float: the carrier GRU's state per flow
    sample: torch.Tensor      # [N] int64: sample of the batch the flow belongs to
    flow_id: torch.Tensor     # [N] int64: unique per batch (placed flows 0..B·W·H−1)
    parent_id: torch.Tensor   # [N] int64: −1 for placed flows
    age: torch.Tensor         # [N] int64: propagation steps this flow has taken
    birth_step: torch.Tensor  # [N] int64
    alive: torch.Tensor       # [N] bool
    traced: torch.Tensor      # [N] bool: part of the telemetry's trajectory sample
    lineage: torch.Tensor     # [N] int64: batch-independent key of the flow (core/spawning.py)
    next_id: torch.Tensor     # [] int64 on the device: the id the next child gets

    @property
    def capacity(self) -> int:
        return self.alive.shape[0]


class EnergyLattice:
    """Geometry of the W×H×D lattice and placement of flows on the start plane."""

    def __init__(self, config: EnergyConfig):
        self.config = config
        self.width = config.lattice_width
        self.height = config.lattice_height
        self.depth = config.lattice_depth
        self.plane_z = config.output_plane_z
        self.start_z = config.start_plane_z

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.width, self.height, self.depth)

    @property
    def num_planes(self) -> int:
        return len(self.plane_z)

    def cell_xy(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[H·W, 2] normalised (x, y) of every start-plane cell, row-major (y major, x minor)."""
        xs = torch.linspace(-1.0, 1.0, self.width, device=device)
        ys = torch.linspace(-1.0, 1.0, self.height, device=device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)

    def to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Normalised (x, y) → continuous cell coordinates in [0, W−1] × [0, H−1]."""
        scale = torch.tensor([self.width - 1, self.height - 1], dtype=xy.dtype, device=xy.device)
        return (xy.clamp(-1.0, 1.0) + 1.0) * 0.5 * scale

    def nearest_cell(self, xy: torch.Tensor) -> torch.Tensor:
        """Row-major index (y·W + x) of the cell nearest to each (x, y); out-of-range clamps."""
        g = self.to_grid(xy.detach()).round().long()
        gx = g[:, 0].clamp(0, self.width - 1)
        gy = g[:, 1].clamp(0, self.height - 1)
        return gy * self.width + gx

    def landing_plane(self, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Index of the output plane a flow at depth ``z`` sits on, or −1 for none."""
        none = torch.full_like(z, -1, dtype=torch.long)
        if self.num_planes == 2:
            plane = torch.where(z <= -1.0 + eps, 0, none)
            return torch.where(z >= 1.0 - eps, 1, plane)
        return torch.where(z >= 1.0 - eps, 0, none)

    def nearest_plane(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the output plane nearest to depth ``z`` (used to project timed-out flows)."""
        if self.num_planes == 2:
            return (z >= 0).long()
        return torch.zeros_like(z, dtype=torch.long)

    # ------------------------------------------------------------------ placement
    def place(self, energy: torch.Tensor, payload: torch.Tensor, hidden_shape: tuple[int, int],
              traced_samples: int, sample_keys: torch.Tensor) -> FlowState:
        """One flow per (sample, start-plane cell), in slots ``0 … B·H·W − 1``.

        ``energy`` is [B, H·W], ``payload`` [B, H·W, E] (the input mapper's output);
        ``hidden_shape`` is the carrier's (layers, hidden size). Flows of the first
        ``traced_samples`` samples are marked for the trajectory sample. ``sample_keys`` [B]
        (``spawning.sample_keys`` of the inputs) seed the flows' lineage keys.
        """
        batch, cells = energy.shape
        n0 = batch * cells
        capacity = self.config.resolved_max_active_flows
        if n0 > capacity:
            raise ValueError(f"batch of {batch} needs {n0} initial flows but max_active_flows = {capacity}")
        device, dtype = energy.device, energy.dtype
        layers, hidden = hidden_shape

        xy = self.cell_xy(device).to(dtype).repeat(batch, 1)
        z = torch.full((n0, 1), self.start_z, device=device, dtype=dtype)
        pad = capacity - n0
        pos = torch.cat([torch.cat([xy, z], dim=1), torch.zeros(pad, 3, device=device, dtype=dtype)])
        flat_energy = torch.cat([energy.reshape(-1), torch.zeros(pad, device=device, dtype=dtype)])
        flat_payload = torch.cat([payload.reshape(n0, -1),
                                  torch.zeros(pad, payload.shape[-1], device=device, dtype=dtype)])
        slots = torch.arange(capacity, device=device)
        placed = slots < n0
        sample = torch.where(placed, slots // cells, torch.zeros_like(slots))
        return FlowState(
            pos=pos,
            energy=flat_energy,
            payload=flat_payload,
            hidden=torch.zeros(capacity, layers, hidden, device=device, dtype=dtype),
            sample=sample,
            flow_id=torch.where(placed, slots, torch.full_like(slots, -1)),
            parent_id=torch.full_like(slots, -1),
            age=torch.zeros_like(slots),
            birth_step=torch.zeros_like(slots),
            alive=placed,
            traced=placed & (sample < traced_samples),
            lineage=torch.cat([placed_keys(sample_keys.to(device), cells),
                               torch.zeros(pad, device=device, dtype=torch.long)]),
            next_id=torch.tensor(n0, device=device, dtype=torch.long),
        )
