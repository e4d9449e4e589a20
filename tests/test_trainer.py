"""The trainer: one step per batch, learning, gradients, non-finite handling, checkpoints."""

from __future__ import annotations

import gc
import math

import pytest
import torch
import torch.nn.functional as F

from energy_flow.config import create_tiny_config
from energy_flow.training import BatchSampler, EnergyTrainer, build_model
from tests.conftest import unit_rows


def make(config=None, **overrides):
    """A tiny-model trainer pinned to the CPU (device "auto" would pick a GPU where there is
    one, and these tests assert CPU behaviour; tests/test_cuda.py covers the GPU)."""
    c = config or create_tiny_config(batch_size=8, max_active_flows=800, device="cpu", **overrides)
    trainer = EnergyTrainer(build_model(c), c)
    assert trainer.device.type == "cpu"
    return trainer


@pytest.mark.slow
def test_overfitting_eight_pairs_halves_the_loss(pairs8):
    """The whole model overfits eight pairs, and the lattice takes part: the same run with
    the lattice frozen (only the output mapper learning) ends clearly worse. Guards against a
    lattice cut off from the loss (planted: the collected surfaces detached before the output
    mapper; the output mapper alone then still halved the loss, to 0.013× the first).
    Measured on the 2-core build machine: after 30 steps 0.051 with the lattice learning,
    0.120 with it frozen."""
    full = make()
    first = full.train_step(pairs8).loss
    full_losses = [first] + [full.train_step(pairs8).loss for _ in range(29)]
    frozen = make()
    for part in (frozen.processor.input_mapper, frozen.processor.neuron, frozen.processor.carrier):
        part.requires_grad_(False)
    frozen_losses = [frozen.train_step(pairs8).loss for _ in range(30)]
    assert frozen_losses[0] == first  # same model, same batch: the runs differ only in what learns
    assert min(full_losses[-5:]) < first / 2, (first, full_losses[-5:])
    tail_full, tail_frozen = sum(full_losses[-5:]) / 5, sum(frozen_losses[-5:]) / 5
    assert tail_full < 0.7 * tail_frozen, (tail_full, tail_frozen)


def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(pairs8):
    trainer = make()
    report = trainer.train_step(pairs8)
    assert report.flow_stats.spawned > 0  # the spawn head only learns through a split
    assert report.params_without_grad == ()
    # and independently of the report's bookkeeping:
    model = trainer.processor
    model.zero_grad()
    result = model(pairs8[0])
    (result.outputs - pairs8[1]).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert math.isfinite(report.grad_norm) and set(report.grad_norms) == {
        "input_mapper", "neuron", "carrier", "output_mapper"}


def test_train_step_is_exactly_one_optimizer_step(pairs8):
    trainer = make()
    before = [p.detach().clone() for p in trainer.processor.parameters()]
    report = trainer.train_step(pairs8)
    assert report.step == trainer.step_count == 1
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.processor.parameters()))
    assert report.outputs.shape == (8, 384) and not report.skipped
    assert set(report.timings) >= {"forward", "backward", "optimizer", "total"}


def test_a_nonfinite_loss_skips_the_update_and_says_so(pairs8):
    trainer = make()
    inputs, targets = pairs8
    targets = targets.clone()
    targets[3, 5] = float("nan")
    before = [p.detach().clone() for p in trainer.processor.parameters()]
    report = trainer.train_step((inputs, targets))
    assert report.skipped and "loss" in report.nonfinite
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.processor.parameters()))
    ok = trainer.train_step(pairs8)  # and the trainer carries on from the kept state
    assert not ok.skipped and ok.nonfinite is None


def test_gradient_accumulation_matches_the_full_batch_gradient(pairs8):
    """Two micro-batches leave, in every parameter's .grad, the gradient of the full-batch
    loss, computed here independently with autograd on a fresh copy of the model. Guards
    against accumulation that keeps only the last micro-batch (planted: zero_grad inside the
    micro-batch loop) or mis-weights the parts (planted: loss × 3); comparing forward losses
    alone let both through."""
    c = create_tiny_config(batch_size=8, max_active_flows=2_000, device="cpu", grad_clip=1e9)
    inputs, targets = pairs8
    model = build_model(c)
    outputs = model(inputs).outputs
    loss = F.mse_loss(outputs, targets) + (1 - F.cosine_similarity(outputs, targets, dim=1)).mean()
    names = [n for n, _ in model.named_parameters()]
    expected = torch.autograd.grad(loss, list(model.parameters()))

    accum = make(c.replace(grad_accumulation_steps=2))
    report = accum.train_step(pairs8)  # grad_clip 1e9: the clip leaves .grad unchanged
    for name, p, g in zip(names, accum.processor.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    assert report.loss == pytest.approx(loss.item(), rel=1e-5)
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in expected)).item()
    assert report.grad_norm == pytest.approx(norm, rel=1e-4)
    assert report.flow_stats.initial_flows == c.initial_flows_per_batch


