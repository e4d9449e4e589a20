"""Verdict levels and the result of one health check.

A verdict is what the researcher acts on, so its level is explicit and ordered by how urgently
it needs a look: a failure before a warning before "cannot judge" before ok. "Cannot judge" is a
level of its own, never folded into ok: a check whose evidence was not recorded says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Level(enum.IntEnum):
    """Ordered by urgency: ``max(levels)`` is the worst."""

    OK = 0
    UNKNOWN = 1   # cannot judge from what was recorded
    WARNING = 2
    FAILURE = 3

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def mark(self) -> str:
        """A one-character mark that the bundled fonts have (DejaVu Sans)."""
        return _MARKS[self]


_LABELS = {Level.OK: "ok", Level.UNKNOWN: "cannot judge", Level.WARNING: "warning",
           Level.FAILURE: "failure"}
_MARKS = {Level.OK: "✔", Level.UNKNOWN: "?", Level.WARNING: "⚠", Level.FAILURE: "✖"}


@dataclass(frozen=True)
class Verdict:
    """One check's answer for one batch."""

    key: str              # stable identifier, one per check (see CHECK_KEYS)
    title: str            # short label for a badge, e.g. "Landing"
    level: Level
    detail: str           # one line with the numbers the level was decided from
    advice: str = ""      # what usually causes this and what to try (tooltip)
    value: float | None = None  # the measured quantity the thresholds were applied to

    @property
    def ok(self) -> bool | None:
        """True ok, False warning or failure, None cannot judge."""
        if self.level is Level.UNKNOWN:
            return None
        return self.level is Level.OK


@dataclass(frozen=True)
class HealthReport:
    """Every check's verdict for one batch, in the fixed check order."""

    verdicts: tuple[Verdict, ...]

    def __getitem__(self, key: str) -> Verdict:
        for v in self.verdicts:
            if v.key == key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return iter(self.verdicts)

    def __len__(self) -> int:
        return len(self.verdicts)

    @property
    def worst(self) -> Level:
        return max((v.level for v in self.verdicts), default=Level.UNKNOWN)

    def worst_first(self) -> tuple[Verdict, ...]:
        """Verdicts by urgency (stable within a level, so the layout does not jump)."""
        return tuple(sorted(self.verdicts, key=lambda v: -int(v.level)))

    def failures(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.level is Level.FAILURE)

    def counts(self) -> dict[Level, int]:
        out = {level: 0 for level in Level}
        for v in self.verdicts:
            out[v.level] += 1
        return out
