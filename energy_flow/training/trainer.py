"""EnergyTrainer: one optimisation step on one batch, and the loops built from it.

``train_step`` is the unit everything else is made of — the app's Step button runs exactly
one, the headless runner loops it — and it returns a :class:`TrainReport` of what happened,
measured: losses, gradient norms per module, update-to-weight ratios and weight norms per
module, the spread of the outputs against the spread of the targets (collapse), parameters
that got no gradient, timings per phase, flow statistics and (with tracing on) the batch's
telemetry. Everything measured before the optimiser step crosses to the host in one transfer;
the update and weight norms after it in a second, small one (none when the step is skipped).

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
from energy_flow.runtime.device import resolve_device
from energy_flow.trace.batch_trace import BatchTrace, merge_traces
from energy_flow.trace.figures import BATCH
from energy_flow.trace.training_signals import MODULES
from energy_flow.training.checkpoint import (CHECKPOINT_VERSION, FORMAT, incompatible_fields,
                                             read_checkpoint, write_checkpoint)
from energy_flow.training.checkpoint_integrity import check_like
from energy_flow.training.report import DataProvenance, TrainReport
from energy_flow.training.sampler import BatchSampler



def build_model(config: EnergyConfig) -> FlowProcessor:
    """Seeded construction, so the same config always gives the same initial weights."""
    torch.manual_seed(config.seed)
    lattice = EnergyLattice(config)
    return FlowProcessor(lattice, SimpleNeuron(config), config)


def info_nce(outputs: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch contrastive loss: each output should pick its own target out of the batch's.

    Cross-entropy over cosine similarities / ``temperature``; the other targets of the batch
    are the negatives. A target that equals the own target (a duplicate pair in the batch) is
    not counted as a negative, since no output could tell them apart.
    """
    out = F.normalize(outputs, dim=1)
    tgt = F.normalize(targets, dim=1)
    logits = out @ tgt.T / temperature
    same = (tgt @ tgt.T > 1.0 - 1e-6) & ~torch.eye(len(tgt), dtype=torch.bool, device=tgt.device)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(tgt), device=tgt.device))


def embedding_losses(outputs: torch.Tensor, targets: torch.Tensor, config: EnergyConfig
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mse, mean 1 − cosine) of output embeddings against target embeddings.

    ``config.loss`` picks the total: ``"mse_cosine"`` is mse_weight·MSE + cosine_weight·(1 − cos);
    ``"contrastive"`` adds contrastive_weight·InfoNCE (:func:`info_nce`) to that.
    """
    outputs = outputs.float()
    mse = F.mse_loss(outputs, targets)
    cosine = (1.0 - F.cosine_similarity(outputs, targets, dim=1)).mean()
    total = config.mse_weight * mse + config.cosine_weight * cosine
    if config.loss == "contrastive":
        total = total + config.contrastive_weight * info_nce(outputs, targets, config.contrastive_temperature)
    return total, mse, cosine


def embedding_spread(rows: torch.Tensor) -> torch.Tensor:
    """1 − mean off-diagonal pairwise cosine similarity of ``rows`` [B, D] (a device scalar).

    0 when every row points the same way (collapsed outputs), about 1 for unrelated directions;
    NaN for fewer than two rows. A zero row has cosine 0 with every other row.
    """
    b = rows.shape[0]
    if b < 2:
        return torch.full((), math.nan, device=rows.device, dtype=torch.float64)
    unit = F.normalize(rows.detach().double(), dim=1)
    cos = unit @ unit.T
    return 1.0 - (cos.sum() - cos.diagonal().sum()) / (b * (b - 1))


@dataclass
class TrainHistory:
    """Per-step scalars of a ``train`` call (reports with telemetry are not kept: too big)."""

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    cosine_loss: list[float] = field(default_factory=list)
    landed_fraction: list[float] = field(default_factory=list)
    skipped: int = 0


#: AdamW's param-group keys that say how it runs, not what it has learnt (set per machine).
OPTIMIZER_IMPLEMENTATION = ("fused", "foreach")


def make_optimizer(parameters, config: EnergyConfig) -> torch.optim.Optimizer:
    """AdamW at the config's rate and decay, fused (one kernel over every parameter) where PyTorch
    has the fused kernel for these tensors: float32 on the CPU or CUDA, every parameter here.
    Measured on the debug preset's parameters (2-core build machine, 2026-12-08): docs/BENCHMARKS.md,
    "The optimizer phase"."""
    params = list(parameters)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused)


def float64_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's L2 norm as a float64 scalar on its device, accumulated in float64 (no float32 underflow or
    rounding of the sum) without a float64 copy of any tensor: one fused kernel over the list
    (``torch._foreach_norm``, what ``clip_grad_norm_`` uses), bit for bit what
    ``torch.linalg.vector_norm(t, dtype=torch.float64)`` gives per tensor."""
    return list(torch._foreach_norm(tensors, 2, dtype=torch.float64)) if tensors else []


