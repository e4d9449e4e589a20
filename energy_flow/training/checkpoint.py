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

from energy_flow.atomic import write_bytes_atomic
from energy_flow.config import EnergyConfig, resolve_mapper_grid
from energy_flow.errors import reason

CHECKPOINT_VERSION = 1
FORMAT = "energy-flow-checkpoint"

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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, checked; ValueError (one line, naming the file) otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise ValueError(f"checkpoint {path} was refused: it holds objects other than tensors and "
                             "plain data, and loading them could run code from the file") from None
        raise ValueError(f"checkpoint {path} cannot be read: {reason(exc)}") from None
    except Exception as exc:  # torch raises many types for a damaged file; name the file
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason(exc)})") from None
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
    _check_weights(path, data["model"])
    return data


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
