"""Memory of a training step: recomputation changes no value, and the bytes it keeps for
backward fit the optimized preset in 32 GB.

Saved bytes are counted with :class:`energy_flow.memory.saved.SavedTensorLedger` (autograd's
saved-tensor hooks, one count per storage), which is deterministic and device-independent for a
given dtype, so the 32 GB figure is checked here on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from energy_flow.config import create_optimized_config, create_tiny_config
from energy_flow.core import processor as processor_module
from energy_flow.memory.saved import HIDDEN_REGION, SavedTensorLedger, flow_steps
from energy_flow.training import build_model
from energy_flow.training.trainer import EnergyTrainer, embedding_losses
from tests.conftest import unit_rows

GB = 1e9


def forward_backward(config, x, y):
    model = build_model(config)
    result = model(x)
    loss = embedding_losses(result.outputs, y, config)[0]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return loss.detach(), grads, result


def assert_same_telemetry(a, b):
    assert a.flow_stats.initial_flows == b.flow_stats.initial_flows
    assert a.flow_stats.spawned == b.flow_stats.spawned
    assert a.flow_stats.landed == b.flow_stats.landed
    assert (a.flow_stats.faded, a.flow_stats.timed_out) == (b.flow_stats.faded, b.flow_stats.timed_out)
    np.testing.assert_array_equal(a.flow_stats.active_per_step, b.flow_stats.active_per_step)
    ta, tb = a.telemetry, b.telemetry
    for name in ("active", "spawn_requested", "spawn_granted", "spawn_denied", "landed", "faded",
                 "timed_out", "energy_hist", "coverage"):
        np.testing.assert_array_equal(getattr(ta.aggregates, name), getattr(tb.aggregates, name), err_msg=name)
    np.testing.assert_array_equal(ta.flows.flow_id, tb.flows.flow_id)
    np.testing.assert_array_equal(ta.flows.parent_id, tb.flows.parent_id)
    np.testing.assert_array_equal(ta.flows.reason, tb.flows.reason)
    # values: equal up to float rounding (chunked matrix products may round the last bit differently)
    np.testing.assert_allclose(ta.aggregates.deposited_energy, tb.aggregates.deposited_energy, rtol=1e-5)
    np.testing.assert_allclose(ta.plane_energy, tb.plane_energy, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ta.flows.positions, tb.flows.positions, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("start_mode", ["center", "input_face"])
@pytest.mark.parametrize("checkpoint_steps,chunk_rows", [(1, None), (3, None), (4, 50), (100, None)])
def test_recomputation_keeps_losses_gradients_and_telemetry(monkeypatch, start_mode, checkpoint_steps,
                                                            chunk_rows):
    """Every parameter's gradient, the loss and the batch's telemetry (flows, spawns, terminations,
    deposits) are those of the plain path. Guards against: telemetry rows or deposits doubled by a
    recomputed segment, a segment's collector not carried to the next, a lossy hidden-state cast,
    chunked recomputation mixing rows up, a segment cut at the wrong step."""
    c0 = create_tiny_config(start_mode=start_mode, max_active_flows=300)
    x, y = unit_rows(4, seed=1), unit_rows(4, seed=2)
    loss0, grads0, r0 = forward_backward(c0, x, y)
    assert r0.flow_stats.spawned > 0 and sum(r0.flow_stats.landed) > 0  # the batch exercises both
    if chunk_rows:
        monkeypatch.setattr(processor_module, "RECOMPUTE_CHUNK_ROWS", chunk_rows)
    loss1, grads1, r1 = forward_backward(c0.replace(checkpoint_steps=checkpoint_steps), x, y)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=0)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-8, msg=name)
    assert_same_telemetry(r0, r1)


def test_training_with_recomputation_reaches_the_same_weights(pairs8):
    """Two optimiser steps with segments of 2 steps give the weights of the plain path (the
    trainer's micro-batches and clipping see the same gradients)."""
    x, y = pairs8
    weights = []
    for k in (0, 2):
        c = create_tiny_config(checkpoint_steps=k, grad_accumulation_steps=2)
        trainer = EnergyTrainer(build_model(c), c)
        for _ in range(2):
            trainer.train_step((x[:4], y[:4]))
        weights.append({n: p.detach().clone() for n, p in trainer.processor.named_parameters()})
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_ledger_counts_each_storage_once_and_skips_parameters():
    """Views of one buffer are one buffer in memory; parameters are not per-step memory. Guards
    against a ledger that double counts (a too-pessimistic bound) or counts weights as activations."""
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4, requires_grad=True)
    with SavedTensorLedger(lin, capacity=999, hidden_shape=(3, 1024)) as ledger:
        a = x * 2.0                                       # a scalar multiply saves nothing
        out = a[:5].sin().sum() + a.cos().sum() + lin(x).sum()  # a view of a, a itself, x (+ weight)
    out.backward()
    assert ledger.result.count == 2
    assert ledger.result.total == a.untyped_storage().nbytes() + x.untyped_storage().nbytes()
    assert ledger.result.by_region == {"propagation step (other)": 2 * 8 * 4 * 4}


