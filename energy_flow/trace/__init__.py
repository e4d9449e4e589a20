"""Telemetry of propagation steps (what the app draws) and the recording file format."""

from energy_flow.trace.telemetry import (PERCENTILES, REASON_ACTIVE, REASON_FADED, REASON_LANDED,
                                         REASON_NAMES, REASON_TIMED_OUT, BatchTelemetry, FlowSample,
                                         FlowStats, StepAggregates)

__all__ = ["PERCENTILES", "REASON_ACTIVE", "REASON_FADED", "REASON_LANDED", "REASON_NAMES",
           "REASON_TIMED_OUT", "BatchTelemetry", "FlowSample", "FlowStats", "StepAggregates"]
