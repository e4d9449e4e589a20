"""EnergyLattice: the lattice's geometry and the flow state (struct of arrays).

Coordinates are normalised to [-1, 1] here and nowhere else: cell (i, j) of a plane sits at
``x = -1 + 2 i / (W - 1)``, ``y = -1 + 2 j / (H - 1)``; the depth axis is continuous in
[-1, 1] with the start plane and output planes given by the config.

The flow state is a struct of arrays holding the live flows only, one row each, in the order of
their ids: each step keeps the rows of the flows that go on and appends the children after them
(core/step_phases.py), so the state is as large as the flows alive, never the whole budget
(``max_active_flows``), which only caps how many children a step may add. Floating-point fields
take part in autograd and are replaced out of place every step (so the graph of every step
survives until the backward pass); integer bookkeeping needs no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energy_flow.config import EnergyConfig
from energy_flow.core.spawning import placed_keys


@dataclass
class FlowState:
    """The live flows of one batch, one row each (``N`` rows), in ascending ``flow_id``."""

    pos: torch.Tensor         # [N, 3] float, in [-1, 1]
    energy: torch.Tensor      # [N] float, in (0, 1]
    payload: torch.Tensor     # [N, E] float: what the flow carries to the output plane
    hidden: torch.Tensor      # [N, L, H] float: the carrier GRU's state per flow
    sample: torch.Tensor      # [N] int64: sample of the batch the flow belongs to
    flow_id: torch.Tensor     # [N] int64: unique per batch (placed flows 0..B·W·H−1)
    parent_id: torch.Tensor   # [N] int64: −1 for placed flows
    age: torch.Tensor         # [N] int64: propagation steps this flow has taken
    birth_step: torch.Tensor  # [N] int64
    traced: torch.Tensor      # [N] bool: part of the telemetry's trajectory sample
    lineage: torch.Tensor     # [N] int64: batch-independent key of the flow (core/spawning.py)
    next_id: torch.Tensor     # [] int64 on the device: the id the next child gets

    @property
    def count(self) -> int:
        """How many flows are alive: the rows (a shape, so reading it never waits for a device)."""
        return self.pos.shape[0]


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
        """One flow per (sample, start-plane cell), sample-major: flow ``i`` is row ``i``.

        ``energy`` is [B, H·W], ``payload`` [B, H·W, E] (the input mapper's output);
        ``hidden_shape`` is the carrier's (layers, hidden size). Flows of the first
        ``traced_samples`` samples are marked for the trajectory sample. ``sample_keys`` [B]
        (``spawning.sample_keys`` of the inputs) seed the flows' lineage keys.
        """
        batch, cells = energy.shape
        n0 = batch * cells
        budget = self.config.resolved_max_active_flows
        if n0 > budget:
            raise ValueError(f"batch of {batch} needs {n0} initial flows but max_active_flows = {budget}")
        device, dtype = energy.device, energy.dtype
        layers, hidden = hidden_shape

        xy = self.cell_xy(device).to(dtype).repeat(batch, 1)
        z = torch.full((n0, 1), self.start_z, device=device, dtype=dtype)
        ids = torch.arange(n0, device=device)
        sample = ids // cells
        return FlowState(
            pos=torch.cat([xy, z], dim=1),
            energy=energy.reshape(-1),
            payload=payload.reshape(n0, -1),
            hidden=torch.zeros(n0, layers, hidden, device=device, dtype=dtype),
            sample=sample,
            flow_id=ids,
            parent_id=torch.full_like(ids, -1),
            age=torch.zeros_like(ids),
            birth_step=torch.zeros_like(ids),
            traced=sample < traced_samples,
            lineage=placed_keys(sample_keys.to(device), cells),
            next_id=torch.tensor(n0, device=device, dtype=torch.long),
        )
