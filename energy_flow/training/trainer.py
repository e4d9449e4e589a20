"""EnergyTrainer: one optimisation step on one batch, and the loops built from it.

``train_step`` is the unit everything else is made of — the app's Step button runs exactly
one, the headless runner loops it — and it returns a :class:`TrainReport` of what happened,
measured: losses, gradient norms per module, parameters that got no gradient, timings per
phase, flow statistics and (with tracing on) the batch's telemetry.

A non-finite loss or gradient skips the update and says what was non-finite; the model's
state is left as it was before the step. Each batch starts from a fresh flow state, so no
autograd graph outlives its step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from energy_flow.config import EnergyConfig
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.device import resolve_device
from energy_flow.trace.telemetry import FlowStats
from energy_flow.training.checkpoint import (CHECKPOINT_VERSION, atomic_torch_save,
                                             incompatible_fields, read_checkpoint)
from energy_flow.training.report import DataProvenance, TrainReport
from energy_flow.training.sampler import BatchSampler

#: The model's top-level parts, for per-module gradient norms.
MODULES = ("input_mapper", "neuron", "carrier", "output_mapper")


def build_model(config: EnergyConfig) -> FlowProcessor:
    """Seeded construction, so the same config always gives the same initial weights."""
    torch.manual_seed(config.seed)
    lattice = EnergyLattice(config)
    return FlowProcessor(lattice, SimpleNeuron(config), config)


def embedding_losses(outputs: torch.Tensor, targets: torch.Tensor, config: EnergyConfig
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mse, mean 1 − cosine) of output embeddings against target embeddings."""
    outputs = outputs.float()
    mse = F.mse_loss(outputs, targets)
    cosine = (1.0 - F.cosine_similarity(outputs, targets, dim=1)).mean()
    return config.mse_weight * mse + config.cosine_weight * cosine, mse, cosine


def merge_flow_stats(parts: list[FlowStats], sizes: list[int]) -> FlowStats:
    """Combine the statistics of the micro-batches of one step (coverage weighted by size)."""
    if len(parts) == 1:
        return parts[0]
    steps = max(p.steps for p in parts)
    active = np.zeros(steps + 1, dtype=np.int64)
    for p in parts:
        active[: p.active_per_step.shape[0]] += p.active_per_step
    total = sum(sizes)
    return FlowStats(
        initial_flows=sum(p.initial_flows for p in parts),
        spawned=sum(p.spawned for p in parts),
        landed=tuple(int(v) for v in np.sum([p.landed for p in parts], axis=0)),
        faded=sum(p.faded for p in parts),
        timed_out=sum(p.timed_out for p in parts),
        steps=steps,
        coverage=tuple(float(v) for v in np.sum([np.array(p.coverage) * s for p, s in zip(parts, sizes)],
                                                 axis=0) / total),
        active_per_step=active,
    )


@dataclass
class TrainHistory:
    """Per-step scalars of a ``train`` call (reports with telemetry are not kept: too big)."""

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    cosine_loss: list[float] = field(default_factory=list)
    landed_fraction: list[float] = field(default_factory=list)
    skipped: int = 0