def measure(config, x):
    model = build_model(config)
    with SavedTensorLedger(model) as ledger:
        result = model(x)
    return ledger.result, flow_steps(result.flow_stats.active_per_step), result, model


def test_saved_bytes_per_flow_step_fit_the_optimized_preset_in_32_gb():
    """Bytes kept for backward at a 3×1024 carrier, measured on a 6×6×6 lattice (batch 2, the
    optimized preset's neuron/energy sizes), and what they mean for the optimized preset.

    Measured here in float32 (CPU). On a GPU under autocast the GRU computes in 16 bits, and the
    kept hidden state is stored in that dtype (exact: it is what the GRU produced), so the hidden
    bytes (the ``hidden state`` region, [n, 3, 1024]) count half; everything else is taken at its
    float32 size, which over-states the GPU.

    Peak of one optimized-preset train step (capacity C = 120,000 flows, T = 40 steps, segments
    of k = 6 steps, chunks of R = 32,768 recomputed rows):

        ⌈T/k⌉ · C · s      segment-start states kept for backward, s bytes per live flow
                           (at most C flows live)
      + k · C · b₁         one recomputed segment's kept step inputs, b₁ per flow-step
      + 2 · R · b₀         one recomputed carrier chunk's activations and their gradients,
                           b₀ per flow-step of the plain path (float32: generous)
      + 4 · C · s₃₂        the state, the state being written, and their two gradients
      + 16 · P             parameters, gradients and AdamW's two moments (float32)
      ≤ 32 GB

    With today's figures (b₁ ≈ 7.1 KB, s ≈ 6.4 KB, b₀ ≈ 105 KB, s₃₂ ≈ 12.6 KB, P ≈ 21M) that is
    ≈ 5.4 + 5.1 + 6.9 + 6.0 + 0.3 ≈ 24 GB, against ≈ 58 KB per flow-step measured on an H100
    before (issue 11: 22 GB per sample, out of memory at batch 8). Guards against recomputation
    being silently off, a per-step full-capacity copy creeping into what autograd keeps, or the
    kept hidden state growing."""
    base = dict(lattice_width=6, lattice_height=6, lattice_depth=6, batch_size=2, max_steps=4,
                max_active_flows=300, carrier_hidden_size=1024, carrier_num_layers=3,
                neuron_hidden_dim=64, neuron_output_dim=64, energy_dim=16, mapper_grid=3)
    x = unit_rows(2, seed=1)
    plain, fs0, r0, _ = measure(create_tiny_config(**base), x)
    # The flow state is sized to the live flows, never to the budget: a tensor the budget's size
    # would be a copy of a budget-sized state creeping back (a batch that filled the budget
    # exactly would have activations of that size too, so this one must not fill it)
    assert r0.flow_stats.active_per_step.max() < base["max_active_flows"]
    step, fs1, _, _ = measure(create_tiny_config(**base, checkpoint_steps=1), x)
    seg, fs2, r2, model = measure(create_tiny_config(**base, checkpoint_steps=2), x)
    assert fs0 == fs1 == fs2 > 0 and r0.flow_stats.steps == 4
    assert plain.full_capacity == step.full_capacity == seg.full_capacity == 0

    b0 = plain.total / fs0
    hidden_16 = step.by_region[HIDDEN_REGION] / 2
    b1 = (step.total - hidden_16) / fs1
    # 4 steps in segments of 2: the states kept are those at placement and after step 2, each
    # as many rows as flows were alive then (the start plane's input field has the placement's
    # rows too and is counted with it: s errs high)
    starts = [int(r2.flow_stats.active_per_step[t]) for t in (0, 2)]
    state_bytes = sum(seg.by_rows[n] for n in set(starts))
    s = (state_bytes - seg.by_region[HIDDEN_REGION] / 2) / sum(starts)
    s32 = state_bytes / sum(starts)
    assert step.by_region[HIDDEN_REGION] > 0 and "carrier GRU" not in step.by_region

    hidden_bytes = 1024 * 3 * 2  # one flow's 3×1024 state in 16 bits
    assert b1 <= hidden_bytes + 1_200, f"{b1:.0f} B kept per flow-step with recomputation"
    assert b0 >= 10 * b1  # recomputation keeps a tenth of what the plain path keeps

    o = create_optimized_config()
    C, T, k = o.resolved_max_active_flows, o.max_steps, o.checkpoint_steps
    P = sum(p.numel() for p in build_model(o).parameters())
    peak = (math.ceil(T / k) * C * s + k * C * b1 + 2 * processor_module.RECOMPUTE_CHUNK_ROWS * b0
            + 4 * C * s32 + 16 * P)
    assert peak <= 32 * GB, f"optimized preset peak estimate {peak / GB:.1f} GB"
    before = 2 * C * T / 3 * b0 / 2  # the plain path at 16 bits, two thirds of the budget alive
    assert before > 100 * GB  # consistent with the out-of-memory measured on an 80 GB card


