"""The figure registry: every number that crosses from the model to the app, declared once.

A *figure* is one measured quantity — a per-step aggregate over all flows of a batch
(:data:`STEP`) or a per-batch signal (:data:`BATCH`). Its declaration says what it means, its
unit, its shape (a trailing-shape code resolved by :class:`Dims`), its dtype, how the parts of a
batch merge it (micro-batches of ``grad_accumulation_steps`` and DDP ranks, :class:`Merge`),
whether a recording stores it, and who reads it. Everything downstream is driven by these
declarations:

* the tracer packs a step's figures into one device row and unpacks the host copy by
  :class:`~energy_flow.trace.figures.layout.RowLayout` (no hand-written offsets);
* the trainer's per-batch host transfer uses the same layout;
* micro-batches and ranks are merged by :func:`~energy_flow.trace.figures.merge.merge_tables`,
  one rule per figure;
* the app's run history, a replay's history, the recording's columns and the health checks'
  history are built from :data:`BATCH` (``history=True`` / ``recorded=True``).

A new figure is one declaration here, one measurement (in the tracer for a step figure, or the
declaration's ``measure`` for a per-batch figure), one drawing. Code elsewhere names a figure
through these objects (``STEP.spawn_granted.key``, ``BATCH.loss.key``), never by a string
literal: tests/test_figures.py enforces it.

Torch-free, like everything under ``energy_flow.trace``.
"""

from energy_flow.trace.figures.declarations import (BATCH, STEP, BatchFigure, Dims, Figure, Merge, Pad,
                                                    StepFigure, batch_figures, history_figures,
                                                    recorded_batch_figures, step_figures)
from energy_flow.trace.figures.layout import RowLayout
from energy_flow.trace.figures.merge import merge_tables, step_weights

__all__ = ["BATCH", "STEP", "BatchFigure", "Dims", "Figure", "Merge", "Pad", "RowLayout", "StepFigure",
           "batch_figures", "history_figures", "merge_tables", "recorded_batch_figures", "step_figures",
           "step_weights"]
