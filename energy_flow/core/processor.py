"""FlowProcessor: the whole model, and one batched propagation step for all active flows.

A forward pass over a batch of input embeddings:

1. the input mapper spreads each embedding over the start plane (energy + the cell's part);
2. the lattice places one flow per (sample, cell);
3. each propagation step moves *all* active flows in one batched call (no per-flow Python,
   no ``.item()``): SimpleNeuron → carrier GRU → heads, then the phases of
   core/step_phases.py — move and clamp → terminate (landed / faded / timed out) → deposit
   landings → spawn within the flow budget (core/spawning.py) → rewrite the state — and the
   step's outcome goes to the telemetry;
4. the output mapper turns the collected output planes into an output embedding.

The flow state holds the live flows only (core/lattice.py), so a step works on every row and the
loop ends when none is left. The only host synchronisation per step is one ``nonzero`` over the
flows that go on and the children granted (core/step_phases.py): it sizes the next state.

Memory (``config.checkpoint_steps``, measured in docs/BENCHMARKS.md): autograd would keep every
step's carrier activations (≈100 KB per flow-step at a 3×1024 GRU in float32) until backward.
With ``checkpoint_steps ≥ 1`` the carrier part of each step (neuron → GRU → heads, a pure tensor
function) is recomputed in backward, so a step keeps only its inputs — the hidden state in the
GRU's own compute dtype (exact: it is what the GRU produced) and a few scalars per flow. With
``checkpoint_steps = k ≥ 2`` whole segments of k steps are recomputed as well, so between
forward and backward only the flow state at each segment's start is kept. Recomputation repeats
the same arithmetic, so losses, gradients and telemetry are the same as without it; a
recomputed segment deposits into its own collector copy and records no telemetry.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.profiler import record_function
from torch.utils.checkpoint import checkpoint

from energy_flow.config import EnergyConfig
from energy_flow.core.carrier import CarrierOutput, EnergyCarrier
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.mappers import InputMapper, OutputMapper
from energy_flow.core.neuron import SimpleNeuron
from energy_flow.core.spawning import child_offsets, plan_children, sample_keys
from energy_flow.core.step_phases import StepOutcome, deposit, move, rewrite_state, terminate
from energy_flow.core.tracing import StepTracer
from energy_flow.memory.estimate import RECOMPUTE_CHUNK_ROWS  # rows per recomputed carrier call
from energy_flow.trace.batch_trace import BatchTrace
from energy_flow.trace.telemetry import BatchTelemetry, FlowStats


#: The profiler range around every recomputation in backward, so a profile can tell the replayed
#: forward from the first one (benchmarks/profile_summary.py). Free when no profiler runs.
REPLAY_RANGE = "energy_flow::recompute"


def labelled_replay() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """``checkpoint``'s context_fn: nothing around the first run, a named range around the replay."""
    return contextlib.nullcontext(), record_function(REPLAY_RANGE)


@dataclass
class PropagationResult:
    outputs: torch.Tensor               # [B, D] output embeddings (in the autograd graph)
    trace: BatchTrace                   # this forward pass's measured figures, on the host

    @property
    def flow_stats(self) -> FlowStats:
        return self.trace.flow_stats()

    @property
    def telemetry(self) -> BatchTelemetry | None:
        return self.trace.telemetry()


