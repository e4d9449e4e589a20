"""Telemetry of propagation steps (what the app draws) and the recording file format."""

from energy_flow.trace.recorder import FlowRecorder
from energy_flow.trace.recording import (FORMAT, SCHEMA_VERSION, BatchInfo, Recording, RecordingError,
                                         RecordingWriter, export_snapshot, open_recording,
                                         report_fields_from)
from energy_flow.trace.telemetry import (PERCENTILES, REASON_ACTIVE, REASON_FADED, REASON_LANDED,
                                         REASON_NAMES, REASON_TIMED_OUT, SATURATION_MARGIN,
                                         SATURATION_NAMES, STILL_EPSILON, BatchTelemetry, FlowSample,
                                         FlowStats, StepAggregates)
from energy_flow.trace.training_signals import MODULES, REPORT_FIELDS

__all__ = ["PERCENTILES", "REASON_ACTIVE", "REASON_FADED", "REASON_LANDED", "REASON_NAMES",
           "REASON_TIMED_OUT", "SATURATION_MARGIN", "SATURATION_NAMES", "STILL_EPSILON", "MODULES",
           "REPORT_FIELDS", "BatchTelemetry", "FlowSample", "FlowStats", "StepAggregates",
           "FORMAT", "SCHEMA_VERSION", "BatchInfo", "FlowRecorder", "Recording", "RecordingError",
           "RecordingWriter", "export_snapshot", "open_recording", "report_fields_from"]
