"""EnergyConfig: every knob of the lattice, the flows, the model and training, in one place.

Validation happens on construction (``__post_init__``) so an invalid configuration can never
reach the model: each error names the field, the value and what is allowed. Configs are saved
and loaded as TOML or JSON; unknown keys are rejected by name so a typo is never silently
ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from energy_flow.files.input_paths import CONFIG_MAX_BYTES, read_regular
from energy_flow.memory.estimate import REFUSE_BYTES, estimate_memory, format_bytes

START_MODES = ("center", "input_face")
TIMEOUT_POLICIES = ("drop", "project")
DEVICES = ("auto", "cpu", "cuda")
#: "mse_cosine": mse_weight·MSE + cosine_weight·(1 − cos), each output against its own target.
#: "contrastive": adds contrastive_weight·InfoNCE over the batch (every other target of the
#: batch is a negative), which rewards telling pairs apart, not only pointing the right way.
LOSSES = ("mse_cosine", "contrastive")
#: How a flow's payload (what it deposits) changes per step: "replace" sets it to the carrier's
#: new output; "gated" keeps a learned share of it (a GRU-like gate), so the part of the input
#: embedding a flow starts with reaches the output plane unless the carrier learns to change it.
PAYLOAD_UPDATES = ("replace", "gated")
#: Sideways (x, y) movement at initialisation: "free" (random head weights) or "still" (x, y
#: rows of the displacement head start at zero: flows first land under their start cell and
#: learn to move sideways only where that lowers the loss).
FLOW_XY_STARTS = ("free", "still")
#: The output mapper's initial weights: "random" (PyTorch's default for a Linear layer) or
#: "tied": each output plane's payload channels read the coarse grid back through the transpose
#: of the input mapper's projection (the energy channels start at zero), like a tied
#: autoencoder. With payloads that reach the planes under their start cells (gated payload,
#: still start) an untrained lattice then hands the output roughly its input, and training
#: learns a correction to that instead of a map from scratch. The information still travels
#: only through the deposits: the readout is a function of the output planes alone.
READOUT_INITS = ("random", "tied")


@dataclass(frozen=True)
class EnergyConfig:
    """Configuration of one energy-flow model and its training run.

    Geometry: the lattice has ``lattice_width`` × ``lattice_height`` cells in x/y and
    ``lattice_depth`` cells along z; positions are normalised to [-1, 1] on every axis.
    ``start_mode="center"`` starts flows on the plane z = 0 with output planes at z = -1 and
    z = +1; ``"input_face"`` starts them at z = -1 with one output plane at z = +1 and z may
    only increase.
    """

    # lattice
    lattice_width: int = 20
    lattice_height: int = 20
    lattice_depth: int = 10
    start_mode: str = "center"
    # flows
    #: Flows one (micro-)batch may have alive at once: the spawn budget. 0 (every preset): it follows the
    #: lattice and the batch, ``flow_headroom`` × the flows placed on the start plane, rounded
    #: up to a whole hundred (``resolved_max_active_flows``), so changing the lattice's size or
    #: the batch never leaves a budget too small for the start plane. A positive value is used
    #: as given and must hold the start plane.
    max_active_flows: int = 0
    #: Budget per placed flow when ``max_active_flows`` follows: room for the children.
    flow_headroom: float = 2.5
    energy_threshold: float = 0.05
    spawn_threshold: float = 0.5
    max_spawn_per_step: int = 1
    max_steps: int = 16
    timeout_policy: str = "project"
    displacement_scale: float = 0.25
    flow_xy_start: str = "free"
    # model
    carrier_hidden_size: int = 64
    carrier_num_layers: int = 2
    neuron_hidden_dim: int = 32
    neuron_output_dim: int = 32
    energy_dim: int = 8
    #: Side of the mappers' coarse grid. 0 (every preset): it follows the lattice, as fine as
    #: the lattice up to ``mapper_grid_max`` (``resolved_mapper_grid``), so changing the
    #: lattice's size never leaves a grid that no longer fits. A positive value is used as
    #: given and must fit the lattice.
    mapper_grid: int = 0
    #: The largest grid a following ``mapper_grid`` (0) takes: the mappers' weights grow with
    #: the grid's square (teacher_dim × grid² × (1 + energy_dim) each).
    mapper_grid_max: int = 8
    payload_update: str = "replace"
    readout_init: str = "random"
    #: Dropout on what the output mapper reads (its pooled features), in training only. On a
    #: linear readout it acts as a ridge penalty scaled by each feature's own power (Wager et
    #: al., 2013): the map from lattice to embedding is shrunk as least squares' ridge shrinks
    #: its map, instead of fitting every pooled cell of the training pairs.
    readout_dropout: float = 0.0
    teacher_dim: int = 384
    # training
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    grad_accumulation_steps: int = 1
    grad_clip: float = 1.0
    loss: str = "mse_cosine"
    mse_weight: float = 1.0
    cosine_weight: float = 1.0
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.05
    lr_patience: int = 4
    lr_factor: float = 0.5
    plateau_interval: int = 25
    seed: int = 0
    #: A held-out evaluation every this many batches (0: none): the model's cosine and top-1 on
    #: ``held_out_sample`` pairs drawn once, with a fixed seed, from the data's held-out split
    #: (the pairs the run never trains on), in eval mode, beside the best simple predictor's
    #: figures on the same pairs (energy_flow.training.held_out). It draws no random numbers:
    #: a run trains exactly as it would without it. Its cost is forward passes only, in chunks of
    #: batch_size: with the debug preset on one CPU thread (2026-12-07, shared 2-core machine),
    #: 32 pairs every 10 batches took 7 % of the training time on WordNet 3,000 (64 pairs: 12.5 %).
    held_out_every: int = 10
    held_out_sample: int = 32
    device: str = "auto"
    # memory: 0 keeps every step's activations for backward; 1 recomputes each step's carrier
    # (neuron → GRU → heads) in backward; k ≥ 2 also recomputes segments of k steps, keeping
    # only the flow state at each segment's start. Same losses and gradients either way.
    checkpoint_steps: int = 0
    # telemetry
    trace_enabled: bool = True
    trace_max_flows: int = 20_000
    energy_hist_bins: int = 32

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ derived geometry
    @property
    def cells_per_plane(self) -> int:
        return self.lattice_width * self.lattice_height

    @property
    def num_output_planes(self) -> int:
        return 2 if self.start_mode == "center" else 1

    @property
    def output_plane_z(self) -> tuple[float, ...]:
        """z coordinate of each output plane, in the order planes are stored everywhere."""
        return (-1.0, 1.0) if self.start_mode == "center" else (1.0,)

    @property
    def start_plane_z(self) -> float:
        return 0.0 if self.start_mode == "center" else -1.0

    @property
    def resolved_mapper_grid(self) -> int:
        """The side of the grid the mappers use (``mapper_grid``, or what it follows)."""
        return resolve_mapper_grid(self.mapper_grid, self.mapper_grid_max, self.lattice_width,
                                   self.lattice_height)

    @property
    def initial_flows_per_batch(self) -> int:
        return self.batch_size * self.cells_per_plane

    @property
    def initial_flows_per_micro_batch(self) -> int:
        """Flows placed by one forward pass (a micro-batch of ``grad_accumulation_steps``)."""
        return self.initial_flows_per_batch // self.grad_accumulation_steps

    @property
    def resolved_max_active_flows(self) -> int:
        """The flow budget of one forward pass (``max_active_flows``, or what it follows)."""
        return resolve_max_active_flows(self.max_active_flows, self.flow_headroom,
                                        self.initial_flows_per_micro_batch)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "EnergyConfig":
        """A copy with ``changes`` applied (validated like any new config)."""
        _reject_unknown(changes, source="replace()")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "EnergyConfig":
        _reject_unknown(data, source=source)
        typed = {}
        by_name = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            typed[key] = _coerce(key, value, by_name[key].type, source)
        return cls(**typed)

    def save(self, path: str | Path) -> None:
        """Write as TOML (``.toml``) or JSON (anything else)."""
        path = Path(path)
        if path.suffix.lower() == ".toml":
            # imported here: reading configs needs only tomllib, so a wheel installed with
            # --no-deps on a server without tomli-w still imports (a declared dependency all the same)
            import tomli_w

            text = tomli_w.dumps(self.to_dict())
        else:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        path.write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "EnergyConfig":
        path = Path(path)
        raw = read_regular(path, "config file", CONFIG_MAX_BYTES)   # never a FIFO or a device
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a valid config file: {exc}") from exc
        except RecursionError:
            raise ValueError(f"{path}: not a valid config file: nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a table of fields, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))


def resolve_max_active_flows(max_active_flows: int, headroom: float, placed: int) -> int:
    """``max_active_flows`` when it is set (> 0); else ``headroom`` × the ``placed`` flows of one
    forward pass, rounded up to a whole hundred."""
    return max_active_flows if max_active_flows > 0 else 100 * math.ceil(headroom * placed / 100)


def resolve_mapper_grid(mapper_grid: int, mapper_grid_max: int, width: int, height: int) -> int:
    """``mapper_grid`` when it is set (> 0); else the lattice's smaller side, at most
    ``mapper_grid_max``."""
    return mapper_grid if mapper_grid > 0 else min(width, height, mapper_grid_max)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(EnergyConfig))


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings (``--set``) → a dict; VALUE is read as JSON (numbers, true/false)
    or else taken as a string. Values are checked by the config they are applied to."""
    known = set(field_names())
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD a config field"
                             + ("" if not sep else f"; {name!r} is not one"))
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def _reject_unknown(data: dict[str, Any], source: str) -> None:
    known = set(field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown config field(s) {', '.join(map(repr, unknown))}")


def _coerce(name: str, value: Any, annotation: Any, source: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{source}: field {name!r} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: field {name!r} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: field {name!r} must be a number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{source}: field {name!r} must be a string, got {value!r}")
        return value
    return value


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"EnergyConfig.{name} = {value!r} is invalid: {allowed}")


def _validate(c: EnergyConfig) -> None:
    for f in fields(c):   # text fields first: the checks below call string methods on them
        if f.type == "str" and not isinstance(getattr(c, f.name), str):
            _fail(f.name, getattr(c, f.name), "must be a string")
    for name in ("lattice_width", "lattice_height"):
        v = getattr(c, name)
        if not isinstance(v, int) or v < 2:
            _fail(name, v, "must be an integer ≥ 2")
    if not isinstance(c.lattice_depth, int) or c.lattice_depth < 2:
        _fail("lattice_depth", c.lattice_depth, "must be an integer ≥ 2")
    if c.start_mode not in START_MODES:
        _fail("start_mode", c.start_mode, f"must be one of {START_MODES}")
    if c.timeout_policy not in TIMEOUT_POLICIES:
        _fail("timeout_policy", c.timeout_policy, f"must be one of {TIMEOUT_POLICIES}")
    if c.device not in DEVICES and not c.device.startswith("cuda:"):
        _fail("device", c.device, f"must be one of {DEVICES} or 'cuda:N'")
    for name in ("carrier_hidden_size", "carrier_num_layers", "neuron_hidden_dim",
                 "neuron_output_dim", "energy_dim", "teacher_dim", "batch_size",
                 "grad_accumulation_steps", "max_steps", "trace_max_flows",
                 "energy_hist_bins", "plateau_interval", "mapper_grid_max"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            _fail(name, v, "must be a positive integer")
    if isinstance(c.mapper_grid, bool) or not isinstance(c.mapper_grid, int) or c.mapper_grid < 0:
        _fail("mapper_grid", c.mapper_grid,
              "must be an integer ≥ 0 (0 = follow the lattice, up to mapper_grid_max)")
    if c.mapper_grid > min(c.lattice_width, c.lattice_height):
        _fail("mapper_grid", c.mapper_grid,
              f"must be ≤ min(lattice_width, lattice_height) = {min(c.lattice_width, c.lattice_height)}"
              " (or 0: follow the lattice)")
    if c.batch_size % c.grad_accumulation_steps != 0:
        _fail("grad_accumulation_steps", c.grad_accumulation_steps,
              f"must divide batch_size = {c.batch_size}")
    if isinstance(c.max_spawn_per_step, bool) or not isinstance(c.max_spawn_per_step, int) \
            or not 0 <= c.max_spawn_per_step <= 8:
        _fail("max_spawn_per_step", c.max_spawn_per_step, "must be an integer in [0, 8]")
    for name in ("energy_threshold", "spawn_threshold"):
        v = getattr(c, name)
        if not _finite(v) or not 0.0 <= v < 1.0:
            _fail(name, v, "must be in [0, 1) (energies live in (0, 1])")
    if c.spawn_threshold <= c.energy_threshold and c.max_spawn_per_step > 0:
        _fail("spawn_threshold", c.spawn_threshold,
              f"must be greater than energy_threshold = {c.energy_threshold} (children would fade at birth)")
    if not _finite(c.displacement_scale) or not 0.0 < c.displacement_scale <= 2.0:
        _fail("displacement_scale", c.displacement_scale, "must be in (0, 2] (normalised units per step)")
    for name in ("learning_rate", "grad_clip", "lr_factor"):
        v = getattr(c, name)
        if not _finite(v) or v <= 0:
            _fail(name, v, "must be a positive number")
    if c.lr_factor >= 1:
        _fail("lr_factor", c.lr_factor, "must be in (0, 1)")
    if isinstance(c.lr_patience, bool) or not isinstance(c.lr_patience, int) or c.lr_patience < 0:
        _fail("lr_patience", c.lr_patience, "must be an integer ≥ 0")
    for name in ("weight_decay", "mse_weight", "cosine_weight"):
        v = getattr(c, name)
        if not _finite(v) or v < 0:
            _fail(name, v, "must be a number ≥ 0")
    if c.payload_update not in PAYLOAD_UPDATES:
        _fail("payload_update", c.payload_update, f"must be one of {PAYLOAD_UPDATES}")
    if c.flow_xy_start not in FLOW_XY_STARTS:
        _fail("flow_xy_start", c.flow_xy_start, f"must be one of {FLOW_XY_STARTS}")
    if c.readout_init not in READOUT_INITS:
        _fail("readout_init", c.readout_init, f"must be one of {READOUT_INITS}")
    if not _finite(c.readout_dropout) or not 0 <= c.readout_dropout < 1:
        _fail("readout_dropout", c.readout_dropout, "must be in [0, 1)")
    if c.loss not in LOSSES:
        _fail("loss", c.loss, f"must be one of {LOSSES}")
    if c.loss == "mse_cosine" and c.mse_weight == 0 and c.cosine_weight == 0:
        _fail("cosine_weight", c.cosine_weight, "mse_weight and cosine_weight cannot both be 0")
    if not _finite(c.contrastive_weight) or c.contrastive_weight < 0:
        _fail("contrastive_weight", c.contrastive_weight, "must be a number ≥ 0")
    if c.loss == "contrastive" and c.contrastive_weight == 0:
        _fail("contrastive_weight", c.contrastive_weight, 'must be > 0 when loss = "contrastive"')
    if not _finite(c.contrastive_temperature) or not 0 < c.contrastive_temperature <= 10:
        _fail("contrastive_temperature", c.contrastive_temperature, "must be in (0, 10]")
    if isinstance(c.checkpoint_steps, bool) or not isinstance(c.checkpoint_steps, int) \
            or c.checkpoint_steps < 0:
        _fail("checkpoint_steps", c.checkpoint_steps,
              "must be an integer ≥ 0 (0 = off, 1 = recompute each step's carrier, k ≥ 2 = segments of k steps)")
    if isinstance(c.held_out_every, bool) or not isinstance(c.held_out_every, int) or c.held_out_every < 0:
        _fail("held_out_every", c.held_out_every, "must be an integer ≥ 0 (0 = no held-out evaluation)")
    if isinstance(c.held_out_sample, bool) or not isinstance(c.held_out_sample, int) or c.held_out_sample < 2:
        _fail("held_out_sample", c.held_out_sample, "must be an integer ≥ 2 (retrieval needs two targets)")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int):
        _fail("seed", c.seed, "must be an integer")
    if not isinstance(c.trace_enabled, bool):
        _fail("trace_enabled", c.trace_enabled, "must be true or false")
    if isinstance(c.max_active_flows, bool) or not isinstance(c.max_active_flows, int) \
            or c.max_active_flows < 0:
        _fail("max_active_flows", c.max_active_flows,
              "must be an integer ≥ 0 (0 = follow the lattice and batch, × flow_headroom)")
    if not _finite(c.flow_headroom) or c.flow_headroom < 1:
        _fail("flow_headroom", c.flow_headroom, "must be a number ≥ 1 (budget per placed flow)")
    micro = c.initial_flows_per_micro_batch
    if 0 < c.max_active_flows < micro:
        _fail("max_active_flows", c.max_active_flows,
              f"cannot hold the start plane: must be ≥ the initial flows of one (micro-)batch = "
              f"batch_size/grad_accumulation_steps × width × height = {micro} (or 0: follow the "
              f"lattice and batch)")
    estimate = estimate_memory(c)
    if estimate.minimum_bytes > REFUSE_BYTES:
        raise ValueError(f"EnergyConfig is too large for any machine: {estimate.describe()} "
                         f"(the limit is {format_bytes(REFUSE_BYTES)})")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------------- presets
def create_tiny_config(**overrides: Any) -> EnergyConfig:
    """6×6×5 lattice and a small model: for tests, runs in well under a second per batch."""
    base = dict(lattice_width=6, lattice_height=6, lattice_depth=5, flow_headroom=2.75,
                carrier_hidden_size=24, carrier_num_layers=1, neuron_hidden_dim=16,
                neuron_output_dim=16, energy_dim=4, mapper_grid_max=3, batch_size=4, max_steps=10,
                displacement_scale=0.4, spawn_threshold=0.3, trace_max_flows=2_000,
                energy_hist_bins=16, learning_rate=5e-3)
    base.update(overrides)
    return EnergyConfig(**base)


#: The debug preset's grid follows the lattice all the way (the finding above) up to this side:
#: at 64 each mapper holds 384 × 64² × 9 ≈ 14 M weights, already 170× its 20 × 20 size.
DEBUG_MAPPER_GRID_MAX = 64


def create_debug_config(**overrides: Any) -> EnergyConfig:
    """20×20×10: the app's default. Small enough to train live on two CPU cores.

    It carries the input to the planes and reads it back (gated payload, still start, tied
    readout on a grid as fine as the lattice) and trains with a light contrastive term, because
    with the field defaults the model collapses toward the mean target on WordNet (held-out top-1
    0.003–0.04). On held-out pairs it does **not** beat the best simple predictor per figure
    (``energy_flow.training.simple_predictors``) on any figure: on WordNet after 600 batches,
    seed 0, cosine 0.406 against 0.442 (ridge → 0) and top-1 0.383 against 0.477 (ridge →
    identity; the identity alone 0.440, this model untrained 0.423); on the bundled corpus after
    300 batches 0.557 / 0.944 against 0.582 (ridge → identity) / 0.972 (identity). See
    docs/BENCHMARKS.md, "Issue 30". The other presets keep the field defaults (the experiment
    preset was measured with this learning configuration on a GPU: "On a GPU").
    """
    base = dict(lattice_width=20, lattice_height=20, lattice_depth=10, batch_size=16,
                carrier_hidden_size=64, carrier_num_layers=2,
                payload_update="gated", flow_xy_start="still", readout_init="tied",
                mapper_grid_max=DEBUG_MAPPER_GRID_MAX, loss="contrastive", contrastive_weight=0.1)
    base.update(overrides)
    return EnergyConfig(**base)


def create_experiment_config(**overrides: Any) -> EnergyConfig:
    """50×50×20: the research configuration; comfortable on a GPU, slow on a laptop CPU."""
    base = dict(lattice_width=50, lattice_height=50, lattice_depth=20, batch_size=16,
                flow_headroom=2.0, max_steps=24, displacement_scale=0.15,
                carrier_hidden_size=128, carrier_num_layers=2, neuron_hidden_dim=32,
                energy_dim=16, mapper_grid_max=10, learning_rate=1e-3)
    base.update(overrides)
    return EnergyConfig(**base)


#: Segment length of the optimized preset: the boundary states (⌈40/k⌉ of them) and one
#: recomputed segment's kept inputs (k steps) cost about the same per step at 3×1024, so
#: k ≈ √40 minimises their sum (the arithmetic is in tests/test_memory.py).
OPTIMIZED_CHECKPOINT_STEPS = 6


def create_optimized_config(**overrides: Any) -> EnergyConfig:
    """100×100×50 with a 3×1024 GRU (≈16M carrier parameters): for one GPU, ≤ 32 GB at batch 8
    thanks to recomputation over segments of propagation steps (``checkpoint_steps``)."""
    base = dict(lattice_width=100, lattice_height=100, lattice_depth=50, batch_size=8,
                flow_headroom=1.5, max_steps=40, displacement_scale=0.08,
                carrier_hidden_size=1024, carrier_num_layers=3, neuron_hidden_dim=64,
                neuron_output_dim=64, energy_dim=16, mapper_grid_max=16, learning_rate=5e-4,
                trace_max_flows=20_000, checkpoint_steps=OPTIMIZED_CHECKPOINT_STEPS)
    base.update(overrides)
    return EnergyConfig(**base)


PRESETS = {
    "tiny": create_tiny_config,
    "debug": create_debug_config,
    "experiment": create_experiment_config,
    "optimized": create_optimized_config,
}


def create_preset(name: str, **overrides: Any) -> EnergyConfig:
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return factory(**overrides)
