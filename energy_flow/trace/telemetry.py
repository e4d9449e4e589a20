"""What crosses from the model to the app (and into recordings): plain, read-only numpy.

Everything here is computed from a real propagation: the model computes per-step aggregates on
its device over all flows and copies them to the host in one transfer per batch
(:mod:`energy_flow.core.tracing`). These dataclasses are immutable and their arrays are marked
read-only, so a GUI thread holding a snapshot can never see it change under it.

Step indexing, used by every array with a step axis: index 0 is the placement on the start
plane (before any propagation), index ``t`` is the state after ``t`` propagation steps, so a
batch that ran ``T`` steps has ``T + 1`` entries. Event counts (spawns, terminations) at index 0
are zero; displacement statistics at index 0 are NaN (nothing has moved yet).

Optional fields (``None``) are those a recording of schema version 1, or a recorder for another
model, may not have; NaN inside an array means "could not be measured" for that step or column.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

# Termination reasons, as stored in every flow array and in recordings.
REASON_ACTIVE = 0
REASON_LANDED = 1
REASON_FADED = 2
REASON_TIMED_OUT = 3
#: Names of the built-in reason codes (index = code). Another model may name more reasons,
#: with codes 4, 5, … (``BatchTelemetry.reason_names``); the first four always mean these.
REASON_NAMES = ("active", "landed", "faded", "timed_out")

#: A flow whose largest |Δx|, |Δy|, |Δz| in a step (the change of its clamped position, in
#: normalised units) is below this did not move. 1e-3 is 1/20 of a cell on the 100-cell lattice
#: (cells are 2/99 ≈ 0.02 apart there) and 1/100 of the debug lattice's: far below any move that
#: takes a flow anywhere, far above float32 noise on coordinates in [-1, 1] (≈ 1e-7).
STILL_EPSILON = 1e-3
#: A bounded head output within this of its limit counts as saturated (pinned): sigmoid < m or
#: > 1 − m, |tanh| > 1 − m. At 0.01 the activation's slope has fallen to ≈ 1–2 % of its peak,
#: so the head's gradient has all but vanished.
SATURATION_MARGIN = 0.01
#: Columns of ``StepAggregates.saturation``: retention sigmoid, spawn sigmoid, displacement
#: (unit tanh, or sigmoid for Δz in input_face mode, before displacement_scale), payload tanh
#: (share of all payload elements), hidden (share of GRU hidden units of every layer, |h| > 1 − m).
SATURATION_NAMES = ("retention", "spawn", "displacement", "payload", "hidden")

#: Percentiles reported for energies and displacements (bands in the panels).
PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)


def _freeze(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no boolean ==
class StepAggregates:
    """Per-step statistics over *all* flows of one batch; arrays have T + 1 rows."""

    active: np.ndarray            # [T+1] int64: flows alive after step t (placement at t=0)
    spawn_requested: np.ndarray   # [T+1] int64: children asked for by the spawn head at step t
    spawn_granted: np.ndarray     # [T+1] int64: children created
    spawn_denied: np.ndarray      # [T+1] int64: requested but refused by the flow budget
    landed: np.ndarray            # [T+1, P] int64: flows that reached output plane p at step t
    faded: np.ndarray             # [T+1] int64: flows whose energy fell below energy_threshold
    timed_out: np.ndarray         # [T+1] int64: flows still alive when max_steps ran out
    energy_hist: np.ndarray       # [T+1, bins] int64: energies the flows stepped at t carry on with
    energy_bin_edges: np.ndarray  # [bins+1] float32: our model: fixed over [0, 1]; a recorder: the data's range
    energy_percentiles: np.ndarray  # [T+1, len(PERCENTILES)] float32 (NaN where no flow)
    delta_min: np.ndarray         # [T+1, 3] float32: smallest Δx, Δy, Δz of the step
    delta_max: np.ndarray         # [T+1, 3] float32
    delta_percentiles: np.ndarray  # [T+1, 3, len(PERCENTILES)] float32
    clamp_fraction: np.ndarray    # [T+1] float32: share of moved flows whose position was clamped
    coverage: np.ndarray          # [T+1, P] float32: share of plane cells reached so far (mean over samples)
    deposited_energy: np.ndarray  # [T+1, P] float32: energy deposited on each plane so far
    active_energy: np.ndarray     # [T+1] float32: energy still carried by live flows
    #: [T+1] float32: share of the flows stepped at t whose largest |Δ| component of their
    #: (clamped) position change was < STILL_EPSILON; NaN at t = 0. None: not recorded.
    still_fraction: np.ndarray | None = None
    #: [T+1, len(SATURATION_NAMES)] float32: share of head outputs within SATURATION_MARGIN of
    #: their limits over the flows stepped at t; NaN at t = 0 and in columns a recorder cannot
    #: know. None: not recorded.
    saturation: np.ndarray | None = None

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def num_steps(self) -> int:
        """T: propagation steps run (rows are T + 1)."""
        return int(self.active.shape[0]) - 1


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no boolean ==
class FlowSample:
    """A capped sample of flows with their whole trajectories, for drawing.

    The sample holds every flow (children included) of the first ``traced_samples`` samples
    of the batch, so trajectories and family trees are complete within the sample; as many
    whole samples are kept as fit in ``trace_max_flows`` (at least one). ``energy`` is what a
    flow carries after each step: after fading and, at a step where it spawned, after handing
    its children their share.
    """

    flow_id: np.ndarray       # [F] int64, unique within the batch
    parent_id: np.ndarray     # [F] int64, -1 for flows placed on the start plane
    sample_index: np.ndarray  # [F] int32, which sample of the batch the flow belongs to
    birth_step: np.ndarray    # [F] int32, 0 for placed flows, t for children spawned at step t
    end_step: np.ndarray      # [F] int32, step at which the flow terminated
    reason: np.ndarray        # [F] int8, REASON_* at termination (REASON_ACTIVE never remains)
    positions: np.ndarray     # [F, T+1, 3] float32, NaN where the flow did not exist
    energy: np.ndarray        # [F, T+1] float32, NaN where the flow did not exist
    total_flows: int          # flows that existed in the whole batch (the sample's population)
    traced_samples: int       # how many samples of the batch the sample covers

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def num_flows(self) -> int:
        return int(self.flow_id.shape[0])


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no boolean ==
class BatchTelemetry:
    """Everything the app draws about one batch's propagation."""

    lattice_shape: tuple[int, int, int]  # (width, height, depth)
    start_mode: str
    plane_z: tuple[float, ...]           # z of each output plane, in storage order
    input_energy_range: tuple[float, float]
    aggregates: StepAggregates
    plane_energy: np.ndarray   # [P, H, W] float32: energy deposited per cell, summed over the batch
    plane_reached: np.ndarray  # [P, H, W] float32: share of samples that deposited in the cell
    flows: FlowSample | None   # None when tracing of trajectories is off
    total_flows: int           # flows created in the batch, placed + spawned
    #: [T+1, P, H, W] float32: energy deposited per plane cell up to and including step t,
    #: summed over the batch; the last row equals ``plane_energy``. None: not recorded.
    plane_energy_steps: np.ndarray | None = None
    #: Name of each reason code (index = code); a model may add its own after the built-in four.
    reason_names: tuple[str, ...] = REASON_NAMES

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def num_steps(self) -> int:
        return self.aggregates.num_steps

    @property
    def num_planes(self) -> int:
        return len(self.plane_z)


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no boolean ==
class FlowStats:
    """Batch-level flow counts from the real run: the whole batch's, derived from its merged
    step table (:meth:`energy_flow.trace.batch_trace.BatchTrace.flow_stats`)."""

    initial_flows: int
    spawned: int
    landed: tuple[int, ...]      # per output plane
    faded: int
    timed_out: int
    steps: int
    coverage: tuple[float, ...]  # per output plane, share of cells reached (mean over samples)
    active_per_step: np.ndarray = field(repr=False)  # [T+1] int64
    requested: int               # children the spawn head asked for
    denied: int                  # children refused by the flow budget (granted = ``spawned``)

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def terminated(self) -> int:
        return sum(self.landed) + self.faded + self.timed_out

    @property
    def landed_fraction(self) -> float:
        """Share of all flows of the batch that reached an output plane."""
        total = self.initial_flows + self.spawned
        return sum(self.landed) / total if total else 0.0
