"""Recordings: batch telemetry in one HDF5 file, appended while training and read back lazily.

The schema is specified in ``docs/recording-format.md`` (readable without this code); this
package is its only writer and reader in the project: ``schema`` (names, shapes, chunking),
``writer``, ``reader``, ``report_columns`` (training signals ↔ columns), ``provenance``.

Why the file is laid out as it is: a recording must survive its writer being killed (a
headless ``--record`` run stopped with SIGKILL, a crash) and must be readable *while* it grows
(the app following a live run). HDF5's SWMR mode (single writer, multiple readers) gives both —
the file on disk is kept consistent after every flush, and readers in other processes may open
and refresh it — but a SWMR writer may not create groups, datasets or attributes. So every
dataset is created up front with an unlimited leading axis and grows by resizing:

* ``batches/*`` — one row per batch (metadata, offsets, plane images, the ``complete`` flag);
* ``steps/*`` — per-step aggregates of all batches, concatenated along the step axis;
* ``flows/*`` — sampled flows of all batches, concatenated; trajectories are stored flat, one
  row per (flow, step), ``F·(T+1)`` rows per batch.

Each batch's segment of ``steps/*`` and ``flows/*`` starts on a chunk boundary, so appending a
batch never rewrites a chunk holding an earlier batch: a writer killed mid-append cannot damage
what was already committed. A batch becomes visible when its ``batches/complete`` entry is set
to 1, which is written and flushed only after all its data has been flushed.
"""

from energy_flow.trace.recording.figure_series import recorded_series
from energy_flow.trace.recording.guards import DiskFullError, abandoned_writers, is_recording
from energy_flow.trace.recording.provenance import environment_provenance, git_commit
from energy_flow.trace.recording.reader import BatchInfo, Recording, open_recording
from energy_flow.trace.recording.schema import (COMPRESSION, COMPRESSIONS, FORMAT, SCHEMA_VERSION,
                                                RecordingError, RecordingLayout, layout_from_config)
from energy_flow.trace.recording.writer import RecordingWriter, export_snapshot
from energy_flow.trace.training_signals import MODULES, REPORT_FIELDS, report_fields_from

__all__ = ["COMPRESSION", "COMPRESSIONS", "FORMAT", "MODULES", "REPORT_FIELDS", "SCHEMA_VERSION",
           "BatchInfo", "DiskFullError", "Recording", "RecordingError", "RecordingLayout",
           "RecordingWriter", "abandoned_writers", "environment_provenance", "export_snapshot",
           "git_commit", "is_recording", "layout_from_config", "open_recording", "recorded_series",
           "report_fields_from"]
