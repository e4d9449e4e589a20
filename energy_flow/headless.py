"""Headless training: the same trainer as the app, with a progress bar, per-batch lines and a
JSON summary. Used by ``python main.py --headless`` and on machines without a display.

Under ``torchrun --nproc_per_node N`` every process trains its share of each batch with
DistributedDataParallel (energy_flow.training.distributed); rank 0 alone draws the progress bar,
prints, records, and writes the checkpoint and summary. The summary says how the run was spread:
``world_size`` (1 without torchrun), ``backend`` ("gloo" or "nccl"; null without torchrun) and
``rank_devices`` (each rank's device, in rank order).

Nothing is lost, and no one else's file is destroyed (docs/reliability.md):

* every output path is checked before the data is loaded (:mod:`energy_flow.files.output_paths`);
* ``--record`` never replaces an existing file unless ``overwrite`` is set, and never one that
  is not a recording; ``append`` continues an existing recording of the same config;
* Ctrl+C, SIGTERM, a failed write, a non-finite batch and a closed stdout (``| head``,
  :mod:`energy_flow.runtime.broken_pipe`) all stop the run after the current batch
  (:mod:`energy_flow.runtime.run_control`): the checkpoint and summary are written if they can be, the
  recording is closed, one line says what was saved where, and the exit status says why
  (3 non-finite, 4 health gate, 74 write failed, 130 SIGINT, 141 stdout closed, 143 SIGTERM);
* ``checkpoint_every`` saves the checkpoint every N batches, each save atomic, so the file
  always holds the last good one.

A non-finite loss or gradient stops the run with the update skipped, so the model is as it
was before that batch: a run never carries on from a broken state silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from energy_flow.files.atomic import write_bytes_atomic
from energy_flow.runtime.broken_pipe import EXIT_BROKEN_PIPE, StopOnBrokenPipe
from energy_flow.config import EnergyConfig
from energy_flow.runtime.device import describe_device, resolve_device
from energy_flow.diagnostics.gate import HealthGate
from energy_flow.files.errors import reason
from energy_flow.files.input_paths import open_regular
from energy_flow.memory.estimate import estimate_memory, format_bytes, machine_memory_bytes
from energy_flow.training.cost_estimate import BatchCost, estimate_cost
from energy_flow.files.output_paths import check_distinct, check_output_path
from energy_flow.runtime.run_control import EXIT_WRITE_FAILED, RunControl
from energy_flow.trace.recording import RecordingWriter, is_recording, report_fields_from
from energy_flow.training import distributed
from energy_flow.training.checkpoint import NonFiniteStateError
from energy_flow.training.checkpoint_integrity import refuse_to_replace_non_checkpoint
from energy_flow.training.data import PairDataset, build_dataset
from energy_flow.training.embedding_cache import default_cache_dir
from energy_flow.trace.figures import BATCH
from energy_flow.training.held_out import FIGURE_OF, SHORT_NAMES, HeldOutSchedule
from energy_flow.training.report import TrainReport
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.simple_predictors import against_best_simple, verdict_line
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
    val_fraction: float = 0.1
    progress: bool = True
    overwrite: bool = False
    append: bool = False
    checkpoint_every: int | None = None
    health_every: int | None = None
    stop_on_failure: bool = False
    config_path: str | None = None    # the --config file, an input no output may replace


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


#: Inputs may share a file with each other: only what is written must be distinct.
_INPUT_PAIRS = (frozenset(("--config", "--resume")), frozenset(("--config", "--data")),
                frozenset(("--resume", "--data")))


def check_outputs(opts: HeadlessOptions) -> str | None:
    """Check every output path before any work; returns the recording's open mode (or None)."""
    if opts.checkpoint_every is not None and not opts.checkpoint:
        raise ValueError("--checkpoint-every needs --checkpoint PATH (where to keep the checkpoint)")
    if opts.overwrite and opts.append:
        raise ValueError("--overwrite and --append exclude each other")
    if (opts.overwrite or opts.append) and not opts.record:
        raise ValueError("--overwrite and --append apply to --record; no --record was given")
    # Every output distinct from every input and from the others (`--config run.json --summary
    # run.json` overwrote the config); a run may keep saving to the checkpoint it resumed from.
    check_distinct({"--config": opts.config_path, "--resume": opts.resume, "--data": opts.data,
                    "--checkpoint": opts.checkpoint, "--summary": opts.summary, "--record": opts.record},
                   allowed=frozenset({frozenset(("--checkpoint", "--resume")), *_INPUT_PAIRS}))
    for what, path in (("--checkpoint", opts.checkpoint), ("--summary", opts.summary), ("--record", opts.record)):
        if path:
            check_output_path(path, what)
    if opts.checkpoint:
        refuse_to_replace_non_checkpoint(opts.checkpoint, "--checkpoint")
    if opts.resume:
        open_regular(opts.resume, "--resume").close()   # a FIFO or device fails now, not after the data
    return recording_mode(Path(opts.record), opts.overwrite, opts.append) if opts.record else None


