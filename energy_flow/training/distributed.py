"""Data-parallel training over several processes (``torchrun``): DistributedDataParallel with
NCCL on GPUs and Gloo on CPUs.

``torchrun --nproc_per_node N main.py --headless …`` starts N copies of the headless trainer;
each finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). Every rank draws the same global batch (the sampler is a pure
function of seed and step) and trains on its own contiguous share of it; DDP averages the
gradients, and each rank's loss is weighted by its share so the averaged gradient is that of
the global batch's mean loss. A rank's share is one forward pass with its own flow budget
(``max_active_flows``), exactly like a micro-batch of ``grad_accumulation_steps``: N ranks
train as one process with N micro-batches does.

Every rank takes the same decisions: losses are all-reduced before they are reported, and the
non-finite flag is all-reduced before the update, so all ranks skip (and the headless run
stops) on the same step. Every rank's telemetry is gathered and merged by the figures'
declared rules (``energy_flow.trace.figures``), and the output spread is measured over every
rank's outputs, so what rank 0 reports, records and judges is the whole global batch. Only rank 0 writes checkpoints, summaries and recordings, and only rank 0
draws a progress bar and prints.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from energy_flow.config import EnergyConfig
from energy_flow.core import FlowProcessor
from energy_flow.trace.batch_trace import BatchTrace
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.trainer import EnergyTrainer


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(config: EnergyConfig) -> tuple[DistributedContext, EnergyConfig]:
    """Join the process group torchrun described; returns the context and the config with this
    rank's device (``cuda:LOCAL_RANK`` on GPUs). NCCL needs one GPU per rank."""
    world = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank {rank}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                             f"CUDA device(s); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        config = config.replace(device=f"cuda:{local_rank}")
    elif config.device == "auto":
        config = config.replace(device="cpu")
    backend = "nccl" if wants_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend), config


def rank_devices(device: torch.device) -> list[str]:
    """Every rank's device, in rank order (a collective: every rank must call it)."""
    devices: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(devices, str(device))
    return [str(d) for d in devices]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DistributedTrainer(EnergyTrainer):
    """An :class:`EnergyTrainer` whose forward runs through DDP on this rank's batch share."""

    def __init__(self, processor: FlowProcessor, config: EnergyConfig, context: DistributedContext):
        super().__init__(processor, config)
        self.context = context
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's weights here, so every rank starts from the same model.
        self.forward_module = DistributedDataParallel(self.processor, device_ids=device_ids)
        self._global_batch = 0

    # ------------------------------------------------------------------ the trainer's hooks
    def share(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (``tensor_split``: sizes differ by ≤ 1)."""
        return indices.tensor_split(self.context.world_size)[self.context.rank]

    def _micro_context(self, last: bool):
        # Gradients are all-reduced once, on the last micro-batch of the step.
        return contextlib.nullcontext() if last else self.forward_module.no_sync()

    def _loss_weight(self, local_batch: int) -> float:
        # DDP divides the summed gradients by the world size; weighting each rank's mean loss by
        # world · local / global turns that average into the gradient of the global mean.
        if not self._global_batch:
            raise ValueError("DistributedTrainer: train with train_global_step or run_steps, which "
                             "give every rank its share of the same global batch")
        return self.context.world_size * local_batch / self._global_batch

    def _reduce_losses(self, losses: torch.Tensor, local_batch: int) -> torch.Tensor:
        losses = losses * (local_batch / self._global_batch)
        dist.all_reduce(losses)
        return losses

    def _agree_nonfinite(self, nonfinite: str | None) -> str | None:
        if nonfinite is None and self.any_rank(False):
            return "non-finite on another rank"
        if nonfinite is not None:
            self.any_rank(True)
        return nonfinite

    def _ranks(self) -> int:
        return self.context.world_size

    def _whole_batch_rows(self, rows: torch.Tensor) -> torch.Tensor:
        # Shares differ in size by up to one row, which all_gather of tensors cannot take.
        parts: list = [None] * self.context.world_size
        dist.all_gather_object(parts, rows.detach().cpu())
        return torch.cat(parts).to(rows.device)

    def _gather_traces(self, trace: BatchTrace) -> list[BatchTrace]:
        # Every rank's trace (host numpy, small), so rank 0 reports the whole global batch.
        parts: list = [None] * self.context.world_size
        dist.all_gather_object(parts, trace)
        return parts

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (a collective: every rank must call it)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value) > 0

    # ------------------------------------------------------------------ one global batch
    def train_global_step(self, inputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor):
        """One optimisation step on this rank's share of the global batch ``indices``."""
        self._global_batch = int(indices.shape[0])
        mine = self.share(indices)
        return self.train_step((inputs[mine], targets[mine], mine))

    def run_steps(self, inputs, targets, sampler: BatchSampler, count: int, progress: bool = True,
                  on_report=None):
        return self._loop(inputs, targets, sampler, count, progress and self.context.is_main, on_report,
                          step_fn=lambda idx: self.train_global_step(inputs, targets, idx))
