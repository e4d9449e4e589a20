"""Where the batch in flight is: its phase, its propagation step, and the way to abandon it.

Why hooks on the model: the trainer's step is one call that takes seconds on the larger presets;
the carrier runs once per propagation step in the forward pass and the neuron's backward once
per step in the backward pass, so a forward pre-hook and a backward pre-hook see every step.
Each hook does a flag compare, an integer increment and a clock read — nothing that waits for
the device — so the step loop pays no host synchronisation for it. The GUI hears of a step at
most every :data:`PROGRESS_INTERVAL_S` (a queued signal per step would flood it).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Callable, Iterator

from energy_flow.training.trainer import EnergyTrainer

#: Step progress is reported at most this often (s).
PROGRESS_INTERVAL_S = 0.2
#: The phase shown while the held-out evaluation runs its forward passes.
EVALUATION = "held-out evaluation"


class BatchCancelled(Exception):
    """Raised inside the model by the hooks once cancelled; never leaves the worker."""


class BatchProgress:
    """Tracks the batch in flight through hooks :meth:`attach` puts on a trainer's model.

    ``on_phase(phase, seconds)``: the phase changed ("forward", "backward", "snapshot", "done";
    ``seconds`` is the batch's duration with "done", NaN otherwise). ``on_step(phase, k, n)``:
    k propagation steps of the pass done, of n (forward: ``max_steps``, an upper bound, as the
    pass ends once every flow landed or faded; backward: the steps the forward pass ran).
    """

    def __init__(self, cancel: threading.Event, on_phase: Callable[[str, float], None],
                 on_step: Callable[[str, int, int], None]) -> None:
        self._cancel = cancel
        self._on_phase = on_phase
        self._on_step = on_step
        self.phase = "done"
        self._max_steps = 0
        self._pass_steps = 0
        self._forward_steps = 0
        self._reported_at = 0.0
        self._evaluating = False

    def attach(self, trainer: EnergyTrainer) -> None:
        """Hook ``trainer``'s model: cancellation and progress within one propagation step."""
        self._max_steps = trainer.config.max_steps

        def hook(phase: str) -> Callable[..., None]:
            def on_step(*_: object) -> None:
                if self._cancel.is_set():
                    raise BatchCancelled("batch abandoned: the worker was cancelled")
                shown = EVALUATION if self._evaluating else phase
                self.enter(shown)
                self._count(shown)
            return on_step

        trainer.processor.carrier.register_forward_pre_hook(hook("forward"))
        trainer.processor.neuron.register_full_backward_pre_hook(hook("backward"))

    @contextlib.contextmanager
    def evaluating(self, due: bool = True) -> Iterator[None]:
        """The model's forward passes inside are the held-out evaluation, not training: shown as
        such (and cancellable like a training pass); ``due`` False: nothing is evaluated."""
        if not due:
            yield
            return
        self._evaluating = True
        self.enter(EVALUATION)
        try:
            yield
        finally:
            self._evaluating = False

    def enter(self, phase: str, seconds: float = math.nan) -> None:
        """Report ``phase`` once per change; a new pass counts its steps from 0."""
        if phase != self.phase:
            self.phase = phase
            self._pass_steps = 0
            self._on_phase(phase, seconds)

    def _count(self, phase: str) -> None:
        self._pass_steps += 1
        if phase == "forward":
            self._forward_steps = self._pass_steps
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_INTERVAL_S:
            self._reported_at = now
            total = self._max_steps if phase == "forward" else max(self._forward_steps, self._pass_steps)
            self._on_step(phase, self._pass_steps, total)