class FlowProcessor(nn.Module):
    """Owns every learned part: input mapper, SimpleNeuron, EnergyCarrier, output mapper."""

    def __init__(self, lattice: EnergyLattice, neuron: SimpleNeuron, config: EnergyConfig):
        super().__init__()
        if lattice.config is not config and lattice.config != config:
            raise ValueError("FlowProcessor: lattice and processor were built from different configs")
        if neuron.output_dim != config.neuron_output_dim:
            raise ValueError(f"FlowProcessor: neuron output dim {neuron.output_dim} != "
                             f"config.neuron_output_dim {config.neuron_output_dim}")
        self.config = config
        self.lattice = lattice
        self.input_mapper = InputMapper(config)
        self.neuron = neuron
        self.carrier = EnergyCarrier(config, input_dim=neuron.output_dim + config.energy_dim + 1)
        self.output_mapper = OutputMapper(config)
        if config.readout_init == "tied":
            self.output_mapper.tie_to(self.input_mapper)
        self.trace_enabled = config.trace_enabled
        #: Forward passes the trainer merges into one batch (micro-batches × ranks); with more
        #: than one the tracer keeps the values percentiles are taken over, so the batch's
        #: percentiles are recomputed exactly from all of them.
        self.batch_parts = 1
        # where children start relative to their parent (core/spawning.py), on the model's device
        self.register_buffer("child_offsets", child_offsets(config.max_spawn_per_step, config.displacement_scale),
                             persistent=False)

    # ------------------------------------------------------------------ forward
    def forward(self, embeddings: torch.Tensor) -> PropagationResult:
        c = self.config
        if embeddings.dim() != 2 or embeddings.shape[1] != c.teacher_dim:
            raise ValueError(f"input embeddings must be [B, {c.teacher_dim}] (config.teacher_dim), "
                             f"got {tuple(embeddings.shape)}")
        batch = embeddings.shape[0]
        device = embeddings.device
        energy0, cell_parts = self.input_mapper(embeddings)
        energy0, cell_parts = energy0.float(), cell_parts.float()  # flow state is float32 even under autocast
        state = self.lattice.place(energy0, cell_parts, (c.carrier_num_layers, c.carrier_hidden_size),
                                   traced_samples=0, sample_keys=sample_keys(embeddings))
        tracer = StepTracer(c, self.lattice, batch, detailed=self.trace_enabled, device=device,
                            keep_values=self.batch_parts > 1)
        state.traced = state.sample < tracer.traced_samples
        collector = OutputCollector(self.lattice, batch, c.energy_dim, device, energy0.dtype)
        field = cell_parts.reshape(-1, c.energy_dim)  # [B·H·W, E]: the cell's part, per sample
        with torch.no_grad():
            tracer.record_placement(state, collector)
        state = self._propagate(state, field, collector, tracer)
        payload, energy = collector.surfaces()
        outputs = self.output_mapper(payload, energy)
        return PropagationResult(outputs=outputs, trace=tracer.finish(collector, state.next_id))

    # ------------------------------------------------------------------ the step loop
    def _propagate(self, state: FlowState, field: torch.Tensor, collector: OutputCollector,
                   tracer: StepTracer) -> FlowState:
        """Every propagation step, in checkpointed segments when the config asks for them."""
        c = self.config
        recompute = c.checkpoint_steps >= 1 and torch.is_grad_enabled()
        hidden_dtype = self.carrier.compute_dtype() if recompute else None
        segment = c.checkpoint_steps if recompute else 0
        if segment < 2:
            return self._run_steps(state, field, collector, tracer, 1, c.max_steps, hidden_dtype)[0]
        for first in range(1, c.max_steps + 1, segment):
            last = min(first + segment - 1, c.max_steps)
            state, more = self._segment(state, field, collector, tracer, first, last, hidden_dtype)
            if not more:
                break
        return state

    def _run_steps(self, state: FlowState, field: torch.Tensor, collector: OutputCollector,
                   tracer: StepTracer | None, first: int, last: int,
                   hidden_dtype: torch.dtype | None) -> tuple[FlowState, bool]:
        """Steps ``first … last``; returns the state and whether any flow is still alive."""
        for step in range(first, last + 1):
            if state.count == 0:
                return state, False
            state = self.step(state, field, collector, tracer, step, hidden_dtype)
        return state, state.count > 0

    def _segment(self, state: FlowState, field: torch.Tensor, collector: OutputCollector,
                 tracer: StepTracer, first: int, last: int,
                 hidden_dtype: torch.dtype) -> tuple[FlowState, bool]:
        """Steps ``first … last`` under one activation checkpoint: autograd keeps only the
        segment's input state (hidden in the GRU's compute dtype, exact) and recomputes the
        steps in backward. The first run deposits into ``collector`` and records telemetry;
        the recomputation works on copies and records nothing, so neither is doubled."""
        names = [f.name for f in fields(FlowState)]
        state_dtype = state.hidden.dtype
        runs: list[bool] = []

        def run(field_, energy_sum, payload_sum, *values):
            first_run = not runs
            st = FlowState(**dict(zip(names, values)))
            st.hidden = st.hidden.to(state_dtype)
            col = collector.with_sums(energy_sum, payload_sum)
            st, more = self._run_steps(st, field_, col, tracer if first_run else None, first, last,
                                       hidden_dtype)
            if first_run:
                runs.append(more)
            return (col.energy, col.weighted_payload, *(getattr(st, n) for n in names))

        inputs = [getattr(state, n) for n in names]
        inputs[names.index("hidden")] = state.hidden.to(hidden_dtype)
        out = checkpoint(run, field, collector.energy, collector.weighted_payload, *inputs,
                         use_reentrant=False, preserve_rng_state=False, context_fn=labelled_replay)
        collector.energy, collector.weighted_payload = out[0], out[1]
        return FlowState(**dict(zip(names, out[2:]))), runs[0]

    # ------------------------------------------------------------------ one step
    def _carrier_step(self, pos: torch.Tensor, cell_part: torch.Tensor, payload: torch.Tensor,
                      energy: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The heavy, pure part of a step: SimpleNeuron → carrier GRU → heads, for n flows.
        Returns the fields of a CarrierOutput, in its order."""
        x = self.neuron(pos, cell_part)
        out = self.carrier(torch.cat([x, payload, energy.unsqueeze(1)], dim=1), hidden, cell_part, payload)
        return (out.hidden, out.retention, out.payload, out.displacement, out.displacement_unit,
                out.spawn_fraction)

    def _recomputed_carrier_step(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``_carrier_step`` under activation checkpoints of ``RECOMPUTE_CHUNK_ROWS`` rows each
        (a loop over row chunks, at most capacity / 32k of them, not over flows)."""
        chunks = [checkpoint(self._carrier_step, *part, use_reentrant=False, preserve_rng_state=False,
                             context_fn=labelled_replay)
                  for part in zip(*(t.split(RECOMPUTE_CHUNK_ROWS) for t in inputs))]
        return chunks[0] if len(chunks) == 1 else tuple(torch.cat(col) for col in zip(*chunks))

    def step(self, state: FlowState, field: torch.Tensor, collector: OutputCollector,
             tracer: StepTracer | None, step: int, hidden_dtype: torch.dtype | None = None) -> FlowState:
        """Advance every flow of ``state`` by one step; returns the new state.

        With ``hidden_dtype`` set (``checkpoint_steps ≥ 1``) the carrier part is recomputed in
        backward and only its inputs are kept, the hidden state cast to ``hidden_dtype`` (the
        GRU's compute dtype, in which the stored values are exact). ``tracer`` None records no
        telemetry (a recomputed segment)."""
        outcome = self.advance(state, field, collector, step, hidden_dtype)
        if tracer is not None:
            with torch.no_grad():  # telemetry keeps no tensors in the graph: a recomputation must match the first run
                tracer.record_step(step, outcome)
        return outcome.state

    def advance(self, state: FlowState, field: torch.Tensor, collector: OutputCollector, step: int,
                hidden_dtype: torch.dtype | None) -> StepOutcome:
        """The step's phases (core/step_phases.py) for every flow of ``state``."""
        c, lat = self.config, self.lattice
        cells = lat.width * lat.height
        pos, energy, payload, sample = state.pos, state.energy, state.payload, state.sample

        cell_part = field[sample * cells + lat.nearest_cell(pos[:, :2])]
        if hidden_dtype is None:
            outs = self._carrier_step(pos, cell_part, payload, energy, state.hidden)
        else:
            outs = self._recomputed_carrier_step(pos, cell_part, payload, energy,
                                                 state.hidden.to(hidden_dtype))
        out = CarrierOutput(*outs)

        movement = move(pos, energy, out)
        ended = terminate(lat, c, movement, step)
        deposit(collector, sample, movement, ended, out.payload)
        room = c.resolved_max_active_flows - ended.still_active.sum()
        spawns = plan_children(out.spawn_fraction, ended.still_active & (movement.energy > c.spawn_threshold),
                               movement.energy, state.lineage, room, step, c.max_spawn_per_step)
        new_state, born = rewrite_state(state, movement, ended, out, spawns, step, self.child_offsets,
                                        lambda parent, xy: field[sample[parent] * cells + lat.nearest_cell(xy)])
        return StepOutcome(
            state=new_state,
            born=born,
            stepped_ids=state.flow_id,
            stepped_traced=state.traced,
            movement=movement,
            termination=ended,
            spawns=spawns,
            carrier=out,
            collector=collector,
        )
