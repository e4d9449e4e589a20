"""What the training worker loads and restores, kept apart from its slots: the dataset, a
model from a checkpoint, and the device's memory after a batch.

Functions only, run in the worker thread; they report progress through the ``status``
callable they are given and raise one-line errors naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from energy_flow.config import EnergyConfig
from energy_flow.runtime.device import describe_device, memory_text
from energy_flow.training.checkpoint import read_checkpoint
from energy_flow.training.data import EMBEDDING_SUFFIXES, PairDataset, build_dataset
from energy_flow.training.trainer import EnergyTrainer, build_model


def load_dataset(source: str | None, teacher_path: str | None, status: Callable[[str], None]) -> PairDataset:
    """Precomputed embeddings (``.npz``/``.pt``) as they are, else texts through the teacher."""
    if source is not None and Path(source).suffix.lower() in EMBEDDING_SUFFIXES:
        status(f"loading precomputed embeddings from {source}…")
        return build_dataset(source)
    from energy_flow.training.embedding_cache import default_cache_dir
    from energy_flow.training.teacher import TeacherEncoder

    status("loading teacher model…")
    teacher = TeacherEncoder(teacher_path, device="cpu", cache_dir=default_cache_dir())
    cache = f"; cache {teacher.cache.directory.parent}" if teacher.cache is not None else ""
    status(f"embedding corpus… ({source or 'bundled corpus'} through {teacher.name}{cache})")
    dataset = build_dataset(source, teacher=teacher)
    stats = teacher.last_stats
    if stats is not None:
        status(f"embedded {stats.unique} distinct texts: {stats.from_cache} from the cache, "
               f"{stats.encoded} by the teacher")
    return dataset


def trainer_from_checkpoint(path: str, current: EnergyConfig, data_dim: int) -> EnergyTrainer:
    """A trainer with the checkpoint's config and weights, on the current run's device.

    The checkpoint's own config rebuilds the model (its lattice and widths must match the
    weights); only the device is the current run's, since a checkpoint saved on a GPU box must
    open on a laptop. ValueError (one line, naming the file) when it cannot be used here.
    """
    data = read_checkpoint(path)
    config = EnergyConfig.from_dict(data["config"], source=path).replace(device=current.device)
    if config.teacher_dim != data_dim:
        raise ValueError(f"checkpoint {path} was trained on {config.teacher_dim}-d embeddings; "
                         f"the data here has {data_dim}")
    trainer = EnergyTrainer(build_model(config), config)
    trainer.load_checkpoint(path)
    return trainer


def device_resources(device: torch.device) -> dict:
    """What the ``resources`` signal carries: the device in words and, on CUDA, memory in bytes."""
    info: dict = {"device": describe_device(device), "cuda_memory_allocated": None,
                  "cuda_memory_reserved": None, "memory_text": memory_text(device)}
    if device.type == "cuda":
        info["cuda_memory_allocated"] = int(torch.cuda.memory_allocated(device))
        info["cuda_memory_reserved"] = int(torch.cuda.memory_reserved(device))
    return info
