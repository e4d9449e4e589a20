"""Screen-space information drawn over the 3D scene: the info lines, colour bars and legend.

Everything is parented to the canvas scene (pixels, y down) and deliberately made of four
visuals — one Text holding every string, one Image holding both colour bars, one Line for
their frames, one points visual for the legend symbols — because on software OpenGL every
extra visual costs about half a millisecond of Python per frame. ``layout`` is cheap (a few
hundred bytes of data) and runs only when the text or the canvas size changes.
"""

from __future__ import annotations

import numpy as np
from vispy import scene
from vispy.visuals.text.text import FontManager
from vispy.visuals.transforms import STTransform

from app.colormaps import (COVERAGE_LUT, DEPOSIT_LOG_LABEL, ENERGY_LUT, ENERGY_RANGE, REASON_STYLE, SAMPLE_PALETTE,
                           SPAWN_COLOR, SPAWN_SYMBOL, energy_colors)
from app.view.step_visuals import StepPoints
from app.view.style import COLOR_MODES, MARKER_COLOR, SYMBOL_CODES, TEXT_COLOR

#: Points of the energy colour range whose colours the legend shows for the heads (low, middle, high).
LEGEND_ENERGIES = (0.1, 0.5, 0.9)


class Overlay:
    """Text, colour bars and legend of the view; the view sets the fields, then calls ``layout``."""

    BAR_WIDTH = 12
    BAR_GAP_COLUMNS = 6        # transparent image columns between the two bars

    def __init__(self, root: scene.Node, fonts: FontManager) -> None:
        self.text = scene.visuals.Text("", parent=root, color=TEXT_COLOR, font_size=8,
                                       anchor_x="left", anchor_y="center", font_manager=fonts)
        self.bars = scene.visuals.Image(parent=root, interpolation="nearest", clim=(0, 255))
        # One transform, changed in place by ``layout``: a new transform object would make VisPy
        # build the visual's shader program again (tens of ms on software GL) on the next draw.
        self.bars.transform = STTransform()
        self.frames = scene.visuals.Line(parent=root, connect="segments", color=TEXT_COLOR, method="gl")
        self.legend = StepPoints(parent=root)
        self.empty = scene.visuals.Text("no batch yet", parent=root, color=TEXT_COLOR, font_size=14,
                                        anchor_x="center", anchor_y="center", font_manager=fonts)
        self.nodes = [self.text, self.bars, self.frames, self.legend]
        for node in self.nodes + [self.empty]:
            node.order = 100
            node.update_gl_state(depth_test=False, depth_mask=True)
        self.color_mode = COLOR_MODES[0]
        self.samples_shown = 0     # traced samples of the batch ("colour by sample" legend)
        self.info_lines: tuple[str, ...] = ()
        self.bar_titles: list[str] = []
        self.coverage_max = 0.0
        self.energy_range = ENERGY_RANGE   # the shown batch's (energy_range_of)
        self.show_coverage_bar = True
        self.flow_selected = False         # the legend explains the selection ring while one is shown
        self.has_data = False              # before a batch: "no batch yet" only, no bare colour bars
        self._fixed_text: tuple[list[str], list[tuple[float, float]]] = ([], [])   # bars' and legend's

    def entries(self) -> list[tuple[str, list[tuple[float, ...]], str]]:
        """Legend rows: (label, the colours drawn for it, symbol) — the colours heads really get."""
        if self.color_mode == "energy":
            lo, hi = self.energy_range
            heads = ("head (alive): colour = flow energy (bar)",
                     [tuple(float(c) for c in energy_colors(np.array([lo + f * (hi - lo)]), lo, hi)[0])
                      for f in LEGEND_ENERGIES])
        else:
            shown = max(1, min(self.samples_shown, SAMPLE_PALETTE.shape[0]))
            repeat = f", repeating after {SAMPLE_PALETTE.shape[0]}" if self.samples_shown > shown else ""
            heads = (f"head and trajectory: colour = batch sample 1–{shown}{repeat}",
                     [tuple(float(c) for c in SAMPLE_PALETTE[k]) for k in range(shown)])
        rows = [(heads[0], heads[1], "disc"), ("spawn point", [SPAWN_COLOR], SPAWN_SYMBOL)]
        rows += [(name, [color], symbol) for name, color, symbol in REASON_STYLE.values()]
        if self.flow_selected:
            rows.append(("selected flow (its family keeps its colours)", [MARKER_COLOR], "ring"))
        return rows

    def set_visible(self, has_data: bool) -> None:
        self.has_data = has_data
        self.empty.visible = not has_data
        for node in self.nodes:
            node.visible = has_data

    def set_info(self, lines: tuple[str, ...]) -> None:
        """New info lines (the step changed): only the text is laid out again."""
        self.info_lines = tuple(lines)
        self._set_text()

    def layout(self, size: tuple[float, float]) -> None:
        """Place every item for a canvas of ``size`` pixels; called on resize and on changes."""
        w, h = float(size[0]), float(size[1])
        self.empty.pos = (w / 2, h / 2)
        strings: list[str] = []
        pos: list[tuple[float, float]] = []

        bar_h = bar_height(h)
        top = 56.0
        # The energy bar explains the colours only when flows are coloured by energy.
        bars = [("flow energy", ENERGY_LUT, self.energy_range)] if self.color_mode == "energy" else []
        if self.show_coverage_bar:
            bars.append((DEPOSIT_LOG_LABEL, COVERAGE_LUT, (0.0, self.coverage_max)))
        step = self.BAR_WIDTH * (self.BAR_GAP_COLUMNS + 1)
        # Tried as a new user: before the first batch two bare bars showed, with no title or range.
        self.bars.visible = self.frames.visible = bool(bars) and self.has_data
        self.bar_titles = [title for title, _, _ in bars]
        x0 = w - 60.0 - step * (len(bars) - 1)
        columns: list[np.ndarray] = []
        segments = []
        for i, (title, table, (lo, hi)) in enumerate(bars):
            x = x0 + step * i
            strings += [title, _tick(hi), _tick(lo)]
            pos += [(x - 24.0, top - 14.0), (x + self.BAR_WIDTH + 4, top), (x + self.BAR_WIDTH + 4, top + bar_h)]
            columns.append(table[::-1])    # row 0 is the top of the bar: the high end
            if i < len(bars) - 1:
                columns += [np.zeros_like(table)] * self.BAR_GAP_COLUMNS
            r = (x, top, x + self.BAR_WIDTH, top + bar_h)
            segments += [(r[0], r[1]), (r[2], r[1]), (r[2], r[1]), (r[2], r[3]),
                         (r[2], r[3]), (r[0], r[3]), (r[0], r[3]), (r[0], r[1])]
        if bars:
            image = (np.stack(columns, axis=1) * 255).round().astype(np.uint8)
            self.bars.set_data(image)
            self.bars.transform.scale = (self.BAR_WIDTH, bar_h / image.shape[0])
            self.bars.transform.translate = (x0, top)
            self.frames.set_data(pos=np.array(segments, np.float32), connect="segments")

        entries = self.entries()
        n = len(entries)
        ys = h - 14.0 - 16.0 * np.arange(n - 1, -1, -1, dtype=np.float32)
        points, colors, symbols = [], [], []
        for (label, swatches, symbol), y in zip(entries, ys):
            for k, color in enumerate(swatches):        # several swatches side by side
                points.append((12.0 + 9.0 * k, float(y)))
                colors.append(color)
                symbols.append(SYMBOL_CODES[symbol])
            strings.append(label)
            pos.append((20.0 + 9.0 * len(swatches), float(y)))
        self.legend.set_data(np.array(points, np.float32), np.array(colors, np.float32),
                             np.array(symbols, np.float32), size=9.0)
        self._fixed_text = (strings, pos)
        self._set_text()

    def reserved_boxes(self, size: tuple[float, float]) -> list[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) canvas boxes the colour bars and the legend take at ``size``: the camera
        frames the lattice so that none of its corners lies under them."""
        w, h = float(size[0]), float(size[1])
        bar_h = bar_height(h)
        columns = len(self.bar_titles)
        boxes = []
        if columns:
            x0 = w - 60.0 - self.BAR_WIDTH * (self.BAR_GAP_COLUMNS + 1) * (columns - 1) - 30.0
            boxes.append((x0, 0.0, w, 56.0 + bar_h + 8.0))
        rows = len(self.entries())
        boxes.append((0.0, h - 14.0 - 16.0 * rows - 4.0, LEGEND_WIDTH_PX, h))
        return boxes

    def _set_text(self) -> None:
        """Every string of the overlay in its one Text visual: info lines at the top left."""
        strings, pos = self._fixed_text
        self.text.text = list(self.info_lines) + strings
        self.text.pos = np.array([(10.0, 14.0 + 16.0 * i) for i in range(len(self.info_lines))] + pos,
                                 np.float32).reshape(-1, 2)


#: Width the legend's swatches and labels take at the bottom left (px).
LEGEND_WIDTH_PX = 260.0


def bar_height(canvas_height: float) -> float:
    """Colour bars' height: a fifth of the canvas, within 60…150 px (taller bars pushed the
    framed lattice small on a laptop-sized canvas, which keeps its corners out from under them)."""
    return float(np.clip(canvas_height * 0.2, 60.0, 150.0))


def _tick(value: float) -> str:
    return f"{value:.3g}"
