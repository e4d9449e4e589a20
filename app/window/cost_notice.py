"""What the live model's batches will cost, shown before the first one runs (issue 28).

The worker measures it (``TrainingWorker.cost_estimated``: a short probe on a copy of the model,
:mod:`energy_flow.training.cost_estimate`) when the model is built — at start-up, after Reset,
after Config → Apply — and again once the first batch ran, with that batch's own time. Nothing
here blocks: the status bar carries a short line, the Config panel the whole estimate and its
basis, and a config that will be slow or may not fit is named in the banner above the view
(training may still go on).
"""

from __future__ import annotations

from typing import Any

from energy_flow.training.cost_estimate import BatchCost, format_seconds
from energy_flow.memory.estimate import format_bytes

#: How long the status bar keeps the estimate (ms); the Config panel keeps it for good.
STATUS_MS = 20_000


def status_text(cost: BatchCost) -> str:
    """The short form for the status bar (it cuts long lines)."""
    checked = cost.check_line()
    if checked is not None:
        return checked.split(";")[0]
    m = cost.memory
    warn = "⚠ " if cost.warnings() else ""
    return (f"{warn}estimated {format_seconds(cost.seconds)} per batch, {format_bytes(m.minimum_bytes)}–"
            f"{format_bytes(m.worst_case_bytes)} memory (Config panel: the basis)")


def show_cost(window: Any, cost: BatchCost) -> None:
    """Show ``cost`` in ``window``'s status bar, Config panel and (warnings) banner."""
    window.statusBar().showMessage(status_text(cost), STATUS_MS)
    if cost.seconds is not None and cost.first_batch_s is None:   # beside every batch's phase from now on
        window.run_status.show_estimate(f"est. {format_seconds(cost.seconds)}", cost.line())
    window.config_panel.show_cost(cost)
    warnings = cost.warnings()
    if warnings and cost.first_batch_s is None:
        window.banner.show_message("⚠ This config — " + "; ".join(warnings) + ". Training may still go on; "
                                   "the Config panel has the estimate and its basis.", "info")