def test_checkpoint_steps_is_validated():
    with pytest.raises(ValueError, match="checkpoint_steps"):
        create_tiny_config(checkpoint_steps=-1)
    assert create_optimized_config().checkpoint_steps >= 2


@pytest.mark.cuda
def test_cuda_autocast_recomputation_keeps_gradients_and_lowers_peak_memory(monkeypatch):
    """On a GPU under bf16 autocast: the kept hidden state is 16-bit, gradients match the plain
    path, and the measured peak memory drops. Guards against the 16-bit copy of the hidden state
    being lossy (it must equal what the GRU produced).

    Deterministic algorithms: CUDA's scatter-adds (the collection's splats) add in whatever order
    the atomics land, so two runs of the very same step differ in the last bits (measured at the
    optimized preset: up to 0.3 % in one parameter's gradient), and a flow near a threshold could
    land in one and not the other. Without that noise the two paths must agree (one row chunk
    here, as in the kept path: docs/BENCHMARKS.md, "On a GPU")."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        _recomputation_on_cuda()
    finally:
        torch.use_deterministic_algorithms(False)


def _recomputation_on_cuda() -> None:
    base = create_tiny_config(carrier_hidden_size=256, carrier_num_layers=3, max_active_flows=300,
                              device="cuda")
    x, y = unit_rows(4, seed=1).cuda(), unit_rows(4, seed=2).cuda()
    results = {}
    for k in (0, 3):
        c = base.replace(checkpoint_steps=k)
        model = build_model(c).cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            dtype = model.carrier.compute_dtype()      # what the GRU computes in under autocast
        loss = embedding_losses(out.outputs, y, c)[0]
        loss.backward()
        torch.cuda.synchronize()
        results[k] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()},
                      torch.cuda.max_memory_allocated(), out)
        if k:
            assert dtype in (torch.float16, torch.bfloat16)
    torch.testing.assert_close(results[3][0], results[0][0], rtol=1e-5, atol=0)
    for name, g in results[0][1].items():
        torch.testing.assert_close(results[3][1][name], g, rtol=1e-3, atol=1e-6, msg=name)
    assert_same_telemetry(results[0][3], results[3][3])
    assert results[3][2] < results[0][2]