def recording_mode(path: Path, overwrite: bool, append: bool) -> str:
    """How ``--record`` opens ``path``: never replacing a file by accident, nor a non-recording."""
    if not path.exists() or path.stat().st_size == 0:
        if append:
            raise ValueError(f"--record {path}: --append needs an existing recording, and there is none")
        return "w"
    if not is_recording(path):
        raise ValueError(f"--record {path}: the file exists and is not a recording; refusing to replace "
                         "it (also with --overwrite); choose another path")
    if overwrite:
        return "w"
    if append:
        return "a"
    raise ValueError(f"--record {path}: a recording already exists there; pass --overwrite to replace "
                     "it or --append to add batches to it")


def warn_about_memory(cfg: EnergyConfig) -> None:
    """One warning line when the config's estimated need exceeds this machine's memory."""
    device = str(resolve_device(cfg.device))
    available = machine_memory_bytes(device)
    if available is None:
        return
    size, what = available
    estimate = estimate_memory(cfg)
    if estimate.minimum_bytes > size:
        print(f"warning: this config will not fit in the {format_bytes(size)} {what}: "
              f"{estimate.describe()}", file=sys.stderr)
    elif estimate.worst_case_bytes > size:
        print(f"warning: this config may exceed the {format_bytes(size)} {what} if flows stay alive "
              f"for many steps: {estimate.describe()}", file=sys.stderr)


def announce_cost(trainer: EnergyTrainer, cfg: EnergyConfig, train_set: PairDataset, out) -> BatchCost:
    """Print the estimated memory and time per batch on this device (a short probe of the first
    batch's samples on a copy of the model) before the first batch; a slow one is warned about on
    stderr (memory was warned about before the model was built: :func:`warn_about_memory`)."""
    idx = BatchSampler(len(train_set), cfg.batch_size, cfg.seed).indices(trainer.step_count)
    cost = estimate_cost(trainer.processor, cfg, train_set.inputs[idx], train_set.targets[idx])
    print(cost.line(), file=out)
    for warning in cost.time_warnings():
        print(f"warning: {warning} (training goes on)", file=sys.stderr)
    return cost


def checked_cost(cost: BatchCost) -> dict:
    """The estimate (and the first batch against it) for the summary."""
    return {"estimated_s": cost.seconds, "upper_s": cost.seconds_upper, "first_batch_s": cost.first_batch_s,
            "assumed_flow_steps": cost.assumed_flow_steps, "first_batch_flow_steps": cost.first_batch_flow_steps,
            "probe": None if cost.probe is None else dataclasses.asdict(cost.probe), "text": cost.line()}


@dataclass
class _Outcome:
    """What the run saved (for the summary and the final line)."""

    saved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    checkpoint_step: int | None = None    # the step of the last checkpoint written
    checkpoint_error: str | None = None   # why the last attempt failed, if it did
    recording_lost: str | None = None     # the warning when the recording file went away mid-run


def run(opts: HeadlessOptions, out=sys.stdout) -> int:
    if not distributed.launched_by_torchrun():
        with RunControl() as control:
            return _run(opts, out, control, None)
    context, config = distributed.init_from_env(opts.config)
    try:
        opts = dataclasses.replace(opts, config=config, progress=opts.progress and context.is_main)
        with contextlib.ExitStack() as stack, RunControl() as control:
            sink = out if context.is_main else stack.enter_context(open(os.devnull, "w"))
            return _run(opts, sink, control, context)
    finally:
        distributed.shutdown()


