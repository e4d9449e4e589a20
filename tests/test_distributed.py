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


def batch_figures(report) -> dict:
    """The figures of a report that describe the whole batch's flows (counts, shares, spreads)."""
    fs, agg = report.flow_stats, report.telemetry.aggregates
    return {"placed": fs.initial_flows, "requested": fs.requested, "granted": fs.spawned,
            "denied": fs.denied, "landed": fs.landed, "faded": fs.faded, "timed_out": fs.timed_out,
            "landed_fraction": fs.landed_fraction, "total_flows": report.telemetry.total_flows,
            "step_requested": agg.spawn_requested.tolist(), "step_granted": agg.spawn_granted.tolist(),
            "active": agg.active.tolist(), "coverage": agg.coverage.tolist(),
            "deposited": agg.deposited_energy.tolist(), "output_spread": report.output_spread}


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
        reports = []
        history = trainer.run_steps(x, y, BatchSampler(12, config.batch_size, config.seed), STEPS,
                                    progress=False, on_report=reports.append)
        torch.save({"loss": history.loss, "figures": [batch_figures(r) for r in reports],
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
    reports = []
    history = trainer.run_steps(x, y, BatchSampler(12, config.batch_size, config.seed), STEPS, progress=False,
                                on_report=reports.append)
    one = [batch_figures(r) for r in reports]

    for r in ranks:
        np.testing.assert_allclose(r["loss"], history.loss, rtol=1e-5)
        # Every rank reports the whole global batch's figures, as the one process with two
        # micro-batches does — not its own share (issue 27: no figure mixes sources).
        for got, want in zip(r["figures"], one):
            assert set(got) == set(want)
            for key in want:
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float),
                                           rtol=1e-4, atol=1e-5, err_msg=key)
            assert got["granted"] <= got["requested"] and got["placed"] == 4 * 36
        for name, p in trainer.processor.named_parameters():
            torch.testing.assert_close(r["weights"][name], p.detach(), rtol=1e-4, atol=1e-6, msg=name)
    for name in ranks[0]["weights"]:  # the ranks agree exactly with each other
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name


def test_torchrun_headless_run_trains_on_two_ranks_and_only_rank_0_writes(tmp_path):
    """The README's torchrun command, on two Gloo CPU processes, with the progress bar on and each
    rank's output kept apart (torchrun --redirects): both train, rank 0 alone prints, draws one
    progress bar and writes the summary and checkpoint; rank 1 writes nothing at all. The summary's
    losses are the global batches', and it says the run was spread over 2 Gloo processes. Guards
    against ranks racing on the output files, two progress bars interleaving, a summary that does
    not say it was distributed, and the headless runner ignoring torchrun's environment."""
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    x, y = data()
    np.savez(tmp_path / "emb.npz", inputs=x.numpy(), targets=y.numpy())
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "--log-dir", str(logs), "--redirects", "3", str(root / "main.py"),
           "--headless", "--preset", "tiny", "--device", "cpu", "--data", str(tmp_path / "emb.npz"),
           "--batches", "2", "--summary", str(tmp_path / "s.json"), "--checkpoint", str(tmp_path / "c.pt")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    def rank_log(rank: int, stream: str) -> str:
        (path,) = logs.glob(f"*/attempt_0/{rank}/{stream}.log")
        return path.read_text()

    out0, err0 = rank_log(0, "stdout"), rank_log(0, "stderr")
    assert "× 2 processes (gloo)" in out0
    assert out0.count("summary written") == 1 and out0.count("checkpoint written") == 1
    assert "batch     2" in out0
    # one bar: tqdm draws it from 0 % once, and finishes it once
    assert len(re.findall(r"(?:^|\r)\s*0%\|", err0)) == 1, err0
    assert err0.count("2/2 [") >= 1
    assert rank_log(1, "stdout") == "" and rank_log(1, "stderr") == ""

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    assert all(np.isfinite(summary["losses"]))
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["rank_devices"] == ["cpu", "cpu"]
