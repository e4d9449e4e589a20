"""Checkpoints: atomic writes, safe reads, and a compatibility check that names what differs.

A checkpoint is a file a user may have been handed, so reading one never executes code from
it: it is loaded with ``torch.load(weights_only=True)``, which unpickles tensors and plain
data only (everything :meth:`EnergyTrainer.state_dict` writes is of those kinds: the RNG state
is a tensor, the config a dict of plain values). A file that asks for anything else is refused
before any of it runs. What is read is then checked — every key present, every weight finite —
so a damaged or hostile file ends in one line naming the file and what is wrong, never in a
traceback or a model silently loaded with NaN weights.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from energy_flow.files.atomic import write_bytes_atomic
from energy_flow.config import EnergyConfig, resolve_mapper_grid
from energy_flow.files.errors import reason
from energy_flow.files.input_paths import open_regular
from energy_flow.training.checkpoint_integrity import (CHECKSUM_KEY, FORMAT, nonfinite_entries,
                                                       state_digest)

#: Version 2 added the checksum (``checkpoint_integrity``); version-1 files load without one.
CHECKPOINT_VERSION = 2

#: Fields that decide the shapes of the model's parameters: a checkpoint can only be loaded
#: into a model that agrees on all of them.
#: ``readout_init`` is among them although no shape depends on it: it sets the output mapper's
#: fixed gain, so weights trained with one value give wrong outputs under the other.
#: ``mapper_grid`` is compared as the grid in use (``resolved_mapper_grid``): a grid that
#: follows the lattice and a grid set to the same size make the same weights.
SHAPE_FIELDS = ("lattice_width", "lattice_height", "start_mode", "carrier_hidden_size",
                "carrier_num_layers", "neuron_hidden_dim", "neuron_output_dim", "energy_dim",
                "mapper_grid", "teacher_dim", "max_spawn_per_step", "payload_update", "readout_init")
#: A field a checkpoint does not name was at its default when it was written (older versions).
_DEFAULTS = EnergyConfig().to_dict()

#: Every key a checkpoint must hold, with the type its value must have.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "config": dict, "model": dict, "optimizer": dict, "scheduler": dict, "step_count": int,
    "plateau_window": list, "torch_rng": torch.Tensor,
}


def incompatible_fields(saved: dict[str, Any], config: EnergyConfig) -> list[str]:
    current, saved = _shape_values(config.to_dict()), _shape_values(saved)
    return [f"{name} (checkpoint {saved[name]!r}, model {current[name]!r})"
            for name in SHAPE_FIELDS if saved[name] != current[name]]


def _shape_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The shape fields of a config dict, unnamed ones at their defaults, the grid as used."""
    values = {name: fields.get(name, _DEFAULTS[name]) for name in (*SHAPE_FIELDS, "mapper_grid_max")}
    values["mapper_grid"] = resolve_mapper_grid(values.pop("mapper_grid"), values.pop("mapper_grid_max"),
                                                values["lattice_width"], values["lattice_height"])
    return values


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save so that a crash mid-write never leaves a half-written checkpoint under ``path``.

    The checkpoint is serialised in memory first and then written with plain file writes, so
    a full disk is reported as the OSError it is (``cannot write checkpoint PATH: No space
    left on device``) rather than as torch's RuntimeError from inside its zip writer. The cost
    is one in-memory copy of the checkpoint while it is written.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer(), "checkpoint")


class NonFiniteStateError(ValueError):
    """The model or optimizer holds NaN/inf: saving it would replace a good checkpoint with a
    broken one, so it is not saved. ``detail`` names what is non-finite."""

    def __init__(self, path: str | Path, detail: str):
        super().__init__(f"checkpoint {path} not written: {detail}")
        self.detail = detail


def write_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Save a trainer's ``state`` atomically with its checksum, unless it holds a non-finite
    value: then :class:`NonFiniteStateError`, and the file at ``path`` keeps what it held."""
    bad = nonfinite_entries({"model": state["model"], "optimizer": state["optimizer"]}, "")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteStateError(path, f"the model holds non-finite values in {', '.join(bad[:3])}{more}")
    atomic_torch_save({**state, CHECKSUM_KEY: state_digest(state)}, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, checked; ValueError (one line, naming the file) otherwise."""
    path = Path(path)
    with open_regular(path, "checkpoint") as fh:   # never a FIFO, a device or a directory
        data = _load(path, fh)
    _check(path, data)
    return data


def _load(path: Path, fh) -> Any:
    try:
        return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise ValueError(f"checkpoint {path} was refused: it holds objects other than tensors and "
                             "plain data, and loading them could run code from the file") from None
        raise ValueError(f"checkpoint {path} cannot be read: {reason(exc)}") from None
    except Exception as exc:  # torch raises many types for a damaged file; name the file
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason(exc)})") from None


def _check(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an energy-flow checkpoint")
    version = data.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {version!r}, newer than this "
                         f"program's {CHECKPOINT_VERSION}")
    for key, kind in REQUIRED_KEYS.items():
        if key not in data:
            raise ValueError(f"checkpoint {path} lacks the key {key!r}; it is damaged or incomplete")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ValueError(f"checkpoint {path}: key {key!r} holds a {type(data[key]).__name__}, "
                             f"expected {getattr(kind, '__name__', kind)}")
    if version >= 2:
        stored = data.get(CHECKSUM_KEY)
        if not isinstance(stored, str):
            raise ValueError(f"checkpoint {path} lacks its checksum; it is damaged or incomplete")
        if stored != state_digest(data):
            raise ValueError(f"checkpoint {path} fails its checksum: its contents changed after it was "
                             "written (a damaged copy or disk); refusing to resume from it")
    _check_weights(path, data["model"])
    _check_optimizer(path, data["optimizer"])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data["plateau_window"]):
        raise ValueError(f"checkpoint {path}: plateau_window must hold numbers only")


def _check_weights(path: Path, model: dict[str, Any]) -> None:
    """Every entry a tensor and every floating weight finite; else name the parameter."""
    for name, value in model.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint {path}: model entry {name!r} is a {type(value).__name__}, "
                             "expected a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise ValueError(f"checkpoint {path}: parameter {name!r} holds {count} non-finite "
                             f"value(s) (NaN or inf); refusing to resume from it")


def _check_optimizer(path: Path, optimizer: dict[str, Any]) -> None:
    """The optimizer's per-parameter state: tensors and numbers only, every value finite (a
    non-finite moment resumed turns the weights to NaN a few batches later)."""
    state = optimizer.get("state", {})
    if not isinstance(state, dict) or not isinstance(optimizer.get("param_groups"), list):
        raise ValueError(f"checkpoint {path}: optimizer must hold a 'state' dict and a 'param_groups' list")
    for key, entry in state.items():
        if not isinstance(entry, dict) or not all(
                isinstance(v, (torch.Tensor, int, float)) and not isinstance(v, bool) for v in entry.values()):
            raise ValueError(f"checkpoint {path}: optimizer state {key!r} must map names to tensors or numbers")
    bad = nonfinite_entries(state, "optimizer state")
    if bad:
        raise ValueError(f"checkpoint {path}: {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''} "
                         "(NaN or inf); refusing to resume from it")