def _run(opts: HeadlessOptions, out, control: RunControl,
         context: distributed.DistributedContext | None) -> int:
    main = context is None or context.is_main
    # A reader that goes away (`| head`) stops the run after its batch, which saves as on SIGTERM.
    out = StopOnBrokenPipe(out, lambda: control.stop("stdout closed (broken pipe)", EXIT_BROKEN_PIPE))
    if not main:  # only rank 0 writes files
        opts = dataclasses.replace(opts, checkpoint=None, summary=None, record=None, checkpoint_every=None,
                                   overwrite=False, append=False)
    cfg = opts.config
    t0 = time.perf_counter()
    record_mode = check_outputs(opts)
    dataset = load_data(cfg, opts.data, opts.teacher)
    if dataset.dim != cfg.teacher_dim:
        cfg = cfg.replace(teacher_dim=dataset.dim)
        print(f"teacher_dim set to {dataset.dim} to match the data ({dataset.provenance.source})", file=out)
    train_set, val_set = dataset.split(opts.val_fraction, seed=cfg.seed) if len(dataset) >= 10 else (dataset, None)
    if main:
        warn_about_memory(cfg)   # before anything is allocated
    trainer = (EnergyTrainer(build_model(cfg), cfg) if context is None
               else distributed.DistributedTrainer(build_model(cfg), cfg, context))
    processes = ({"world_size": 1, "backend": None, "rank_devices": [str(trainer.device)]} if context is None
                 else {"world_size": context.world_size, "backend": context.backend,
                       "rank_devices": distributed.rank_devices(trainer.device)})
    trainer.provenance = dataset.provenance
    if opts.resume:
        trainer.load_checkpoint(opts.resume)
        print(f"resumed from {opts.resume} at step {trainer.step_count}", file=out)
    prov = dataset.provenance
    ranks = f" × {context.world_size} processes ({context.backend})" if context else ""
    print(f"device {describe_device(trainer.device)}{ranks}; data: {prov.source} ({prov.num_pairs} pairs, "
          f"teacher {prov.teacher}); {len(train_set)} train / {len(val_set) if val_set else 0} validation; "
          f"loaded in {time.perf_counter() - t0:.1f}s", file=out)

    held_out = HeldOutSchedule.for_run(train_set, val_set, cfg.held_out_every, cfg.held_out_sample, cfg.seed)
    print(held_out.describe(), file=out)
    held_out_points: list[dict[str, float]] = []
    step_seconds: list[float] = []

    recorder = None
    record_identity = None
    if opts.record:
        if not cfg.trace_enabled:
            raise ValueError("--record needs telemetry, but the config has trace_enabled = false")
        recorder = RecordingWriter(opts.record, cfg.to_dict(), {
            "teacher": prov.teacher, "data_source": prov.source, "num_pairs": prov.num_pairs,
            "device": describe_device(trainer.device), "model": "energy_flow.FlowProcessor",
            "held_out": held_out.to_dict()}, mode=record_mode)
        record_identity = _identity(opts.record)
    # After the outputs are held (a recording in use is refused before any work): the probe.
    cost = announce_cost(trainer, cfg, train_set, out) if context is None else None
    sampler = BatchSampler(len(train_set), cfg.batch_size, cfg.seed)
    outcome = _Outcome()
    failure: TrainReport | None = None
    recorded_bytes: list[int] = []
    losses: list[float] = []
    landed: list[float] = []
    start_step = trainer.step_count
    gate = HealthGate(cfg.to_dict(), opts.health_every, opts.stop_on_failure,
                      lambda line: _write(line, opts.progress, out))

    def save_checkpoint() -> bool:
        try:
            trainer.save_checkpoint(opts.checkpoint, extra={"provenance": prov.to_dict()})
        except NonFiniteStateError as exc:   # the file keeps the last good checkpoint
            kept = (f"it keeps step {outcome.checkpoint_step}" if outcome.checkpoint_step is not None
                    else "it keeps what it held")
            outcome.checkpoint_error = f"step {trainer.step_count} (not written: {exc.detail}; {kept})"
            control.stop("the model holds non-finite values", EXIT_NONFINITE)
            return False
        except OSError as exc:
            outcome.checkpoint_error = f"step {trainer.step_count} ({_cause(exc)})"
            control.stop(f"checkpoint write failed ({_cause(exc)})", EXIT_WRITE_FAILED)
            return False
        outcome.checkpoint_step, outcome.checkpoint_error = trainer.step_count, None
        return True

    def drop_lost_recording() -> None:
        """The file was deleted or replaced under the run: its batches would go nowhere (or into
        someone else's file). Recording stops; training, checkpoints and the summary go on."""
        nonlocal recorder
        outcome.recording_lost = (f"recording {opts.record} was removed or replaced during the run; "
                                  f"recording stopped after {recorder.num_batches} batches")
        print(f"warning: {outcome.recording_lost}, training goes on", file=sys.stderr)
        lost, recorder = recorder, None
        with contextlib.suppress(OSError):
            lost.close()   # the open file is the deleted one: closing it harms no one

    def on_report(report: TrainReport) -> None:
        nonlocal failure, recorder
        report = held_out.after(trainer, report)
        step_seconds.append(report.timings["total"])
        fs = report.flow_stats
        cov = "/".join(f"{c:.2f}" for c in fs.coverage)
        line = (f"batch {report.step:5d}  loss {report.loss:.4f}  mse {report.mse:.5f}  1-cos {report.cosine_loss:.4f}"
                f"  landed {fs.landed_fraction:.2f}  coverage {cov}  {report.timings['total']:.2f}s")
        _write(line, opts.progress, out)
        if cost is not None and report.step == start_step + 1:
            checked = cost.with_first_batch(report.timings["total"], int(fs.active_per_step[:-1].sum()))
            summary_cost.update(checked_cost(checked))
            _write(checked.check_line(), opts.progress, out)
        if held_out.due(report.step):
            held_out_points.append({"batch": report.step, BATCH.held_out_cosine.key: report.held_out_cosine,
                                    BATCH.held_out_top1.key: report.held_out_top1,
                                    "seconds": report.timings["held_out"]})
            _write(held_out_line(held_out, report), opts.progress, out)
        if report.skipped:
            failure = report
            control.stop(f"non-finite batch {report.step}", EXIT_NONFINITE)
            raise _Stop()
        losses.append(report.loss)
        landed.append(fs.landed_fraction)
        unhealthy = gate.observe(report)
        if context is not None:   # every rank judges its own share; all stop if one fails
            unhealthy = trainer.any_rank(unhealthy)
        if unhealthy:
            control.stop(gate.stop_line(), EXIT_UNHEALTHY)
        if recorder is not None and _identity(opts.record) != record_identity:
            drop_lost_recording()
        if recorder is not None and report.telemetry is not None and report.step % opts.record_every == 0:
            try:
                size = os.path.getsize(opts.record)
                recorder.append_batch(report.telemetry, report_fields_from(report))
                recorded_bytes.append(os.path.getsize(opts.record) - size)
            except OSError as exc:
                if _identity(opts.record) != record_identity:
                    drop_lost_recording()
                else:
                    control.stop(f"recording write failed ({exc})", EXIT_WRITE_FAILED)
        done = report.step - start_step
        if opts.checkpoint_every and done % opts.checkpoint_every == 0 and not control.stopping:
            save_checkpoint()
        stopping = control.stopping
        if context is not None:   # every rank stops after the same batch, or the others would hang
            stopping = trainer.any_rank(stopping)
        if stopping:
            control.stop("stopped with another rank", EXIT_WRITE_FAILED)
            raise _Stop()

    summary_cost: dict = checked_cost(cost) if cost is not None else {}
    history = None
    try:
        if not control.stopping:
            history = trainer.run_steps(train_set.inputs, train_set.targets, sampler, opts.batches,
                                        progress=opts.progress, on_report=on_report)
    except _Stop:
        pass
    finally:
        if recorder is not None:
            _close_recording(recorder, outcome, len(recorded_bytes))

    ran = trainer.step_count - start_step
    if opts.checkpoint and (ran > 0 or opts.resume) and outcome.checkpoint_step != trainer.step_count:
        save_checkpoint()
    if opts.checkpoint:
        if outcome.checkpoint_step is not None:
            outcome.saved.append(f"checkpoint {opts.checkpoint} (step {outcome.checkpoint_step})")
        if outcome.checkpoint_error is not None:
            outcome.failed.append(f"checkpoint {opts.checkpoint} at {outcome.checkpoint_error}")
    stopped = control.request
    summary = {
        "config": cfg.to_dict(), "provenance": prov.to_dict(), "device": str(trainer.device), **processes,
        "steps": trainer.step_count, "seconds": time.perf_counter() - t0,
        "losses": losses, "landed_fraction": landed,
        "stopped_on_nonfinite": failure.nonfinite if failure else None,
        "health": gate.summary(),
        "stopped_by_health_gate": (gate.stop_line() if stopped is not None
                                   and stopped.exit_code == EXIT_UNHEALTHY else None),
        "stopped": None if stopped is None else {"why": stopped.why, "exit_code": stopped.exit_code,
                                                 "batches_run": ran},
        "checkpoint": None if not opts.checkpoint else {"path": opts.checkpoint,
                                                        "step": outcome.checkpoint_step},
        "cost_estimate": summary_cost or None,
    }
    if stopped is None and history is not None and main:
        summary["train_eval"] = evaluate(trainer, train_set, _bridge_for(train_set))
        if val_set is not None:
            val = summary["validation_eval"] = evaluate(trainer, val_set, _bridge_for(val_set))
            print(f"validation: mean cosine {val['mean_cosine']:.3f}"
                  + (f", text-bridge top-1 {val['top1']:.3f}" if "top1" in val else ""), file=out)
            against = summary["validation_vs_best_simple"] = against_best_simple(
                train_set, val_set, trainer.predict, seed=cfg.seed)
            print("validation against the best simple predictor: "
                  + (verdict_line(against["verdict"]) if "verdict" in against
                     else f"cannot judge ({against['cannot_judge']})"), file=out)
    # The evaluation's cost beside the training steps' own time (both measured in this run).
    summary["held_out"] = {**held_out.to_dict(), "points": held_out_points, "seconds": held_out.seconds,
                           "train_step_seconds": float(sum(step_seconds))}
    if opts.record:
        summary["record"] = {"path": opts.record, "batches": len(recorded_bytes), "lost": outcome.recording_lost,
                             "bytes_per_batch": float(np.mean(recorded_bytes)) if recorded_bytes else None}
    if opts.summary:
        try:
            text = json.dumps(summary, indent=2) + "\n"
            write_bytes_atomic(opts.summary, text.encode("utf-8"), "summary")
            outcome.saved.append(f"summary {opts.summary}")
        except OSError as exc:
            outcome.failed.append(f"summary {opts.summary} ({_cause(exc)})")
            control.stop(f"summary write failed ({_cause(exc)})", EXIT_WRITE_FAILED)
    stopped = control.request
    if stopped is None:
        if opts.checkpoint:
            print(f"checkpoint written to {opts.checkpoint} (step {outcome.checkpoint_step})", file=out)
        if opts.summary:
            print(f"summary written to {opts.summary}", file=out)
        if recorded_bytes:
            print(f"recorded {len(recorded_bytes)} batches to {opts.record}, "
                  f"{np.mean(recorded_bytes) / 1024:.0f} KiB per batch", file=out)
        return 0
    if main:  # the other ranks saved nothing and stopped for the same reason
        print(_stop_line(stopped.why, trainer.step_count, failure, outcome), file=sys.stderr)
    return stopped.exit_code


