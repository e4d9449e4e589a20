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
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def memory_text(device: torch.device) -> str | None:
    """The status bar's GPU memory line: in use now and the peak since start (both what torch's
    allocator handed out), against the card's size; None on a CPU, which has no such counter."""
    if device.type != "cuda":
        return None
    gib = 2**30
    total = torch.cuda.get_device_properties(device).total_memory
    return (f"GPU memory {torch.cuda.memory_allocated(device) / gib:.1f} GiB in use, "
            f"peak {torch.cuda.max_memory_allocated(device) / gib:.1f} GiB of {total / gib:.0f} GiB")


def out_of_memory_advice(config) -> str:
    """What to lower after an out-of-memory error, with the current values named."""
    advice = (f"lower batch_size (now {config.batch_size}) or max_active_flows (now "
              f"{config.resolved_max_active_flows:,})")
    if config.checkpoint_steps < 2:
        advice += f", or set checkpoint_steps ≥ 2 (now {config.checkpoint_steps}) to recompute steps in backward"
    return advice
