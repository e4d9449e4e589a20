"""Headless training: the same trainer as the app, with a progress bar, per-batch lines and a
JSON summary. Used by ``python main.py --headless`` and on machines without a display.

Under ``torchrun --nproc_per_node N`` every process trains its share of each batch with
DistributedDataParallel (energy_flow.training.distributed); rank 0 alone prints, records, and
writes the checkpoint and summary.

A non-finite loss or gradient stops the run (the update was already skipped, so the model is
as it was before that batch), saves the checkpoint if one was asked for, writes the summary
with the reason and exits with status 3: a run never carries on from a broken state silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from energy_flow.config import EnergyConfig
from energy_flow.device import describe_device
from energy_flow.diagnostics.gate import HealthGate
from energy_flow.trace.recording import RecordingWriter, report_fields_from
from energy_flow.training import distributed
from energy_flow.training.data import PairDataset, build_dataset
from energy_flow.training.embedding_cache import default_cache_dir
from energy_flow.training.report import TrainReport
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.teacher import TeacherEncoder
from energy_flow.training.text_bridge import TextBridge
from energy_flow.training.trainer import EnergyTrainer, build_model

EXIT_NONFINITE = 3
EXIT_UNHEALTHY = 4


@dataclass
class HeadlessOptions:
    config: EnergyConfig
    batches: int
    data: str | None = None
    teacher: str | None = None
    checkpoint: str | None = None
    resume: str | None = None
    summary: str | None = None
    record: str | None = None
    record_every: int = 1
    health_every: int | None = None
    stop_on_failure: bool = False
    val_fraction: float = 0.1
    progress: bool = True


def load_data(config: EnergyConfig, data: str | None, teacher_path: str | None) -> PairDataset:
    """Dataset through the teacher (cached on disk) or from precomputed embeddings."""
    suffix = Path(data).suffix.lower() if data else ""
    if suffix in (".npy", ".npz", ".pt"):
        return build_dataset(data)
    teacher = TeacherEncoder(teacher_path, device="cpu", cache_dir=default_cache_dir())
    return build_dataset(data, teacher=teacher)


def evaluate(trainer: EnergyTrainer, dataset: PairDataset, bridge: TextBridge | None) -> dict:
    """Mean cosine to target and text-bridge top-1 on ``dataset`` (eval mode, no gradients)."""
    outputs = trainer.predict(dataset.inputs)
    cos = torch.nn.functional.cosine_similarity(outputs, dataset.targets, dim=1)
    result = {"pairs": len(dataset), "mean_cosine": float(cos.mean())}
    if bridge is not None:
        idx = torch.arange(len(dataset))
        result["top1"] = float(bridge.top1_accuracy_for_samples(outputs, idx))
    return result


def run(opts: HeadlessOptions, out=sys.stdout) -> int:
    if not distributed.launched_by_torchrun():
        return _run(opts, out, None)
    context, config = distributed.init_from_env(opts.config)
    try:
        opts = dataclasses.replace(opts, config=config, progress=opts.progress and context.is_main)
        with contextlib.ExitStack() as stack:
            sink = out if context.is_main else stack.enter_context(open(os.devnull, "w"))
            return _run(opts, sink, context)
    finally:
        distributed.shutdown()


def _run(opts: HeadlessOptions, out, context: distributed.DistributedContext | None) -> int:
    main = context is None or context.is_main
    if not main:  # only rank 0 writes files
        opts = dataclasses.replace(opts, checkpoint=None, summary=None, record=None)
    cfg = opts.config
    t0 = time.perf_counter()
    dataset = load_data(cfg, opts.data, opts.teacher)
    if dataset.dim != cfg.teacher_dim:
        cfg = cfg.replace(teacher_dim=dataset.dim)
        print(f"teacher_dim set to {dataset.dim} to match the data ({dataset.provenance.source})", file=out)
    train_set, val_set = dataset.split(opts.val_fraction, seed=cfg.seed) if len(dataset) >= 10 else (dataset, None)
    trainer = (EnergyTrainer(build_model(cfg), cfg) if context is None
               else distributed.DistributedTrainer(build_model(cfg), cfg, context))
    trainer.provenance = dataset.provenance
    if opts.resume:
        trainer.load_checkpoint(opts.resume)
        print(f"resumed from {opts.resume} at step {trainer.step_count}", file=out)
    prov = dataset.provenance
    ranks = f" × {context.world_size} processes ({context.backend})" if context else ""
    print(f"device {describe_device(trainer.device)}{ranks}; data: {prov.source} ({prov.num_pairs} pairs, "
          f"teacher {prov.teacher}); {len(train_set)} train / {len(val_set) if val_set else 0} validation; "
          f"loaded in {time.perf_counter() - t0:.1f}s", file=out)

    recorder = None
    if opts.record:
        if not cfg.trace_enabled:
            raise ValueError("--record needs telemetry, but the config has trace_enabled = false")
        recorder = RecordingWriter(opts.record, cfg.to_dict(), {
            "teacher": prov.teacher, "data_source": prov.source, "num_pairs": prov.num_pairs,
            "device": describe_device(trainer.device), "model": "energy_flow.FlowProcessor"})
    sampler = BatchSampler(len(train_set), cfg.batch_size, cfg.seed)
    failure: TrainReport | None = None
    recorded_bytes: list[int] = []
    gate = HealthGate(cfg.to_dict(), opts.health_every, opts.stop_on_failure,
                      lambda line: _write(line, opts.progress, out))
    unhealthy = False

    def on_report(report: TrainReport) -> None:
        nonlocal failure, unhealthy
        fs = report.flow_stats
        cov = "/".join(f"{c:.2f}" for c in fs.coverage)
        line = (f"batch {report.step:5d}  loss {report.loss:.4f}  mse {report.mse:.5f}  1-cos {report.cosine_loss:.4f}"
                f"  landed {fs.landed_fraction:.2f}  coverage {cov}  {report.timings['total']:.2f}s")
        _write(line, opts.progress, out)
        if report.skipped:
            failure = report
            raise _Stop()
        if recorder is not None and report.telemetry is not None and report.step % opts.record_every == 0:
            size = os.path.getsize(opts.record)
            recorder.append_batch(report.telemetry, report_fields_from(report))
            recorded_bytes.append(os.path.getsize(opts.record) - size)
        stop = gate.observe(report)
        if context is not None:   # every rank judges its own share; all stop if one fails
            stop = trainer.any_rank(stop)
        if stop:
            unhealthy = True
            raise _Stop()

    history = None
    try:
        history = trainer.run_steps(train_set.inputs, train_set.targets, sampler, opts.batches,
                                    progress=opts.progress, on_report=on_report)
    except _Stop:
        pass
    finally:
        if recorder is not None:
            recorder.close()

    if opts.checkpoint:
        trainer.save_checkpoint(opts.checkpoint, extra={"provenance": prov.to_dict()})
        print(f"checkpoint written to {opts.checkpoint}", file=out)
    summary = {
        "config": cfg.to_dict(), "provenance": prov.to_dict(), "device": str(trainer.device),
        "steps": trainer.step_count, "seconds": time.perf_counter() - t0,
        "losses": history.loss if history else [], "landed_fraction": history.landed_fraction if history else [],
        "stopped_on_nonfinite": failure.nonfinite if failure else None,
        "health": gate.summary(),
        "stopped_by_health_gate": gate.stop_line() if unhealthy else None,
    }
    if failure is None and not unhealthy and main:
        summary["train_eval"] = evaluate(trainer, train_set, _bridge_for(train_set))
        if val_set is not None:
            val = summary["validation_eval"] = evaluate(trainer, val_set, _bridge_for(val_set))
            print(f"validation: mean cosine {val['mean_cosine']:.3f}"
                  + (f", text-bridge top-1 {val['top1']:.3f}" if "top1" in val else ""), file=out)
    if opts.record:
        summary["record"] = {"path": opts.record, "batches": len(recorded_bytes),
                             "bytes_per_batch": float(np.mean(recorded_bytes)) if recorded_bytes else None}
        if recorded_bytes:
            print(f"recorded {len(recorded_bytes)} batches to {opts.record}, "
                  f"{np.mean(recorded_bytes) / 1024:.0f} KiB per batch", file=out)
    if opts.summary:
        Path(opts.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"summary written to {opts.summary}", file=out)
    if failure is not None:
        print(f"stopped: {failure.nonfinite} at batch {failure.step}; the update was skipped and the "
              f"model kept its previous state", file=sys.stderr)
        return EXIT_NONFINITE
    if unhealthy:
        print(gate.stop_line(), file=sys.stderr)
        return EXIT_UNHEALTHY
    return 0


class _Stop(Exception):
    """Raised from the per-report callback to end the loop after a non-finite step."""


def _write(line: str, progress: bool, out) -> None:
    if progress:
        from tqdm import tqdm
        tqdm.write(line, file=out)
    else:
        print(line, file=out)


def _bridge_for(subset: PairDataset) -> TextBridge | None:
    """A bridge over the subset's own target texts: top-1 asks "is the output nearest to its own
    target among this split's targets?" (None for precomputed embeddings, which have no texts)."""
    return TextBridge.from_dataset(subset) if subset.target_texts is not None else None

