"""The recording schema: dataset names, shapes, dtypes and chunking, shared by writer and reader.

``docs/recording-format.md`` specifies the same in prose; the two must agree. Schema version 2
added per-step ``still_fraction``, ``saturation`` and ``plane_energy`` and the per-batch training
signals (gradient, update and weight norms per module, output and target spread, the skipped
flag, what was non-finite, parameters without a gradient); version 3 the per-plane
``deposit_share``. A file of an older version lacks exactly the datasets :data:`DATASET_SINCE`
dates after it; the reader gives None/NaN for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from energy_flow.trace.figures import BATCH, STEP, Dims, recorded_batch_figures
from energy_flow.trace.telemetry import PERCENTILES, REASON_NAMES, SATURATION_NAMES

FORMAT = "energy-flow-recording"
#: The newest dataset's version (every figure declares the version that introduced it).
SCHEMA_VERSION = max(2, *(f.since_schema for f in (*STEP, *BATCH)))

# Rows per chunk along the growing axis. Segments of a batch start on these boundaries.
TABLE_CHUNK = 64
STEP_CHUNK = 64
#: steps/plane_energy rows are whole plane images: fewer per chunk keeps a chunk small (debug
#: preset: 8 × 2 × 20 × 20 float32 = 25.6 kB). Must divide STEP_CHUNK, so every batch's segment,
#: which starts on a STEP_CHUNK boundary, starts on one of its chunk boundaries too.
PLANE_STEP_CHUNK = 8
FLOW_CHUNK = 8192
POINT_CHUNK = 16384
#: Default filter for the growing datasets. lzf: at the debug preset it writes a batch about
#: twice as fast as gzip level 1 for ~15 % more bytes (docs/recording-format.md, "Measured
#: figures"); the writer runs inside the training loop, so its time matters more than bytes.
COMPRESSION = "lzf"
#: Accepted by RecordingWriter(compression=...): what h5py is asked for.
COMPRESSIONS = {"lzf": ("lzf", None), "none": (None, None),
                **{f"gzip-{level}": ("gzip", level) for level in range(1, 10)}}

START_MODE_BYTES = 32
#: Fixed-length UTF-8 columns (SWMR writers cannot write variable-length strings safely).
NONFINITE_BYTES = np.dtype(BATCH.nonfinite.dtype).itemsize
PARAM_NAMES_BYTES = np.dtype(BATCH.params_without_grad.dtype).itemsize
#: Reason codes are int8.
MAX_REASONS = 127


class RecordingError(ValueError):
    """A file that cannot be read as a recording; the message names the file and the problem."""


# ---------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class RecordingLayout:
    """What every batch of one recording shares (fixed when the file is created)."""

    width: int
    height: int
    depth: int
    planes: int
    bins: int
    reason_names: tuple[str, ...] = REASON_NAMES

    @property
    def lattice_shape(self) -> tuple[int, int, int]:
        return (self.width, self.height, self.depth)


@dataclass(frozen=True)
class Spec:
    group: str          # "batches", "steps" or "flows"
    trailing: tuple[int, ...]
    dtype: str
    chunk_rows: int
    compressed: bool


#: Step figures stored as ``steps/<key>`` and read back into StepAggregates, with their
#: trailing-shape codes (the per-step plane images, ``steps/plane_energy``, are stored apart).
STEP_TRAILING = {f.key: f.trailing for f in STEP if f is not STEP.plane_energy_steps}
#: StepAggregates fields that may be None (stored as NaN rows).
OPTIONAL_STEP_FIELDS = tuple(f.key for f in STEP if f.optional and f is not STEP.plane_energy_steps)
FLOW_FIELDS = {"flow_id": "i8", "parent_id": "i8", "sample_index": "i4", "birth_step": "i4",
               "end_step": "i4", "reason": "i1"}
def figure_columns(layout: "RecordingLayout") -> dict[str, tuple[str, tuple[int, ...]]]:
    """Per-batch figure columns (declared in :data:`energy_flow.trace.figures.BATCH` with
    ``recorded=True``): dtype and trailing shape, by key."""
    dims = Dims(planes=layout.planes, bins=layout.bins, height=layout.height, width=layout.width)
    return {f.key: (f.dtype, dims.shape(f.trailing)) for f in recorded_batch_figures()}


#: The recording schema version that introduced each dataset not in version 1 (the readers
#: accept a file of an older version without them).
DATASET_SINCE = {
    **{f.dataset: f.since_schema for f in STEP if f.since_schema > 1},
    **{f"batches/{f.key}": f.since_schema for f in recorded_batch_figures() if f.since_schema > 1},
    "batches/has_plane_energy_steps": 2,
}


def specs(layout: RecordingLayout) -> dict[str, Spec]:
    """Every dataset of the current schema, by path."""
    p = layout.planes
    dims = Dims(planes=p, bins=layout.bins, height=layout.height, width=layout.width)
    out: dict[str, Spec] = {}
    table = {"complete": ("u1", ()), **figure_columns(layout),
             "num_steps": ("i4", ()), "total_flows": ("i8", ()), "lattice_shape": ("i4", (3,)),
             "start_mode": (f"S{START_MODE_BYTES}", ()), "plane_z": ("f8", (p,)),
             "input_energy_range": ("f8", (2,)), "energy_bin_edges": ("f4", (layout.bins + 1,)),
             "step_start": ("i8", ()), "has_flows": ("u1", ()), "flow_start": ("i8", ()),
             "num_flows": ("i8", ()), "point_start": ("i8", ()), "sample_total_flows": ("i8", ()),
             "traced_samples": ("i4", ()), "has_plane_energy_steps": ("u1", ())}
    for name, (dtype, trailing) in table.items():
        # Uncompressed: these chunks are rewritten in place by later batches, and an in-place
        # rewrite of an uncompressed chunk leaves the bytes of committed rows unchanged.
        out[f"batches/{name}"] = Spec("batches", trailing, dtype, TABLE_CHUNK, False)
    plane = (p, layout.height, layout.width)
    out["batches/plane_energy"] = Spec("batches", plane, "f4", 1, True)
    out["batches/plane_reached"] = Spec("batches", plane, "f4", 1, True)
    for f in STEP:
        chunk = PLANE_STEP_CHUNK if f is STEP.plane_energy_steps else STEP_CHUNK
        out[f.dataset] = Spec("steps", dims.shape(f.trailing), f.dtype, chunk, True)
    for name, dtype in FLOW_FIELDS.items():
        out[f"flows/{name}"] = Spec("flows", (), dtype, FLOW_CHUNK, True)
    out["flows/positions"] = Spec("flows", (3,), "f4", POINT_CHUNK, True)
    out["flows/energy"] = Spec("flows", (), "f4", POINT_CHUNK, True)
    return out


def reason_names_from_config(config: Mapping[str, Any], source: str = "config") -> tuple[str, ...]:
    """The recording's reason names: ``config["reason_names"]`` when a model named its own
    (the four built-in names first, then its own, codes 4, 5, …), else the built-in four."""
    names = config.get("reason_names", REASON_NAMES)
    if (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names)
            or tuple(names[:len(REASON_NAMES)]) != REASON_NAMES or len(set(names)) != len(names)
            or len(names) > MAX_REASONS):
        raise ValueError(f"{source}: reason_names must be unique non-empty strings starting with "
                         f"{list(REASON_NAMES)} (at most {MAX_REASONS}), got {names!r}")
    return tuple(names)


def layout_from_config(config: Mapping[str, Any], source: str = "config") -> RecordingLayout:
    """The recording's dimensions from its config dict.

    Any other model's dict gives ``lattice_shape`` ``[W, H, D]``, ``plane_z`` (z of each output
    plane) and ``energy_hist_bins``; a dict without ``lattice_shape`` must be an
    :class:`~energy_flow.config.EnergyConfig` dict and is validated as one.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: config must be a dict, got {type(config).__name__}")
    if "lattice_shape" not in config and "lattice_width" in config:
        from energy_flow.config import EnergyConfig  # torch-free; imported only when needed
        c = EnergyConfig.from_dict(dict(config), source=source)
        return RecordingLayout(c.lattice_width, c.lattice_height, c.lattice_depth,
                               c.num_output_planes, c.energy_hist_bins)
    for key, what in (("lattice_shape", "[width, height, depth]"), ("plane_z", "z of each output plane"),
                      ("energy_hist_bins", "number of energy histogram bins")):
        if key not in config:
            raise ValueError(f"{source}: config needs {key!r} ({what})")
    shape = config["lattice_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in shape)):
        raise ValueError(f"{source}: lattice_shape must be three integers ≥ 2, got {shape!r}")
    planes = config["plane_z"]
    if (not isinstance(planes, (list, tuple)) or not planes
            or not all(isinstance(z, (int, float)) and not isinstance(z, bool) and -1 <= z <= 1
                       for z in planes)):
        raise ValueError(f"{source}: plane_z must be a non-empty list of numbers in [-1, 1], got {planes!r}")
    bins = config["energy_hist_bins"]
    if isinstance(bins, bool) or not isinstance(bins, int) or bins <= 0:
        raise ValueError(f"{source}: energy_hist_bins must be a positive integer, got {bins!r}")
    return RecordingLayout(shape[0], shape[1], shape[2], len(planes), bins,
                           reason_names_from_config(config, source))


def align(n: int, chunk: int) -> int:
    return -(-n // chunk) * chunk


def count_complete(flags: np.ndarray) -> int:
    """Batches committed: the leading run of ``complete == 1``."""
    incomplete = np.flatnonzero(flags != 1)
    return int(incomplete[0]) if incomplete.size else int(flags.shape[0])


def check_root(f: h5py.File, path: Path) -> int:
    """Check the format marker and schema version; returns the version."""
    marker = f.attrs.get("format")
    if isinstance(marker, bytes):
        marker = marker.decode("utf-8", "replace")
    if not isinstance(marker, str) or marker != FORMAT:
        found = "no format marker" if marker is None else f"format marker {str(marker)[:60]!r}"
        raise RecordingError(f"{path}: not an energy-flow recording ({found}, expected {FORMAT!r})")
    version = f.attrs.get("schema_version")
    if version is None:
        raise RecordingError(f"{path}: missing attribute 'schema_version'")
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        raise RecordingError(f"{path}: attribute 'schema_version' must be one integer, got "
                             f"{str(version)[:60]!r}")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise RecordingError(f"{path}: schema version {version} is newer than this program's "
                             f"{SCHEMA_VERSION}; upgrade energy-flow-studio")
    if version < 1:
        raise RecordingError(f"{path}: invalid schema version {version}")
    return version


def load_json_attr(f: h5py.File, name: str, path: Path) -> dict:
    if name not in f.attrs:
        raise RecordingError(f"{path}: missing attribute {name!r}")
    try:
        value = json.loads(f.attrs[name])
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"{path}: attribute {name!r} is not valid JSON ({exc})") from None
    except RecursionError:
        raise RecordingError(f"{path}: attribute {name!r} is not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise RecordingError(f"{path}: attribute {name!r} must hold a JSON object")
    return value
