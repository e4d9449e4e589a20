"""EnergyCarrier: the GRU shared by all flows, and its three heads.

Every active flow is one row of a batched GRU step. The heads read the top layer's output:

- energy head → how much energy the flow keeps (a retention factor in (0, 1), so energy only
  fades) and the payload it now carries (what it will deposit on an output plane). With
  ``payload_update="gated"`` a gate head mixes that candidate into the payload the flow already
  carries (at placement: its cell's part of the input embedding), starting out mostly keeping
  it: an untrained random carrier that overwrites the payload every step hands the output
  planes almost nothing a readout can decode about the input (see docs/BENCHMARKS.md);
- displacement head → Δx, Δy, Δz, bounded by ``displacement_scale`` (in ``input_face`` mode
  Δz ≥ 0: flows may only move towards the output plane). It also reads the current cell's part
  of the input embedding, so the input itself steers each flow; in ``center`` mode Δz starts out
  driven by that part's first channel, which sends about half the cells towards each output
  plane before anything is learned (a GRU-only head sends nearly all flows one way);
- spawn head → the share of energy the flow hands to children, which also sets how many it asks
  for on average (``floor(share·k + u)`` with a per-flow, per-step dither ``u``:
  energy_flow/core/spawning.py). Because the split moves energy, the spawn head gets a gradient
  through the deposit of every flow that split. A child starts like a placed flow: carrying the
  part of the input embedding of the cell it is born in, and its parent's GRU state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from energy_flow.config import EnergyConfig


@dataclass
class CarrierOutput:
    hidden: torch.Tensor          # [n, L, H] new GRU state
    retention: torch.Tensor       # [n] in (0, 1): energy kept this step
    payload: torch.Tensor         # [n, E] in (−1, 1)
    displacement: torch.Tensor    # [n, 3], |Δ| ≤ displacement_scale per axis
    displacement_unit: torch.Tensor  # [n, 3] the bounded activation before displacement_scale
    spawn_fraction: torch.Tensor  # [n] in (0, 1): energy share offered to children


class EnergyCarrier(nn.Module):
    def __init__(self, config: EnergyConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.gru = nn.GRU(input_dim, config.carrier_hidden_size, num_layers=config.carrier_num_layers)
        h = config.carrier_hidden_size
        self.energy_head = nn.Linear(h, 1 + config.energy_dim)
        self.displacement_head = nn.Linear(h + config.energy_dim, 3)
        self.spawn_head = nn.Linear(h, 1)
        self.gated = config.payload_update == "gated"
        self.payload_gate = nn.Linear(h, config.energy_dim) if self.gated else None
        with torch.no_grad():
            # Start by keeping most energy (sigmoid(2.5) ≈ 0.92 per step), so flows live long
            # enough to reach an output plane before the model has learned anything.
            self.energy_head.bias[0].fill_(2.5)
            # Start at an even split share: at each step about half the eligible flows ask for a child.
            self.spawn_head.bias.zero_()
            # Δz follows the cell's part at first (see module docstring), and strongly enough
            # that flows commit to a direction instead of dithering around the start plane.
            self.displacement_head.weight[2, h:].zero_()
            self.displacement_head.weight[2, h].fill_(3.0)
            self.displacement_head.bias[2].zero_()
            if config.flow_xy_start == "still":
                self.displacement_head.weight[:2].zero_()
                self.displacement_head.bias[:2].zero_()
            if self.payload_gate is not None:
                # sigmoid(−3) ≈ 0.05: a flow keeps ~95 % of its payload per step at first.
                self.payload_gate.bias.fill_(-3.0)
        self.input_face = config.start_mode == "input_face"

    def compute_dtype(self) -> torch.dtype:
        """The dtype the GRU computes its state in under the current autocast settings.

        Under CUDA autocast cuDNN's RNN wrapper picks a 16-bit type itself (float16 in torch's
        AutocastRNN, whatever the autocast dtype), elsewhere it is the weights' dtype. Probed
        with one zero row rather than assumed, so a torch that changes the rule is followed.
        The flow state's hidden values are outputs of this dtype, so a copy in it is exact:
        that is what lets recomputation keep only a 16-bit copy for backward.
        """
        w = self.gru.weight_ih_l0
        with torch.no_grad():
            _, h = self.gru(w.new_zeros(1, 1, self.gru.input_size),
                            w.new_zeros(self.gru.num_layers, 1, self.gru.hidden_size))
        return h.dtype

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, cell_part: torch.Tensor,
                payload: torch.Tensor) -> CarrierOutput:
        """x [n, input_dim], hidden [n, L, H], cell_part and the carried payload [n, E] →
        CarrierOutput for those n flows."""
        out, h_n = self.gru(x.unsqueeze(0), hidden.transpose(0, 1).contiguous())
        top = out.squeeze(0)
        e = self.energy_head(top).float()  # heads may run in bf16 under autocast; state stays float32
        raw = self.displacement_head(torch.cat([top, cell_part.to(top.dtype)], dim=1)).float()
        scale = self.config.displacement_scale
        if self.input_face:
            unit = torch.cat([torch.tanh(raw[:, :2]), torch.sigmoid(raw[:, 2:])], dim=1)
        else:
            unit = torch.tanh(raw)
        return CarrierOutput(
            hidden=h_n.transpose(0, 1).float(),
            retention=torch.sigmoid(e[:, 0]),
            payload=self._payload(top, torch.tanh(e[:, 1:]), payload),
            displacement=unit * scale,
            displacement_unit=unit,  # kept for the saturation telemetry (tracing.py)
            spawn_fraction=torch.sigmoid(self.spawn_head(top).float().squeeze(1)),
        )

    def _payload(self, top: torch.Tensor, candidate: torch.Tensor, carried: torch.Tensor) -> torch.Tensor:
        if self.payload_gate is None:
            return candidate
        gate = torch.sigmoid(self.payload_gate(top).float())
        return carried.to(candidate.dtype) + gate * (candidate - carried.to(candidate.dtype))
