"""Checkpoints: atomic writes and a compatibility check that names what differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from energy_flow.atomic import atomic_write
from energy_flow.config import EnergyConfig

CHECKPOINT_VERSION = 1

#: Fields that decide the shapes of the model's parameters: a checkpoint can only be loaded
#: into a model that agrees on all of them.
SHAPE_FIELDS = ("lattice_width", "lattice_height", "start_mode", "carrier_hidden_size",
                "carrier_num_layers", "neuron_hidden_dim", "neuron_output_dim", "energy_dim",
                "mapper_grid", "teacher_dim", "max_spawn_per_step", "payload_update")


def incompatible_fields(saved: dict[str, Any], config: EnergyConfig) -> list[str]:
    current = config.to_dict()
    return [f"{name} (checkpoint {saved.get(name)!r}, model {current[name]!r})"
            for name in SHAPE_FIELDS if saved.get(name) != current[name]]


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save so that a crash mid-write never leaves a half-written checkpoint under ``path``."""
    with atomic_write(path, "checkpoint") as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a damaged file; name the file
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != "energy-flow-checkpoint":
        raise ValueError(f"{path} is not an energy-flow checkpoint")
    if data.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {data['version']}, newer than this "
                         f"program's {CHECKPOINT_VERSION}")
    return data
