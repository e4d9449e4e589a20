"""Plain-text rendering of verdicts, for terminals: ``trace health`` and ``--health-every``."""

from __future__ import annotations

from typing import Iterable, Sequence

from energy_flow.diagnostics.verdict import HealthReport, Level, Verdict

_WIDTH = 14  # longest title ("Finite values") plus one


def verdict_line(v: Verdict) -> str:
    return f"{v.level.mark} {v.level.label:<12} {v.title:<{_WIDTH}} {v.detail}"


def report_lines(report: HealthReport, worst_first: bool = True) -> list[str]:
    verdicts = report.worst_first() if worst_first else report.verdicts
    return [verdict_line(v) for v in verdicts]


def counts_line(report: HealthReport) -> str:
    c = report.counts()
    return (f"{c[Level.FAILURE]} failure(s), {c[Level.WARNING]} warning(s), "
            f"{c[Level.UNKNOWN]} cannot judge, {c[Level.OK]} ok")


def summary_lines(reports: Sequence[tuple[int, HealthReport]]) -> list[str]:
    """Per check over many batches: the worst level, in how many batches it was not ok, and the
    detail of the batch where it was worst (the latest such batch)."""
    if not reports:
        return ["no complete batch to judge"]
    keys = [v.key for v in reports[0][1].verdicts]
    lines = []
    worst_rows = []
    for key in keys:
        seen = [(i, r[key]) for i, r in reports]
        worst = max(v.level for _, v in seen)
        bad = sum(1 for _, v in seen if v.level in (Level.WARNING, Level.FAILURE))
        unknown = sum(1 for _, v in seen if v.level is Level.UNKNOWN)
        at, verdict = [(i, v) for i, v in seen if v.level == worst][-1]
        worst_rows.append((worst, key, at, verdict, bad, unknown, len(seen)))
    worst_rows.sort(key=lambda row: -int(row[0]))
    for worst, _, at, verdict, bad, unknown, n in worst_rows:
        tally = f"{bad}/{n} batches not ok" + (f", {unknown} cannot judge" if unknown else "")
        lines.append(f"{worst.mark} {worst.label:<12} {verdict.title:<{_WIDTH}} {tally}; "
                     f"worst at batch {at}: {verdict.detail}")
    return lines


def worst_level(reports: Iterable[HealthReport]) -> Level:
    return max((r.worst for r in reports), default=Level.UNKNOWN)
