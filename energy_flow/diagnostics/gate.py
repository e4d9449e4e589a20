"""The headless trainer's health gate: judge every batch, print the verdicts every N batches,
and optionally ask the run to stop at the first failed check."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from energy_flow.diagnostics.sources import HealthMonitor
from energy_flow.diagnostics.text import counts_line, report_lines
from energy_flow.diagnostics.verdict import HealthReport, Level


class HealthGate:
    def __init__(self, config: Mapping[str, Any], every: int | None, stop_on_failure: bool,
                 write: Callable[[str], None]):
        self.monitor = HealthMonitor(config)
        self.every = every
        self.stop_on_failure = stop_on_failure
        self.write = write
        self.last: HealthReport | None = None
        #: The batch and verdicts that stopped the run, when one did.
        self.stopped_at: tuple[int, HealthReport] | None = None

    def observe(self, report: Any) -> bool:
        """Judge ``report``'s batch; True when the run should stop here."""
        health = self.last = self.monitor.observe_report(report)
        failed = health.worst is Level.FAILURE
        if (self.every and report.step % self.every == 0) or (failed and self.stop_on_failure):
            self.write(f"health at batch {report.step}: {counts_line(health)}")
            for line in report_lines(health):
                self.write(f"  {line}")
        if failed and self.stop_on_failure:
            self.stopped_at = (report.step, health)
            return True
        return False

    def summary(self) -> dict[str, Any] | None:
        """The last judged batch's verdicts, for the JSON summary."""
        if self.last is None:
            return None
        return {v.key: {"level": v.level.label, "detail": v.detail} for v in self.last}

    def stop_line(self) -> str:
        if self.stopped_at is None:
            return "stopped by the health gate: a check failed on another rank"
        step, health = self.stopped_at
        names = ", ".join(f"{v.title} ({v.detail})" for v in health.failures())
        return f"stopped by the health gate at batch {step}: {names}"
