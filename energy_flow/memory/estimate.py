"""How much memory a config needs, estimated before anything is allocated.

A config can pass every field check and still ask for terabytes (a 10000×10000 lattice, a
1,000,000-wide carrier): it then dies inside the allocator with a traceback, after the data
was loaded. This module estimates the bytes of one training step from the config alone, so
such a config is refused at validation with the estimate and the field to lower, and one that
exceeds this machine's memory is warned about before the first batch. Refusal uses the lower
bound (memory the step needs whatever the flows do), so no config that could run is refused;
the warning names both bounds.

What is counted (float32 everywhere; bf16 autocast on a GPU only lowers the activations):

* parameters, their gradients and AdamW's two moments: 16 bytes per parameter, the parameter
  count computed exactly from the layer shapes (a test compares it with the built model);
* the flow state: one row of position, energy, payload, GRU state and bookkeeping per live
  flow, twice (the step builds the new state next to the old one) — at least the initial
  flows, at most ``max_active_flows`` (the state holds the live flows only);
* activations kept for backward, per flow-step: :func:`saved_bytes_per_flow_step`. At least
  every initial flow takes one step; at worst the whole budget is alive for every step,
  ``max_active_flows × max_steps`` flow-steps per (micro-)batch. Real runs land most flows
  long before ``max_steps``, so the need lies between the two bounds.
* with recomputation (``checkpoint_steps = k ≥ 1``, :func:`recomputed_activation_bytes`) no
  flow-step keeps that much: for k = 1 each keeps its inputs (:func:`kept_bytes_per_flow_step`,
  mostly the GRU state), for k ≥ 2 only the flow state at each segment's start is kept
  (:func:`slot_bytes` per live flow and segment, at most the budget). While backward
  recomputes a segment it holds that segment's k steps of inputs and one carrier chunk's
  activations, per flow of the busiest step: k · kept + saved bytes per flow-step, the chunk
  capped at :data:`RECOMPUTE_CHUNK_ROWS` rows. Measured on the CPU (docs/BENCHMARKS.md, issue 18,
  benchmarks/bench_marginal_memory.py): without this the estimate charged a recomputing config
  the plain path's bytes for every flow-step — up to 674 GiB of activations for the optimized
  preset, which keeps ≈10 GiB of segment states.
* lattice-sized tensors of one batch: the input mapper's field over the start plane and the
  output planes the flows are collected on.

The per-flow-step coefficients were read off the autograd graph with
``torch.autograd.graph.saved_tensors_hooks`` on the tiny preset (tests/test_memory_estimate.py
repeats that measurement and holds the estimate within a factor of 2 of it; it also measures the
recomputation's transient per flow with :mod:`energy_flow.memory.timeline`). Refine them in
:func:`saved_bytes_per_flow_step` and :func:`kept_bytes_per_flow_step` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: Rows per recomputed carrier call (energy_flow.core.processor). Backward recomputes one chunk at
#: a time, so its transient (≈100 KB per row at a 3×1024 GRU in float32) is bounded by the chunk,
#: not by the flow capacity; on a GPU 32k rows still fill the matrix units. Rows are independent,
#: so chunking changes values only by the rounding of differently blocked matrix products (last
#: bit). Defined here, where the estimate reads it without importing the model.
RECOMPUTE_CHUNK_ROWS = 32_768


class SizedConfig(Protocol):
    """The fields of :class:`~energy_flow.config.EnergyConfig` an estimate reads.

    A Protocol rather than EnergyConfig itself because the config calls this module while it
    validates itself: the dependency runs one way, config → memory_estimate.
    """

    energy_dim: int
    teacher_dim: int
    carrier_hidden_size: int
    carrier_num_layers: int
    neuron_hidden_dim: int
    neuron_output_dim: int
    batch_size: int
    grad_accumulation_steps: int
    max_steps: int
    checkpoint_steps: int

    @property
    def num_output_planes(self) -> int: ...

    @property
    def resolved_mapper_grid(self) -> int: ...

    @property
    def resolved_max_active_flows(self) -> int: ...

    @property
    def cells_per_plane(self) -> int: ...

#: A config estimated above this is refused: no single machine holds it.
REFUSE_BYTES = 1 << 40
FLOAT = 4
LONG = 8


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int          # number of trainable parameters
    model_bytes: int         # parameters + gradients + AdamW moments
    flow_state_min_bytes: int  # the initial flows
    flow_state_max_bytes: int  # the whole flow budget alive
    activation_min_bytes: int  # every initial flow takes one step
    activation_max_bytes: int  # the whole budget alive for every step
    lattice_bytes: int

    @property
    def minimum_bytes(self) -> int:
        return self.model_bytes + self.flow_state_min_bytes + self.activation_min_bytes + self.lattice_bytes

    @property
    def worst_case_bytes(self) -> int:
        return self.model_bytes + self.flow_state_max_bytes + self.activation_max_bytes + self.lattice_bytes

    def largest(self) -> tuple[str, str]:
        """(part, the config field that lowers it most directly) of the largest part."""
        parts = {
            "model parameters and optimiser state": (self.model_bytes, "carrier_hidden_size"),
            "flow state": (self.flow_state_min_bytes, "batch_size or the lattice size"),
            "activations kept for backward": (self.activation_min_bytes, "batch_size or the lattice size"),
            "lattice-sized tensors": (self.lattice_bytes, "lattice_width/lattice_height or batch_size"),
        }
        name = max(parts, key=lambda k: parts[k][0])
        return name, parts[name][1]

    def describe(self) -> str:
        part, field = self.largest()
        return (f"a training step needs at least {format_bytes(self.minimum_bytes)} and up to "
                f"{format_bytes(self.worst_case_bytes)} ({format_bytes(self.model_bytes)} model and optimiser, "
                f"{format_bytes(self.flow_state_min_bytes)}–{format_bytes(self.flow_state_max_bytes)} flow state, "
                f"{format_bytes(self.activation_min_bytes)}–"
                f"{format_bytes(self.activation_max_bytes)} activations, {format_bytes(self.lattice_bytes)} "
                f"lattice tensors); the largest part is the {part}: lower {field}")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def parameter_count(c: SizedConfig) -> int:
    """Exact number of parameters of FlowProcessor for ``c`` (without building it)."""
    e, g, d, h, layers = c.energy_dim, c.resolved_mapper_grid, c.teacher_dim, c.carrier_hidden_size, c.carrier_num_layers
    nh, no = c.neuron_hidden_dim, c.neuron_output_dim
    input_mapper = d * g * g * (1 + e) + g * g * (1 + e) + 1
    neuron = (3 + e) * nh + nh + nh * no + no
    gru_in = no + e + 1
    gru = 3 * h * (gru_in + h) + 6 * h + (layers - 1) * (3 * h * 2 * h + 6 * h)
    heads = h * (1 + e) + (1 + e) + (h + e) * 3 + 3 + h + 1
    output_mapper = c.num_output_planes * (1 + e) * g * g * d + d
    return input_mapper + neuron + gru + heads + output_mapper


def saved_bytes_per_flow_step(c: SizedConfig) -> int:
    """Bytes autograd keeps per (flow, propagation step): GRU gates and states (~12 floats per
    hidden unit and layer), the neuron's two layers, the deposit's four bilinear corners of the
    payload, indices and heads."""
    floats = (12 * c.carrier_num_layers * c.carrier_hidden_size
              + 4 * (c.neuron_hidden_dim + c.neuron_output_dim) + 18 * c.energy_dim + 24)
    return FLOAT * floats


def kept_bytes_per_flow_step(c: SizedConfig) -> int:
    """Bytes a flow-step keeps for backward when its carrier is recomputed: the GRU state it
    started from (the recomputation's input), the deposit's corners and the step's scalars
    (measured 13,263 B at a 3×1024 GRU with energy 16 in float32; this gives 13,184)."""
    return FLOAT * (c.carrier_num_layers * c.carrier_hidden_size + 10 * c.energy_dim + 64)


def slot_bytes(c: SizedConfig) -> int:
    """One flow's row of the state: position, energy, payload, GRU state, six integers (sample,
    id, parent, age, birth step, lineage key) and a flag (traced)."""
    return FLOAT * (4 + c.energy_dim + c.carrier_num_layers * c.carrier_hidden_size) + LONG * 6 + 1


def recomputed_activation_bytes(c: SizedConfig, busiest: int, flow_steps: int, steps: int) -> int:
    """Activations a recomputing step (``checkpoint_steps ≥ 1``) holds at its peak, for ``busiest``
    flows in its busiest step (and at each segment's start), ``flow_steps`` in all and ``steps``
    propagation steps."""
    k = c.checkpoint_steps
    chunk = min(busiest, RECOMPUTE_CHUNK_ROWS) * saved_bytes_per_flow_step(c)
    if k == 1:
        return flow_steps * kept_bytes_per_flow_step(c) + chunk
    segment_states = math.ceil(steps / k) * busiest * slot_bytes(c)
    return segment_states + k * busiest * kept_bytes_per_flow_step(c) + chunk


def lattice_bytes(c: SizedConfig, batch: int) -> int:
    """Start-plane field of the input mapper and the collected output planes of one batch."""
    cells = batch * c.cells_per_plane
    return FLOAT * cells * (1 + c.energy_dim) * (4 + 4 * c.num_output_planes)


def estimate_memory(c: SizedConfig) -> MemoryEstimate:
    params = parameter_count(c)
    micro_batch = c.batch_size // c.grad_accumulation_steps
    initial, capacity, steps = micro_batch * c.cells_per_plane, c.resolved_max_active_flows, c.max_steps
    if c.checkpoint_steps >= 1:
        least = recomputed_activation_bytes(c, busiest=initial, flow_steps=initial, steps=1)
        most = recomputed_activation_bytes(c, busiest=capacity, flow_steps=capacity * steps, steps=steps)
    else:
        least = initial * saved_bytes_per_flow_step(c)
        most = capacity * steps * saved_bytes_per_flow_step(c)
    return MemoryEstimate(
        parameters=params,
        model_bytes=16 * params,
        flow_state_min_bytes=2 * initial * slot_bytes(c),
        flow_state_max_bytes=2 * capacity * slot_bytes(c),
        activation_min_bytes=least,
        activation_max_bytes=most,
        lattice_bytes=lattice_bytes(c, micro_batch),
    )


def machine_memory_bytes(device: str) -> tuple[int, str] | None:
    """(bytes, what) of the memory a run on ``device`` ("cpu", "cuda", "cuda:N") can use."""
    import os

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"GPU memory of {device}"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"
    except (ValueError, OSError):
        return None
