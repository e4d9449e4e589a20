"""TrainingWorker: the object that owns training and lives in its own QThread.

Why a worker object with one unit of work per slot call (VisPy's ``realtime_data/ex03c``
pattern) rather than a ``while`` loop: while running, every batch ends by re-scheduling the
next one through the thread's event loop, so queued ``pause`` / ``step`` / ``reset``
/ ``apply_config`` calls are handled between batches and never wait for a whole run.

Everything heavy — the teacher (``sentence_transformers`` costs ~4 s to import), the dataset
embeddings, the text bridge, the model and its optimiser — is created by :meth:`load`, which
runs *in the worker thread*, so the window is on screen while it happens. The GUI thread only
ever receives read-only :class:`~app.snapshot.Snapshot` objects and plain dicts.

Errors never escape: a non-finite loss (the trainer already skipped the update), an exception
in a step (``torch.OutOfMemoryError`` included) or bad data pauses training, emits ``error``
with the reason and keeps the model as it was; Run or Step may be tried again.

Closing the app must not wait for a long batch: :meth:`cancel` (thread-safe, called directly
from the GUI thread) sets a flag that forward/backward pre-hooks on the model check once per
propagation step, so the batch in flight is abandoned within one step and the thread can be
joined. The abandoned batch leaves no trace: the trainer counts a step only after it finished.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from typing import Callable

import torch
from PyQt6.QtCore import QObject, QTimer, pyqtSignal, pyqtSlot

from app.snapshot import RunHistory, Snapshot
from app.sources.decoding import decode_batch, make_bridge
from app.sources.loading import device_resources, load_dataset, trainer_from_checkpoint
from app.sources.progress import BatchCancelled, BatchProgress
from app.sources.recording_sink import RecordingSink
from energy_flow.config import EnergyConfig
from energy_flow.runtime.device import describe_device, out_of_memory_advice
from energy_flow.diagnostics.sources import HealthMonitor
from energy_flow.training.cost_estimate import BatchCost, estimate_cost
from energy_flow.training.data import PairDataset
from energy_flow.training.held_out import HeldOutSchedule, schedule_for
from energy_flow.training.report import TrainReport
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.text_bridge import TextBridge
from energy_flow.training.trainer import EnergyTrainer, build_model

log = logging.getLogger(__name__)

#: A callable that returns the dataset to train on (tests inject a small, pre-encoded one).
DatasetFactory = Callable[[], PairDataset]

STATES = ("loading", "idle", "running", "paused", "error")


class TrainingWorker(QObject):
    """Owns teacher, dataset, text bridge and trainer; trains one batch per slot call.

    Construct it in the GUI thread (cheap: nothing is loaded), ``moveToThread`` a QThread,
    then invoke :meth:`load` in that thread (e.g. from ``QThread.started``). All other slots are
    meant to be called through queued signals.
    """

    #: A new :class:`Snapshot` after every batch (also after a batch with a non-finite loss).
    snapshot_ready = pyqtSignal(object)
    #: One of :data:`STATES`.
    state_changed = pyqtSignal(str)
    #: A one-line progress or outcome message for the status bar.
    status = pyqtSignal(str)
    #: A message that must be shown prominently (training was paused, or loading failed).
    error = pyqtSignal(str)
    #: After the model was (re)built: device, data provenance, config, text-bridge state, step.
    loaded = pyqtSignal(dict)
    #: After each batch: device description and, on CUDA, allocated/reserved memory in bytes.
    resources = pyqtSignal(dict)
    #: Recording turned on (True, path) or off (False, why: stopped by the user, or the error).
    recording_changed = pyqtSignal(bool, str)
    #: What the batch in flight is doing: (batch number, "forward" | "backward" | "snapshot"),
    #: and (batch number, "done") with its duration in seconds once it finished.
    phase_changed = pyqtSignal(int, str, float)
    #: Inside a batch: ("forward" | "backward", propagation steps done, steps of the pass), at most
    #: every ``progress.PROGRESS_INTERVAL_S``; forward's total is config.max_steps (an upper bound: the
    #: pass ends early once every flow landed or faded), backward's the forward pass's steps.
    step_progress = pyqtSignal(str, int, int)
    #: The trainer's batch count, after every batch that ran (a skipped update counts too).
    batches_trained = pyqtSignal(int)
    #: The data loaded but no model could be built from this config: the user may fix it.
    config_unbuilt = pyqtSignal(object)
    #: A checkpoint was written: (path, batches trained in it).
    checkpoint_saved = pyqtSignal(str, int)
    #: The model's estimated cost per batch on this device (a ``BatchCost``), measured by a short
    #: probe before its first batch; again with the first batch's own time once it ran.
    cost_estimated = pyqtSignal(object)

    def __init__(self, config: EnergyConfig, data_source: str | None = None,
                 teacher_path: str | None = None, dataset_factory: DatasetFactory | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._config = config
        self._data_source = data_source
        self._teacher_path = teacher_path
        self._dataset_factory = dataset_factory
        self._dataset: PairDataset | None = None
        self._bridge: TextBridge | None = None
        self._bridge_note = "not loaded yet"
        self._trainer: EnergyTrainer | None = None
        self._sampler: BatchSampler | None = None
        #: The dataset rows the model trains on (the train split; every row when the data is too
        #: small to split) and the held-out evaluation on the rest, for one (seed, every, sample).
        self._train_rows: torch.Tensor | None = None
        self._held_out = HeldOutSchedule(None, 0, "not loaded yet")
        self._held_out_key: tuple | None = None
        self._history = RunHistory()
        self._health = HealthMonitor(config.to_dict())
        self._state = "loading"
        self._running = False
        self._tick_pending = False
        self._cancel = threading.Event()
        self._recording = RecordingSink(self.recording_changed.emit, self.status.emit, self.error.emit)
        self._cost: BatchCost | None = None
        self._progress = BatchProgress(self._cancel, self._phase_changed, self.step_progress.emit)

    # ------------------------------------------------------------------ read-only views
    @property
    def config(self) -> EnergyConfig:
        """The config of the current model (unchanged by a rejected apply_config)."""
        return self._config

    @property
    def trainer(self) -> EnergyTrainer | None:
        """The live trainer; read it from another thread only while the worker is idle."""
        return self._trainer

    @property
    def dataset(self) -> PairDataset | None:
        return self._dataset

    @property
    def text_bridge(self) -> TextBridge | None:
        return self._bridge

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------------ thread-safe control
    def cancel(self) -> None:
        """Abandon the batch in flight and refuse further batches (call from any thread).

        Used when the app closes: the model hooks raise within one propagation step, so the
        thread can be joined quickly even on a configuration with multi-second batches.
        """
        self._cancel.set()
        self._running = False

    # ------------------------------------------------------------------ slots
    @pyqtSlot()
    def load(self) -> None:
        """Create teacher, dataset, text bridge and trainer (in the worker thread)."""
        self._set_state("loading")
        try:
            dataset = self._load_dataset()
            config = self._config
            if dataset.dim != config.teacher_dim:
                self.status.emit(f"config.teacher_dim changed from {config.teacher_dim} to {dataset.dim} "
                                 f"to match the data ({dataset.provenance.source})")
                config = config.replace(teacher_dim=dataset.dim)
            self._config = config
            self._dataset = dataset
            self._bridge, self._bridge_note = make_bridge(dataset)
            if self._bridge is None:
                self.status.emit(f"text bridge unavailable: {self._bridge_note}")
            self._install_trainer(config)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the user, not kill the thread
            log.error("loading failed:\n%s", traceback.format_exc())
            self._fail(f"Loading failed: {type(exc).__name__}: {exc}")
            if self._dataset is not None and self._trainer is None:
                self.config_unbuilt.emit(self._config)
            return
        self._set_state("idle")

    @pyqtSlot()
    def run(self) -> None:
        """Train continuously, one batch per event-loop turn, until pause/step/error."""
        if not self._ready("run"):
            return
        self._running = True
        self._set_state("running")
        self._schedule()

    @pyqtSlot()
    def pause(self) -> None:
        """Stop after the batch in flight; the next Run continues from the same step (this is the
        only way to stop: a separate Stop did the same and looked like it ended the run)."""
        if self._running:
            self._running = False
            self._set_state("paused")

    @pyqtSlot()
    def step(self) -> None:
        """Exactly one batch, then paused (also when called while running)."""
        if not self._ready("step"):
            return
        self._running = False
        if self._one_batch():
            self._set_state("paused")

    @pyqtSlot()
    def reset(self) -> None:
        """Rebuild the model from the current config: fresh weights, step 0, empty history."""
        self._running = False
        if self._dataset is None:
            self.load()
            return
        try:
            self._install_trainer(self._config)
        except Exception as exc:  # noqa: BLE001
            log.error("reset failed:\n%s", traceback.format_exc())
            self._fail(f"Reset failed: {type(exc).__name__}: {exc}")
            return
        self.status.emit("model reset: fresh weights, batch 0")
        self._set_state("idle")

    @pyqtSlot(object)
    def apply_config(self, config: EnergyConfig) -> None:
        """Rebuild the model from ``config``; on failure the old model and config stay."""
        self._running = False
        if not isinstance(config, EnergyConfig):
            self._fail(f"apply_config needs an EnergyConfig, got {type(config).__name__}")
            return
        if self._dataset is None:
            self._config = config
            self.load()
            return
        if config.teacher_dim != self._dataset.dim:
            self._fail(f"config.teacher_dim = {config.teacher_dim} does not match the data's "
                       f"embedding dimension {self._dataset.dim}; config not applied")
            return
        try:
            self._install_trainer(config)
        except Exception as exc:  # noqa: BLE001
            log.error("apply_config failed:\n%s", traceback.format_exc())
            self._fail(f"Config not applied ({type(exc).__name__}: {exc}); the previous model is kept")
            return
        self.status.emit("new config applied: model rebuilt, batch 0")
        self._set_state("idle")

    @pyqtSlot(str)
    def save_checkpoint(self, path: str) -> None:
        """Write model, optimiser and step count to ``path`` (atomically; between batches)."""
        if self._trainer is None:
            self.error.emit("Nothing to save: the model is not loaded")
            return
        try:
            self._trainer.save_checkpoint(path)
        except (OSError, ValueError) as exc:
            self.error.emit(f"Checkpoint not saved: {exc}. The model is unchanged; training carries on.")
            return
        self.checkpoint_saved.emit(path, self._trainer.step_count)
        self.status.emit(f"checkpoint saved to {path} (batch {self._trainer.step_count})")

    @pyqtSlot(str)
    def open_checkpoint(self, path: str) -> None:
        """Replace the model by the one saved at ``path`` (its config, this run's device and data).

        On failure the current model stays and ``error`` says why, naming the file."""
        self._running = False
        if self._dataset is None:
            self.error.emit("Cannot open a checkpoint before the data has loaded")
            return
        try:
            trainer = trainer_from_checkpoint(path, self._config, self._dataset.dim)
            self._install_trainer(trainer.config, trainer)
        except (OSError, ValueError) as exc:
            self.error.emit(f"{exc}. The current model is kept.")
            self._set_state(self._state)
            return
        self.status.emit(f"opened checkpoint {path}: batch {self._trainer.step_count}")
        self._set_state("idle")

    @pyqtSlot(str)
    def start_recording(self, path: str) -> None:
        """Append every batch trained from now on to a new recording at ``path``.

        Recording happens here, in the worker thread, right after each batch — not from the
        window, which drops snapshots it has no time to draw.
        """
        self.close_recording("replaced by a new recording")
        if self._trainer is None or self._dataset is None:
            self.recording_changed.emit(False, "cannot record: the model is not loaded yet")
            return
        if not self._config.trace_enabled:
            self.recording_changed.emit(False, "cannot record: tracing is off (config.trace_enabled = False)")
            return
        self._recording.start(path, self._config.to_dict(), self._provenance())

    @pyqtSlot()
    def stop_recording(self) -> None:
        self.close_recording("stopped")

    def close_recording(self, why: str) -> None:
        """Close the recording, if any (callable from the GUI thread once this thread ended)."""
        self._recording.close(why)

    @property
    def recording(self) -> bool:
        return self._recording.writer is not None

    def _provenance(self) -> dict:
        assert self._dataset is not None and self._trainer is not None
        prov = self._dataset.provenance
        return {"teacher": prov.teacher, "data_source": prov.source, "num_pairs": prov.num_pairs,
                "device": describe_device(self._trainer.device), "model": "energy_flow.FlowProcessor",
                "held_out": self._held_out.to_dict()}

    # ------------------------------------------------------------------ internals
    def _set_state(self, state: str) -> None:
        self._state = state
        self.state_changed.emit(state)

    def _fail(self, message: str) -> None:
        self._running = False
        self._set_state("error")
        self.error.emit(message)

    def _ready(self, what: str) -> bool:
        if self._cancel.is_set():
            return False
        if self._trainer is None:
            self.error.emit(f"cannot {what}: the model is not loaded"
                            + (" (loading is still in progress)" if self._state == "loading" else ""))
            return False
        return True

    def _schedule(self) -> None:
        """Queue the next batch behind whatever control calls are already waiting."""
        if not self._tick_pending:
            self._tick_pending = True
            QTimer.singleShot(0, self._tick)

    def _tick(self) -> None:
        self._tick_pending = False
        if not self._running or self._cancel.is_set():
            return
        self._one_batch()
        if self._running:
            self._schedule()

    def _load_dataset(self) -> PairDataset:
        if self._dataset_factory is not None:
            self.status.emit("loading data (injected dataset)…")
            return self._dataset_factory()
        return load_dataset(self._data_source, self._teacher_path, self.status.emit)

    def _install_trainer(self, config: EnergyConfig, trainer: EnergyTrainer | None = None) -> None:
        """Build model + trainer for ``config`` (or take ``trainer``, restored from a checkpoint)
        and swap them in only if that succeeded."""
        assert self._dataset is not None
        if trainer is None:
            self.status.emit("building the model…")
            trainer = EnergyTrainer(build_model(config), config)
        trainer.provenance = self._dataset.provenance
        train_rows, held_out, key = self._held_out_for(config)
        sampler = BatchSampler(len(train_rows), config.batch_size, config.seed)
        # Before the progress hooks go on: the probe works on a copy of the model.
        self.status.emit("estimating the time per batch on this device (a short probe)…")
        idx = train_rows[sampler.indices(trainer.step_count)]   # dataset rows of the train split
        cost = estimate_cost(trainer.processor, config, self._dataset.inputs[idx], self._dataset.targets[idx])
        self._progress.attach(trainer)
        # A recording holds one model's run: steps restart and the config may differ.
        self.close_recording("the model was rebuilt")
        self._trainer, self._sampler, self._config = trainer, sampler, config
        self._train_rows, self._held_out, self._held_out_key = train_rows, held_out, key
        self.status.emit(held_out.describe())
        self._history = RunHistory()
        self._health = HealthMonitor(config.to_dict())
        self._cost = cost
        self.loaded.emit({
            "device": describe_device(trainer.device),
            "data": self._dataset.provenance.to_dict(),
            "config": config,
            "text_bridge": self._bridge_note,
            "text_bridge_available": self._bridge is not None,
            "step": trainer.step_count,
            "batches_per_epoch": sampler.batches_per_epoch,
            "held_out": held_out.describe(),
        })
        self.cost_estimated.emit(cost)

    def _held_out_for(self, config: EnergyConfig) -> tuple[torch.Tensor, HeldOutSchedule, tuple]:
        """The rows to train on and the held-out evaluation for ``config``, refitted only when the
        seed, the interval or the sample changed (seconds on a few thousand pairs)."""
        assert self._dataset is not None
        key = (config.seed, config.held_out_every, config.held_out_sample)
        if key == self._held_out_key and self._train_rows is not None:
            return self._train_rows, self._held_out, key
        self.status.emit("splitting the data; fitting the best simple predictors on the train split…")
        return (*schedule_for(self._dataset, config.seed, config.held_out_every, config.held_out_sample), key)

    def _phase_changed(self, phase: str, seconds: float) -> None:
        """Say what the batch in flight does (the GUI shows it while it waits)."""
        # During forward/backward the trainer has not counted the batch yet; afterwards it has.
        pending = 1 if phase in ("forward", "backward") else 0
        step = self._trainer.step_count + pending if self._trainer is not None else 0
        self.phase_changed.emit(step, phase, seconds)

    def _one_batch(self) -> bool:
        """One optimisation step, its snapshot, and the reaction to anything that went wrong.

        Returns True when the batch trained with finite values (False: paused with an error, or
        abandoned by :meth:`cancel`).
        """
        trainer, sampler, dataset, rows = self._trainer, self._sampler, self._dataset, self._train_rows
        assert trainer is not None and sampler is not None and dataset is not None and rows is not None
        t0 = time.perf_counter()
        try:
            idx = rows[sampler.indices(trainer.step_count)]   # dataset rows of the train split
            report = trainer.train_step((dataset.inputs[idx], dataset.targets[idx], idx))
        except BatchCancelled:
            self._progress.enter("done")
            self.status.emit("batch abandoned (shutting down)")
            return False
        except torch.OutOfMemoryError as exc:
            self._progress.enter("done")
            if trainer.device.type == "cuda":
                torch.cuda.empty_cache()
            self._fail(f"Out of memory on {trainer.device} at batch {trainer.step_count + 1}. Training "
                       f"paused; {out_of_memory_advice(trainer.config)}. ({str(exc).splitlines()[0]})")
            return False
        except Exception as exc:  # noqa: BLE001
            return self._paused_by(exc, f"Training batch {trainer.step_count + 1} failed",
                                   "Training paused; the model is as it was before this batch.")
        self.batches_trained.emit(trainer.step_count)
        if self._cost is not None and self._cost.first_batch_s is None:   # the estimate, checked
            self._cost = self._cost.with_first_batch(time.perf_counter() - t0,
                                                     int(report.flow_stats.active_per_step[:-1].sum()))
            self.cost_estimated.emit(self._cost)
        try:
            with self._progress.evaluating(self._held_out.due(report.step)):
                report = self._held_out.after(trainer, report)
        except BatchCancelled:                       # the app is closing: quietly
            self._progress.enter("done")
            return False
        except Exception as exc:  # noqa: BLE001
            return self._paused_by(exc, f"Batch {report.step} trained, but its held-out evaluation failed")
        self._progress.enter("snapshot")
        try:
            snapshot = self._snapshot(report, t0)
        except Exception as exc:  # noqa: BLE001
            return self._paused_by(exc, f"Batch {report.step} trained, but its snapshot could not be built")
        self._progress.enter("done", time.perf_counter() - t0)
        if snapshot is not None:
            self.snapshot_ready.emit(snapshot)
        self._recording.record(report)
        self.resources.emit(device_resources(trainer.device))
        if report.skipped:
            self._fail(f"Batch {report.step}: {report.nonfinite} — the update was skipped, the model "
                       "is unchanged. Training paused (check the data, or lower the learning rate).")
            return False
        return True

    def _paused_by(self, exc: Exception, what: str, then: str = "Training paused.") -> bool:
        """A batch went wrong: log the traceback, pause with ``what`` and the error named; False."""
        self._progress.enter("done")
        log.error("%s:\n%s", what, traceback.format_exc())
        self._fail(f"{what}: {type(exc).__name__}: {exc}. {then}")
        return False

    def _snapshot(self, report: TrainReport, t0: float) -> Snapshot | None:
        assert self._sampler is not None
        # The held-out evaluation is not training: its seconds are left out (report.timings has them).
        seconds = time.perf_counter() - t0 - report.timings.get("held_out", 0.0)
        # batches/s of the whole unit of work (sampling + step), before the snapshot is built.
        self._history.append(report, 1.0 / seconds if seconds > 0 else math.inf)
        health = self._health.observe_report(report)   # every batch, so the trends see them all
        if report.telemetry is None:
            self.status.emit(f"batch {report.step}: loss {report.loss:.4f} — tracing is off "
                             "(config.trace_enabled = False), so there is nothing to draw")
            return None
        epoch, k = divmod(report.step - 1, self._sampler.batches_per_epoch)
        label = f"batch {report.step} (epoch {epoch + 1}, {k + 1}/{self._sampler.batches_per_epoch})"
        return Snapshot(telemetry=report.telemetry, history=self._history.arrays(), report=report,
                        decoded=decode_batch(self._bridge, self._dataset, report), source="live", batch_label=label,
                        health=health, held_out=self._held_out.to_dict())

