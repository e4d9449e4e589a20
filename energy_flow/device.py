"""Choosing the torch device and the CPU thread budget."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU. Asking for CUDA without one is an error, not a
    silent switch to the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device "
                         f"(torch {torch.__version__}); use device 'cpu' or 'auto'")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"