class EnergyTrainer:
    def __init__(self, processor: FlowProcessor, config: EnergyConfig | None = None):
        self.config = config or processor.config
        self.device = resolve_device(self.config.device)
        self.processor = processor.to(self.device)
        self.optimizer = make_optimizer(self.processor.parameters(), self.config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=self.config.lr_factor, patience=self.config.lr_patience)
        self.step_count = 0
        self._plateau_window: list[float] = []
        #: Set by whoever supplies the data; copied into every report.
        self.provenance: DataProvenance | None = None
        self.use_autocast = self.device.type == "cuda"
        #: What the forward pass is called on: the processor, or its DDP wrapper
        #: (energy_flow.training.distributed).
        self.forward_module: nn.Module = self.processor

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
        self.processor.batch_parts = micro * self._ranks()
        loss_parts, traces, outputs = [], [], []
        t_forward = t_backward = 0.0
        weight = self._loss_weight(b)
        try:
            for i, (x, y) in enumerate(zip(inputs.tensor_split(micro), targets.tensor_split(micro))):
                t0 = time.perf_counter()
                with self._micro_context(last=i == micro - 1):
                    with self._autocast():
                        result = self.forward_module(x)
                    loss, mse, cosine = embedding_losses(result.outputs, y, c)
                    t1 = time.perf_counter()
                    (loss * (x.shape[0] / b * weight)).backward()
                t_backward += time.perf_counter() - t1
                t_forward += t1 - t0
                loss_parts.append(torch.stack([loss, mse, cosine]).detach() * (x.shape[0] / b))
                traces.append(result.trace)
                outputs.append(result.outputs.detach().float())
        except BaseException:
            # A failing micro-batch must not leave the earlier ones' gradients behind.
            self.optimizer.zero_grad(set_to_none=True)
            raise
        finally:
            # Only this step's passes are parts of one batch: a later predict() or evaluation
            # forward is whole and keeps no pooled values.
            self.processor.batch_parts = 1

        t0 = time.perf_counter()
        grads = self._gradient_summary()
        losses = self._reduce_losses(torch.stack(loss_parts).sum(0), b)
        out_all = torch.cat(outputs)
        spreads = torch.stack([embedding_spread(self._whole_batch_rows(out_all)),
                               embedding_spread(self._whole_batch_rows(targets))]).double()
        params = self._module_parameters()
        # Samples whose input or target holds NaN/inf, named when the step is skipped.
        bad_rows = ~(torch.isfinite(inputs).all(1) & torch.isfinite(targets).all(1))
        host = _one_transfer({       # the step's one transfer (figures by their declared keys)
            BATCH.loss.key: losses[0], BATCH.mse.key: losses[1], BATCH.cosine_loss.key: losses[2],
            BATCH.output_spread.key: spreads[0], BATCH.target_spread.key: spreads[1],
            "weights_before": self._module_norms([[p.detach() for p in ps] for ps in params]),
            BATCH.grad_norms.key: grads["norms"], BATCH.grad_norm.key: grads["total"],
            "zero_grad": grads["zero"], "bad_rows": bad_rows})
        bad_samples = np.flatnonzero(host["bad_rows"])
        loss_v, mse_v, cos_v, out_spread, target_spread = (
            float(host[f.key][0]) for f in (BATCH.loss, BATCH.mse, BATCH.cosine_loss, BATCH.output_spread,
                                            BATCH.target_spread))
        weights_before = host["weights_before"]
        weight_norms = dict(zip(MODULES, (float(v) for v in weights_before)))
        module_norms = dict(zip(MODULES, (float(v) for v in host[BATCH.grad_norms.key])))
        total_norm = float(host[BATCH.grad_norm.key][0])
        missing = tuple(name for name, zero in zip(grads["names"], host["zero_grad"]) if zero)
        trace = merge_traces(self._gather_traces(merge_traces(traces)))

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
        nonfinite = self._agree_nonfinite(nonfinite)
        update_ratios = dict.fromkeys(MODULES, math.nan)
        if nonfinite is None:
            nn.utils.clip_grad_norm_(self.processor.parameters(), c.grad_clip)
            before = [[p.detach().clone() for p in ps] for ps in params]
            self.optimizer.step()
            after = [[p.detach() for p in ps] for ps in params]
            updates = self._module_norms([[a - b for a, b in zip(ga, gb)] for ga, gb in zip(after, before)])
            norms = torch.cat([updates, self._module_norms(after)]).cpu().numpy()  # second, small transfer
            # The weight norms are float64 sums of squares of float32 weights: finite exactly when
            # every weight is, so they are the finite check after the step (no extra transfer).
            m = len(MODULES)
            broken = [name for name, v in zip(MODULES, norms[m:]) if not math.isfinite(v)]
            if broken:
                self._restore(params, before)
                nonfinite = (f"weights became non-finite in {', '.join(broken)} after the optimizer step; "
                             "the weights from before it were restored")
            else:
                weight_norms = dict(zip(MODULES, (float(v) for v in norms[m:])))
                update_ratios = {name: float(u / w) if w > 0 else math.nan
                                 for name, u, w in zip(MODULES, norms[:m], weights_before)}
        else:
            self.optimizer.zero_grad(set_to_none=True)
        t_opt = time.perf_counter() - t0
        self.step_count += 1
        if nonfinite is None:
            self._plateau(loss_v)

        return TrainReport(
            step=self.step_count, loss=loss_v, mse=mse_v, cosine_loss=cos_v,
            learning_rate=self.learning_rate, grad_norm=total_norm, grad_norms=module_norms,
            grad_clip=float(c.grad_clip), update_ratios=update_ratios, weight_norms=weight_norms,
            output_spread=out_spread, target_spread=target_spread,
            params_without_grad=missing,
            timings={"forward": t_forward, "backward": t_backward, "optimizer": t_opt,
                     "total": time.perf_counter() - t_start},
            flow_stats=trace.flow_stats(), telemetry=trace.telemetry(),
            skipped=nonfinite is not None, nonfinite=nonfinite,
            outputs=out_all.cpu().numpy(), sample_indices=indices.cpu().numpy().astype(np.int64),
            device=str(self.device), provenance=self.provenance,
        )

    @staticmethod
    @torch.no_grad()
    def _restore(params: list[list[torch.Tensor]], saved: list[list[torch.Tensor]]) -> None:
        """Put back the weights saved before an optimizer step that made some non-finite."""
        for group, old in zip(params, saved):
            for p, value in zip(group, old):
                p.copy_(value)

    # Hooks for data-parallel training (DistributedTrainer); in one process they change nothing.
    def _micro_context(self, last: bool):
        return contextlib.nullcontext()

    def _loss_weight(self, local_batch: int) -> float:
        return 1.0

    def _reduce_losses(self, losses: torch.Tensor, local_batch: int) -> torch.Tensor:
        return losses

    def _agree_nonfinite(self, nonfinite: str | None) -> str | None:
        return nonfinite

    def _ranks(self) -> int:
        """Processes that share each batch (DDP ranks); here: one."""
        return 1

    def _whole_batch_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of the whole batch (every rank's share, in rank order); here: ``rows``."""
        return rows

    def _gather_traces(self, trace: BatchTrace) -> list[BatchTrace]:
        """Every rank's trace of its share, in rank order; here: this process's only."""
        return [trace]

    def _gradient_summary(self) -> dict:
        """Per-module and total gradient norms plus a per-parameter "no gradient" flag, all as
        device tensors (one host transfer in train_step)."""
        dev = self.device
        groups = [[(f"{module_name}.{name}", p) for name, p in getattr(self.processor, module_name).named_parameters()
                   if p.requires_grad] for module_name in MODULES]
        norms = iter(float64_norms([p.grad.detach() for group in groups for _n, p in group if p.grad is not None]))
        names, zero, per_module = [], [], []
        for group in groups:
            squares = []
            for name, p in group:
                names.append(name)
                if p.grad is None:
                    zero.append(torch.ones((), device=dev, dtype=torch.bool))
                    continue
                norm = next(norms)
                # a float64 norm is 0 exactly when every element is (no float32 square underflows
                # in float64): the "no gradient" flag without a second pass over the gradient
                zero.append(norm == 0)
                squares.append(norm.square())
            per_module.append(torch.stack(squares).sum() if squares else torch.zeros((), device=dev, dtype=torch.float64))
        sq = torch.stack(per_module)
        return {"names": names, "zero": torch.stack(zero), "norms": sq.sqrt(), "total": sq.sum().sqrt()}

    def _module_parameters(self) -> list[list[torch.Tensor]]:
        """Trainable parameters of each module in MODULES (the order of every per-module norm)."""
        return [[p for p in getattr(self.processor, name).parameters() if p.requires_grad] for name in MODULES]

    @staticmethod
    def _module_norms(tensors: list[list[torch.Tensor]]) -> torch.Tensor:
        """[len(MODULES)] float64 L2 norm over each module's tensors, on the device."""
        norms = iter(float64_norms([t for group in tensors for t in group]))
        out = []
        for group in tensors:
            squares = [next(norms).square() for _t in group]
            out.append(torch.stack(squares).sum().sqrt() if squares else torch.zeros((), dtype=torch.float64))
        device = next((v.device for v in out if v.device.type != "cpu"), out[0].device)
        return torch.stack([v.to(device) for v in out])

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
        return self._loop(inputs, targets, sampler, count, progress, on_report,
                          step_fn=lambda idx: self.train_step((inputs[idx], targets[idx], idx)))

    def _loop(self, inputs: torch.Tensor, targets: torch.Tensor, sampler: BatchSampler, count: int,
              progress: bool, on_report: Callable[[TrainReport], None] | None,
              step_fn: Callable[[torch.Tensor], TrainReport]) -> TrainHistory:
        from tqdm import tqdm

        history = TrainHistory()
        bar = tqdm(total=count, disable=not progress, unit="batch", dynamic_ncols=True)
        try:
            for _ in range(count):
                report = step_fn(sampler.indices(self.step_count))
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
            "format": FORMAT, "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(), "model": self.processor.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step_count": self.step_count, "plateau_window": list(self._plateau_window),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> None:
        """Save atomically, with a checksum; a model holding NaN/inf is not saved
        (``NonFiniteStateError``), so the file keeps the last good checkpoint."""
        state = self.state_dict()
        if extra:
            state["extra"] = extra
        write_checkpoint(state, path)

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore model, optimiser, scheduler and step count; returns the checkpoint's extra."""
        data = read_checkpoint(path)
        bad = incompatible_fields(data["config"], self.config)
        if bad:
            raise ValueError(f"checkpoint {path} does not fit this model; mismatched fields: {'; '.join(bad)}")
        # How AdamW runs (fused or not: checkpoints from before 2026-12-08, or from another
        # device) is this machine's choice, not part of what was learnt: not checked, and set to
        # this optimizer's own.
        check_like(data["optimizer"]["param_groups"],
                   [{k: v for k, v in group.items() if k not in OPTIMIZER_IMPLEMENTATION}
                    for group in self.optimizer.state_dict()["param_groups"]],
                   f"checkpoint {path}: optimizer param_groups")
        data["optimizer"]["param_groups"] = [
            {**group, **{k: self.optimizer.param_groups[0][k] for k in OPTIMIZER_IMPLEMENTATION}}
            for group in data["optimizer"]["param_groups"]]
        check_like(data["scheduler"], self.scheduler.state_dict(), f"checkpoint {path}: scheduler")
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


def _one_transfer(named: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy named device tensors to the host in one transfer; each comes back flat, float64.

    The split follows the tensors' own sizes, so no offset is written by hand."""
    flat = [t.detach().double().reshape(-1) for t in named.values()]
    host = torch.cat(flat).cpu().numpy()
    return dict(zip(named, np.split(host, np.cumsum([t.numel() for t in flat])[:-1])))


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        idx = getattr(batch, "indices", None)
        return batch.inputs, batch.targets, idx if idx is not None else torch.arange(batch.inputs.shape[0])
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        inputs, targets = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        idx = torch.as_tensor(batch[2]) if len(batch) == 3 else torch.arange(inputs.shape[0])
        return inputs, targets, idx
    raise TypeError(f"train_step: expected a Batch or (inputs, targets[, indices]), got {type(batch).__name__}")