class EnergyTrainer:
    def __init__(self, processor: FlowProcessor, config: EnergyConfig | None = None):
        self.config = config or processor.config
        self.device = resolve_device(self.config.device)
        self.processor = processor.to(self.device)
        self.optimizer = torch.optim.AdamW(self.processor.parameters(), lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=self.config.lr_factor, patience=self.config.lr_patience)
        self.step_count = 0
        self._plateau_window: list[float] = []
        #: Set by whoever supplies the data; copied into every report.
        self.provenance: DataProvenance | None = None
        self.use_autocast = self.device.type == "cuda"

    # ------------------------------------------------------------------ one step
    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self):
        if self.use_autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch) -> TrainReport:
        """Exactly one optimisation step on ``batch`` (a ``Batch`` or ``(inputs, targets)``)."""
        inputs, targets, indices = _unpack(batch)
        c = self.config
        if inputs.shape != targets.shape or inputs.dim() != 2 or inputs.shape[1] != c.teacher_dim:
            raise ValueError(f"train_step: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} "
                             f"must both be [B, teacher_dim={c.teacher_dim}]")
        t_start = time.perf_counter()
        inputs = inputs.to(self.device, torch.float32)
        targets = targets.to(self.device, torch.float32)
        self.processor.train()
        self.optimizer.zero_grad(set_to_none=True)

        b = inputs.shape[0]
        micro = max(1, min(c.grad_accumulation_steps, b))
        loss_parts, stats_parts, sizes, outputs = [], [], [], []
        telemetry = None
        t_forward = t_backward = 0.0
        try:
            for x, y in zip(inputs.tensor_split(micro), targets.tensor_split(micro)):
                t0 = time.perf_counter()
                with self._autocast():
                    result = self.processor(x)
                loss, mse, cosine = embedding_losses(result.outputs, y, c)
                t1 = time.perf_counter()
                (loss * (x.shape[0] / b)).backward()
                t_backward += time.perf_counter() - t1
                t_forward += t1 - t0
                loss_parts.append(torch.stack([loss, mse, cosine]).detach() * (x.shape[0] / b))
                stats_parts.append(result.flow_stats)
                sizes.append(x.shape[0])
                outputs.append(result.outputs.detach().float())
                telemetry = telemetry or result.telemetry
        except BaseException:
            # A failing micro-batch must not leave the earlier ones' gradients behind.
            self.optimizer.zero_grad(set_to_none=True)
            raise

        t0 = time.perf_counter()
        grads = self._gradient_summary()
        losses = torch.stack(loss_parts).sum(0)
        # Samples whose input or target holds NaN/inf, named when the step is skipped (the
        # flags ride along in the step's one host transfer).
        bad_rows = ~(torch.isfinite(inputs).all(1) & torch.isfinite(targets).all(1))
        host = torch.cat([losses.double(), grads["norms"], grads["zero"].double(),
                          bad_rows.double()]).cpu().numpy()
        bad_samples = np.flatnonzero(host[host.shape[0] - b:])
        host = host[:host.shape[0] - b]
        loss_v, mse_v, cos_v = (float(v) for v in host[:3])
        module_norms = dict(zip(MODULES, (float(v) for v in host[3:3 + len(MODULES)])))
        total_norm = float(host[3 + len(MODULES)])
        missing = tuple(name for name, zero in zip(grads["names"], host[4 + len(MODULES):]) if zero)

        nonfinite = None
        if bad_samples.size:
            where = ", ".join(str(int(indices[i])) for i in bad_samples[:8])
            more = f" and {bad_samples.size - 8} more" if bad_samples.size > 8 else ""
            nonfinite = (f"loss is {loss_v}: inputs or targets of {bad_samples.size} sample(s) hold NaN/inf "
                         f"(dataset indices {where}{more})")
        elif not math.isfinite(loss_v):
            nonfinite = f"loss is {loss_v} (mse {mse_v}, 1−cos {cos_v})"
        elif not math.isfinite(total_norm):
            bad = [m for m, v in module_norms.items() if not math.isfinite(v)]
            nonfinite = f"gradient is non-finite in {', '.join(bad)}"
        if nonfinite is None:
            nn.utils.clip_grad_norm_(self.processor.parameters(), c.grad_clip)
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        t_opt = time.perf_counter() - t0
        self.step_count += 1
        if nonfinite is None:
            self._plateau(loss_v)

        return TrainReport(
            step=self.step_count, loss=loss_v, mse=mse_v, cosine_loss=cos_v,
            learning_rate=self.learning_rate, grad_norm=total_norm, grad_norms=module_norms,
            params_without_grad=missing,
            timings={"forward": t_forward, "backward": t_backward, "optimizer": t_opt,
                     "total": time.perf_counter() - t_start},
            flow_stats=merge_flow_stats(stats_parts, sizes), telemetry=telemetry,
            skipped=nonfinite is not None, nonfinite=nonfinite,
            outputs=torch.cat(outputs).cpu().numpy(), sample_indices=indices.cpu().numpy().astype(np.int64),
            device=str(self.device), provenance=self.provenance,
        )

    def _gradient_summary(self) -> dict:
        """Per-module and total gradient norms plus a per-parameter "no gradient" flag, all as
        device tensors (one host transfer in train_step)."""
        names, zero, per_module = [], [], []
        dev = self.device
        for module_name in MODULES:
            sq = torch.zeros((), device=dev, dtype=torch.float64)
            for name, p in getattr(self.processor, module_name).named_parameters():
                if not p.requires_grad:
                    continue
                names.append(f"{module_name}.{name}")
                if p.grad is None:
                    zero.append(torch.ones((), device=dev, dtype=torch.bool))
                    continue
                g = p.grad.detach().double()
                zero.append((g == 0).all())
                sq = sq + g.pow(2).sum()
            per_module.append(sq)
        sq = torch.stack(per_module)
        norms = torch.cat([sq.sqrt(), sq.sum().sqrt().reshape(1)])
        return {"names": names, "zero": torch.stack(zero), "norms": norms}

    def _plateau(self, loss: float) -> None:
        self._plateau_window.append(loss)
        if len(self._plateau_window) >= self.config.plateau_interval:
            self.scheduler.step(sum(self._plateau_window) / len(self._plateau_window))
            self._plateau_window.clear()

    # ------------------------------------------------------------------ loops
    def train(self, input_embeddings: torch.Tensor, target_embeddings: torch.Tensor, epochs: int = 100,
              progress: bool = True, on_report: Callable[[TrainReport], None] | None = None) -> TrainHistory:
        """Train for ``epochs`` passes over the pairs, in shuffled batches of ``batch_size``."""
        inputs = torch.as_tensor(input_embeddings, dtype=torch.float32)
        targets = torch.as_tensor(target_embeddings, dtype=torch.float32)
        if inputs.shape != targets.shape:
            raise ValueError(f"train: input embeddings {tuple(inputs.shape)} and target embeddings "
                             f"{tuple(targets.shape)} differ in shape")
        sampler = BatchSampler(inputs.shape[0], self.config.batch_size, self.config.seed)
        total = epochs * sampler.batches_per_epoch
        return self.run_steps(inputs, targets, sampler, total, progress, on_report)

    def run_steps(self, inputs: torch.Tensor, targets: torch.Tensor, sampler: BatchSampler, count: int,
                  progress: bool = True, on_report: Callable[[TrainReport], None] | None = None
                  ) -> TrainHistory:
        """``count`` more steps; the batch of each is ``sampler.indices(step_count)``, so a run
        resumed from a checkpoint continues exactly as the original would have."""
        from tqdm import tqdm

        history = TrainHistory()
        bar = tqdm(total=count, disable=not progress, unit="batch", dynamic_ncols=True)
        try:
            for _ in range(count):
                idx = sampler.indices(self.step_count)
                report = self.train_step((inputs[idx], targets[idx], idx))
                history.loss.append(report.loss)
                history.mse.append(report.mse)
                history.cosine_loss.append(report.cosine_loss)
                history.landed_fraction.append(report.flow_stats.landed_fraction)
                history.skipped += int(report.skipped)
                bar.set_postfix(loss=f"{report.loss:.4f}", landed=f"{report.flow_stats.landed_fraction:.2f}")
                bar.update(1)
                if on_report is not None:
                    on_report(report)
        finally:
            bar.close()
        return history

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Output embeddings for ``inputs`` in eval mode, on the CPU."""
        self.processor.eval()
        size = batch_size or self.config.batch_size
        out = []
        for chunk in torch.as_tensor(inputs, dtype=torch.float32).split(size):
            with self._autocast():
                out.append(self.processor(chunk.to(self.device)).outputs.float().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": "energy-flow-checkpoint", "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(), "model": self.processor.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step_count": self.step_count, "plateau_window": list(self._plateau_window),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> None:
        state = self.state_dict()
        if extra:
            state["extra"] = extra
        atomic_torch_save(state, path)

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore model, optimiser, scheduler and step count; returns the checkpoint's extra."""
        data = read_checkpoint(path)
        bad = incompatible_fields(data["config"], self.config)
        if bad:
            raise ValueError(f"checkpoint {path} does not fit this model; mismatched fields: {'; '.join(bad)}")
        try:
            self.processor.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
            self.scheduler.load_state_dict(data["scheduler"])
            torch.set_rng_state(data["torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"checkpoint {path} does not fit this model: {first}") from None
        self.step_count = data["step_count"]
        self._plateau_window = [float(v) for v in data["plateau_window"]]
        extra = data.get("extra", {})
        return extra if isinstance(extra, dict) else {}


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        idx = getattr(batch, "indices", None)
        return batch.inputs, batch.targets, idx if idx is not None else torch.arange(batch.inputs.shape[0])
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        inputs, targets = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        idx = torch.as_tensor(batch[2]) if len(batch) == 3 else torch.arange(inputs.shape[0])
        return inputs, targets, idx
    raise TypeError(f"train_step: expected a Batch or (inputs, targets[, indices]), got {type(batch).__name__}")

