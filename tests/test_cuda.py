"""The mixed-precision and CUDA paths of a train step.

On CUDA the trainer runs the forward pass under bf16 autocast while the flow state (positions,
energies, payloads, GRU states) stays float32: the model casts the mapper's and the carrier's
outputs back (``.float()`` in processor.py and carrier.py), so energies near the thresholds and
positions near the planes are not rounded to 8 bits of mantissa step after step.

Tests marked ``cuda`` need a GPU and are skipped where torch sees none (tests/conftest.py); run
them on a GPU machine with ``python -m pytest -m cuda``. The first test checks the same casts
without a GPU, under CPU bf16 autocast, so the float32 contract is guarded on every machine.

Tolerances of the GPU/CPU comparisons: measured on the 2-core build machine, a bf16-autocast
step (CPU autocast) differed from the float32 step by at most 7e-4 in relative loss, 1 % in
gradient norm, and ≥ 0.9975 in the cosine of each output embedding, over six seeds. The GPU
bounds below are about 30× (loss) and 10× (output cosine, gradient norm) those margins, as bf16
kernels and the cuDNN GRU round differently from the CPU; a float32 GPU step (TF32 off) must
match the CPU step far more tightly.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.core.lattice import FlowState
from energy_flow.training import EnergyTrainer, build_model

STATE_FLOATS = ("pos", "energy", "payload", "hidden")


def _trainer(device: str) -> EnergyTrainer:
    c = create_tiny_config(batch_size=8, max_active_flows=800, device=device)
    return EnergyTrainer(build_model(c), c)


def _probe(trainer: EnergyTrainer, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Record, during the trainer's next step, the dtype of every floating flow-state field at
    every propagation step and the dtype the carrier's energy head computed in."""
    seen: dict = {"state": set(), "head": set(), "steps": 0}
    processor = trainer.processor
    original_step = processor.step

    def step(state: FlowState, *args):
        seen["state"].update((name, getattr(state, name).dtype) for name in STATE_FLOATS)
        new = original_step(state, *args)
        seen["state"].update((name, getattr(new, name).dtype) for name in STATE_FLOATS)
        seen["steps"] += 1
        return new

    monkeypatch.setattr(processor, "step", step)
    processor.carrier.energy_head.register_forward_hook(
        lambda module, args, out: seen["head"].add(out.dtype))
    return seen


def _assert_bf16_step_with_float32_state(trainer, pairs, monkeypatch) -> None:
    seen = _probe(trainer, monkeypatch)
    report = trainer.train_step(pairs)
    assert seen["steps"] > 0
    assert seen["head"] == {torch.bfloat16}, seen["head"]             # autocast really was on
    assert seen["state"] == {(n, torch.float32) for n in STATE_FLOATS}, seen["state"]
    assert not report.skipped and report.nonfinite is None
    for value in (report.loss, report.mse, report.cosine_loss, report.grad_norm):
        assert math.isfinite(value)
    assert report.outputs.dtype == np.float32 and np.isfinite(report.outputs).all()
    for name, p in trainer.processor.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name


def test_bf16_autocast_step_keeps_float32_flow_state_on_cpu(pairs8, monkeypatch):
    """The trainer's autocast context, made CPU bf16 autocast, with everything else as on a GPU.
    Guards against dropping the float32 casts of the flow state (planted: no ``.float()`` on the
    input mapper's energies and parts, which makes the state bf16 under autocast)."""
    trainer = _trainer("cpu")
    monkeypatch.setattr(trainer, "_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    _assert_bf16_step_with_float32_state(trainer, pairs8, monkeypatch)


@pytest.mark.cuda
def test_cuda_train_step_uses_bf16_autocast_with_finite_losses_and_float32_state(pairs8, monkeypatch):
    trainer = _trainer("cuda")
    assert trainer.device.type == "cuda" and trainer.use_autocast
    assert all(p.device.type == "cuda" for p in trainer.processor.parameters())
    _assert_bf16_step_with_float32_state(trainer, pairs8, monkeypatch)
    assert trainer.step_count == 1


@pytest.mark.cuda
def test_cuda_train_step_matches_the_cpu_step(pairs8, monkeypatch):
    """Same seed, same batch: one step on the CPU (float32) and on CUDA, first in float32 (TF32
    off), then under bf16 autocast as the trainer runs it. Guards against a device mix-up (a
    buffer or the flow state left on the CPU, a stale autocast cast) that still gives finite
    but different numbers."""
    cpu = _trainer("cpu").train_step(pairs8)

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    fp32 = _trainer("cuda")
    fp32.use_autocast = False
    exact = fp32.train_step(pairs8)
    assert exact.device.startswith("cuda")
    assert exact.loss == pytest.approx(cpu.loss, rel=1e-3)
    np.testing.assert_allclose(exact.outputs, cpu.outputs, rtol=1e-2, atol=1e-3)

    bf16 = _trainer("cuda").train_step(pairs8)
    assert bf16.loss == pytest.approx(cpu.loss, rel=2e-2)
    assert bf16.grad_norm == pytest.approx(cpu.grad_norm, rel=0.1)
    cosine = (bf16.outputs * cpu.outputs).sum(1) / (
        np.linalg.norm(bf16.outputs, axis=1) * np.linalg.norm(cpu.outputs, axis=1))
    assert cosine.min() > 0.98, cosine
    assert bf16.flow_stats.initial_flows == cpu.flow_stats.initial_flows


@pytest.mark.cuda
def test_gpu_memory_is_reported_after_a_step(pairs8):
    """The status bar's GPU memory line (energy_flow.runtime.device.memory_text) and the worker's
    resource probe report real figures after a step on a GPU: in use at least the model's
    weights, peak at least that, the card named. Guards against a line that is None or 0 GiB
    on a GPU (a CPU device passed, or the counters read before the model was moved)."""
    import re

    from energy_flow.runtime.device import describe_device, memory_text

    trainer = _trainer("cuda")
    trainer.train_step(pairs8)
    dev = trainer.device
    params = sum(p.numel() * p.element_size() for p in trainer.processor.parameters())
    allocated, peak = torch.cuda.memory_allocated(dev), torch.cuda.max_memory_allocated(dev)
    assert peak >= allocated >= params > 0
    text = memory_text(dev)
    gib = 2**30
    numbers = [float(v) for v in re.findall(r"(\d+(?:\.\d+)?) GiB", text)]
    assert len(numbers) == 3, text
    assert numbers[0] == pytest.approx(allocated / gib, abs=0.06)
    assert numbers[1] >= numbers[0]
    assert numbers[2] == round(torch.cuda.get_device_properties(dev).total_memory / gib)
    assert torch.cuda.get_device_properties(dev).name in describe_device(dev)
    if importlib.util.find_spec("PyQt6") is not None:  # the app's worker (absent on GPU boxes)
        from app.sources.loading import device_resources

        info = device_resources(dev)
        assert info["cuda_memory_reserved"] >= info["cuda_memory_allocated"] >= params
        assert info["memory_text"] is not None and info["memory_text"].startswith("GPU memory")
