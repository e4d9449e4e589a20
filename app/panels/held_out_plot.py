"""The held-out figures over training, against the best simple predictor on the same pairs.

Drawn in the Training panel: the model's held-out cosine and top-1 at every evaluated batch
(``BATCH.held_out_cosine`` / ``BATCH.held_out_top1``, NaN between evaluations), and for each a
dashed horizontal line at the best simple predictor's value on the same held-out sample (mean
target, identity, ridge → 0, ridge → identity, fitted on the train split:
``energy_flow.training.held_out``). The title says for each figure whether the model's latest
point beats its line — plainly, "not beaten" where it does not — with the line's value and
predictor; the legend under the plot is one row (the two figures and "best simple", dashed), so
the plot keeps its height for data.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.panels.series import legend_below, set_series, set_title
from energy_flow.trace.figures import BATCH
from energy_flow.training.held_out import SHORT_NAMES, references_of

#: Per held-out figure: legend word and colour.
SERIES = ((BATCH.held_out_cosine, "cosine", (110, 200, 255)), (BATCH.held_out_top1, "top-1", (255, 120, 200)))
#: The legend's name for the dashed reference lines, and the colour of its sample.
REFERENCE_WORD = "best simple"
REFERENCE_SAMPLE_COLOR = (200, 200, 200)


def beats_text(name: str, value: float, reference: tuple[float, str] | None) -> str:
    """"NOT beaten: held-out top-1 0.380 vs best simple 0.480 (identity)" (or "beaten: …"); the
    verdict first, so a narrow dock that cuts the line keeps it."""
    if reference is None:
        return f"{name} {value:.3f} (no best-simple reference known)"
    ref, predictor = reference
    state = "beaten" if value > ref else "NOT beaten"
    return f"{state}: {name} {value:.3f} vs best simple {ref:.3f} ({predictor})"


class HeldOutPlot:
    """One pyqtgraph plot: the held-out curves, their reference lines and a legend below."""

    def __init__(self, plot: pg.PlotItem) -> None:
        self.plot = plot
        plot.setLabel("left", "held-out")
        plot.setYRange(0, 1, padding=0.02)
        plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")], []])
        legend_below(plot, columns=len(SERIES) + 1)   # one row; the values are in the title
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.reference_lines: dict[str, pg.PlotDataItem] = {}
        for figure, word, color in SERIES:
            curve = plot.plot(pen=pg.mkPen(color, width=1.5), symbol="o", symbolSize=4,
                              symbolPen=pg.mkPen(color), symbolBrush=pg.mkBrush(color), name=word)
            self.curves[figure.key] = curve
            self.reference_lines[figure.key] = plot.plot(pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine))
        # the legend's sample of a dashed line (no data): the lines take their figure's colour
        self._dashed_sample = plot.plot(pen=pg.mkPen(REFERENCE_SAMPLE_COLOR, width=1, style=Qt.PenStyle.DashLine),
                                        name=REFERENCE_WORD)
        #: What the title says, for tests and the status of the last draw.
        self.title = ""

    def draw(self, history: dict[str, np.ndarray], x: np.ndarray, held_out: dict | None) -> None:
        refs = references_of(held_out)
        lines = []
        finite_x = x[np.isfinite(x)]
        for figure, _word, _color in SERIES:
            y = np.asarray(history.get(figure.key, np.zeros(0)), dtype=np.float64)
            keep = np.isfinite(y) & np.isfinite(x[: y.size]) if y.size == x.size else np.zeros(0, dtype=bool)
            set_series(self.curves[figure.key], x[keep], y[keep])
            ref = refs.get(figure.key)
            if ref is not None and finite_x.size:
                self.reference_lines[figure.key].setData(
                    [float(finite_x.min()), float(max(finite_x.max(), finite_x.min() + 1))], [ref[0], ref[0]])
            else:
                self.reference_lines[figure.key].setData([], [])
            if keep.any():
                lines.append(beats_text(SHORT_NAMES[figure.key], float(y[keep][-1]), ref))
        if lines:
            self.title = "<br>".join(lines)
        elif held_out is None:
            self.title = "held-out: not evaluated in this run (none recorded)"
        elif held_out.get("every", 0) == 0:
            self.title = f"held-out evaluation off: {held_out.get('off', 'unknown reason')}"
        else:
            known = [f"{word} {refs[f.key][0]:.3f} ({refs[f.key][1]})" for f, word, _c in SERIES if f.key in refs]
            self.title = (f"held-out: first evaluation at batch {held_out['every']} ({held_out.get('sample')} pairs)"
                          + (f"<br>best simple (dashed): {', '.join(known)}" if known else ""))
        set_title(self.plot, self.title)