def held_out_line(held_out: HeldOutSchedule, report: TrainReport) -> str:
    """The held-out figures of an evaluated batch beside the best simple predictor's on the same
    pairs, saying plainly which it does not beat."""
    assert held_out.evaluator is not None
    parts = []
    for figure, value in ((BATCH.held_out_cosine, report.held_out_cosine), (BATCH.held_out_top1, report.held_out_top1)):
        ref, name = held_out.evaluator.references[FIGURE_OF[figure.key]]
        state = "beats it" if value > ref else "NOT beaten"
        parts.append(f"{SHORT_NAMES[figure.key]} {value:.3f} vs best simple {ref:.3f} ({name.split(' (')[0]}): {state}")
    return (f"held-out at batch {report.step} ({len(held_out.evaluator.sample)} pairs, "
            f"{report.timings['held_out']:.2f}s): " + "; ".join(parts))


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) under ``path``, None when nothing is there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _close_recording(recorder: RecordingWriter, outcome: _Outcome, batches: int) -> None:
    try:
        recorder.close()
    except OSError as exc:
        outcome.failed.append(f"recording {recorder.path} (close failed: {reason(exc)})")
        return
    state = "left open: its flush failed" if recorder.broken else "closed"
    outcome.saved.append(f"recording {recorder.path} ({recorder.num_batches} batches, {state})")


def _stop_line(why: str, step: int, failure: TrainReport | None, outcome: _Outcome) -> str:
    """The one line a stopped run ends with: why, at which batch, what was saved where."""
    head = f"stopped after batch {step}: {why}"
    if failure is not None:
        head += f" ({failure.nonfinite}; the update was skipped and the model kept its previous state)"
    saved = "; saved " + ", ".join(outcome.saved) if outcome.saved else "; nothing saved"
    failed = "; NOT saved: " + ", ".join(outcome.failed) if outcome.failed else ""
    return head + saved + failed


def _cause(exc: OSError) -> str:
    """The OS's reason alone (the path is named by the caller's line)."""
    return os.strerror(exc.errno) if exc.errno else reason(exc)


class _Stop(Exception):
    """Raised from the per-report callback to end the loop after the current batch."""


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