def test_the_step_reports_float64_norms_and_names_exactly_the_parameters_without_gradient(pairs8):
    """The reported per-module gradient and weight norms are float64 norms of the real tensors,
    computed here independently; a gradient of 1e-30 (zero in a float32 sum of squares) is not
    called missing, an all-zero one is. Guards the one-pass float64 norms (energy_flow.training
    .trainer.float64_norms) against a float32 accumulation and a "zero" flag taken from it."""
    trainer = make(grad_clip=1e9)            # no clipping: .grad after the step is what was summed
    model = trainer.processor
    named = dict(model.named_parameters())
    named["neuron.net.0.bias"].register_hook(lambda g: torch.full_like(g, 1e-30))
    named["output_mapper.proj.bias"].register_hook(lambda g: torch.zeros_like(g))
    before = {n: p.detach().clone() for n, p in named.items()}
    report = trainer.train_step(pairs8)
    assert report.params_without_grad == ("output_mapper.proj.bias",)

    def norm64(tensors) -> float:
        return math.sqrt(sum(t.double().pow(2).sum().item() for t in tensors))

    for module, norm in report.grad_norms.items():
        params = [(n, p) for n, p in named.items() if n.startswith(module + ".")]
        assert norm == pytest.approx(norm64(p.grad for _n, p in params), rel=1e-12, abs=0), module
        assert report.weight_norms[module] == pytest.approx(norm64(p.detach() for _n, p in params), rel=1e-12)
        update = norm64(p.detach() - before[n] for n, p in params)
        assert report.update_ratios[module] == pytest.approx(update / norm64(before[n] for n, _p in params),
                                                             rel=1e-9), module


def test_adamw_is_fused_on_the_cpu_and_an_unfused_checkpoint_resumes(tmp_path, pairs8):
    """The trainer's AdamW runs fused (one kernel over every parameter) on the CPU, and a
    checkpoint written by an unfused AdamW (every checkpoint from before 2026-12-08, or one from
    another device) loads: how AdamW runs is not part of what was learnt."""
    trainer = make()
    assert all(group["fused"] for group in trainer.optimizer.param_groups)
    trainer.train_step(pairs8)
    for group in trainer.optimizer.param_groups:
        group["fused"] = None                # as an unfused optimizer writes it
    trainer.save_checkpoint(tmp_path / "ck.pt")
    resumed = make()
    resumed.load_checkpoint(tmp_path / "ck.pt")
    assert all(group["fused"] for group in resumed.optimizer.param_groups)
    for a, b in zip(trainer.processor.parameters(), resumed.processor.parameters()):
        assert torch.equal(a, b)
    assert resumed.train_step(pairs8).loss == trainer.train_step(pairs8).loss
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 2


@pytest.mark.slow
def test_no_graph_survives_a_step_and_memory_stays_flat(pairs8):
    trainer = make()
    for _ in range(10):
        trainer.train_step(pairs8)
    gc.collect()
    tensors_at_10 = sum(isinstance(o, torch.Tensor) for o in gc.get_objects())
    for _ in range(40):
        report = trainer.train_step(pairs8)
    gc.collect()
    tensors_at_50 = sum(isinstance(o, torch.Tensor) for o in gc.get_objects())
    assert tensors_at_50 <= tensors_at_10 + 5, (tensors_at_10, tensors_at_50)
    assert not report.outputs.flags.writeable


@pytest.mark.slow
def test_resumed_run_continues_exactly_as_the_original(tmp_path):
    c = create_tiny_config(batch_size=4, seed=3, device="cpu")
    inputs, targets = unit_rows(12, seed=5), unit_rows(12, seed=6)
    sampler = BatchSampler(12, c.batch_size, c.seed)
    original = EnergyTrainer(build_model(c), c)
    original.run_steps(inputs, targets, sampler, 4, progress=False)
    original.save_checkpoint(tmp_path / "ck.pt")
    expected = original.run_steps(inputs, targets, sampler, 4, progress=False).loss

    resumed = EnergyTrainer(build_model(c.replace(seed=99)), c)  # different initial weights
    resumed.load_checkpoint(tmp_path / "ck.pt")
    got = resumed.run_steps(inputs, targets, BatchSampler(12, c.batch_size, c.seed), 4, progress=False).loss
    assert got == pytest.approx(expected, rel=1e-6)


def test_loading_an_incompatible_checkpoint_names_the_fields(tmp_path):
    make().save_checkpoint(tmp_path / "ck.pt")
    other = make(create_tiny_config(batch_size=8, max_active_flows=800, carrier_hidden_size=32, energy_dim=6,
                                    device="cpu"))
    with pytest.raises(ValueError) as err:
        other.load_checkpoint(tmp_path / "ck.pt")
    assert "carrier_hidden_size" in str(err.value) and "energy_dim" in str(err.value)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    trainer = make()
    path = tmp_path / "ck.pt"
    trainer.save_checkpoint(path)
    good = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_corrupt_checkpoint_is_named(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        make().load_checkpoint(path)


@pytest.mark.slow
def test_train_runs_the_design_example():
    from energy_flow.config import create_experiment_config
    from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
    from energy_flow.training import EnergyTrainer as Trainer

    config = create_experiment_config(lattice_width=10, lattice_height=10, lattice_depth=6,
                                      mapper_grid=4, batch_size=4, max_active_flows=1000,
                                      carrier_hidden_size=16, device="cpu")
    lattice = EnergyLattice(config)
    neuron = SimpleNeuron(config)
    processor = FlowProcessor(lattice, neuron, config)
    trainer = Trainer(processor, config)
    history = trainer.train(unit_rows(6), unit_rows(6, seed=9), epochs=2, progress=False)
    assert len(history.loss) == 4 and all(math.isfinite(v) for v in history.loss)


def test_wrong_embedding_dim_is_refused():
    with pytest.raises(ValueError, match="teacher_dim"):
        make().train_step((torch.zeros(2, 100), torch.zeros(2, 100)))
