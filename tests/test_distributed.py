"""Data-parallel training: two Gloo processes on the CPU train exactly as one process does."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from energy_flow.config import create_tiny_config
from energy_flow.training import build_model
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.trainer import EnergyTrainer
from tests.conftest import unit_rows

STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data():
    return unit_rows(12, seed=1), unit_rows(12, seed=2)


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from energy_flow.training import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context, config = distributed.init_from_env(create_tiny_config(device="cpu"))
    try:
        trainer = distributed.DistributedTrainer(build_model(config), config, context)
        x, y = data()
        history = trainer.run_steps(x, y, BatchSampler(12, config.batch_size, config.seed), STEPS,
                                    progress=False)
        torch.save({"loss": history.loss,
                    "weights": {n: p.detach() for n, p in trainer.processor.named_parameters()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def test_two_gloo_ranks_match_one_process_on_the_same_global_batches(tmp_path):
    """Each rank trains on half of every global batch of 4; DDP averages the gradients. One
    process with two micro-batches per step (the same flow budget per forward pass) must reach the
    same losses and weights. Guards against: ranks drawing different batches, a share weighted
    wrongly (gradient of a different loss), losses reported per rank instead of for the global
    batch, weights diverging between ranks."""
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]

    config = create_tiny_config(device="cpu", grad_accumulation_steps=2)
    trainer = EnergyTrainer(build_model(config), config)
    x, y = data()
    history = trainer.run_steps(x, y, BatchSampler(12, config.batch_size, config.seed), STEPS, progress=False)

    for r in ranks:
        np.testing.assert_allclose(r["loss"], history.loss, rtol=1e-5)
        for name, p in trainer.processor.named_parameters():
            torch.testing.assert_close(r["weights"][name], p.detach(), rtol=1e-4, atol=1e-6, msg=name)
    for name in ranks[0]["weights"]:  # the ranks agree exactly with each other
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
