"""The 3D lattice view: where the flows of the newest batch went, step by step.

A VisPy SceneCanvas inside a QWidget, with the controls row above it (:mod:`app.view.controls`)
and an FPS readout. Rendering is software OpenGL on the build machines (docs/architecture.md, "Rendering
budget"), so the view is built for few draw calls and cheap updates; its parts, one module each:

* :mod:`~app.view.native_canvas` — the canvas, drawn into a native window (no per-frame
  composition of the whole main window);
* :mod:`~app.view.sampling` — the display budget: which flows are drawn ("showing N of M");
* :mod:`~app.view.geometry` — what is drawn of them, built once per batch, ordered by step;
* :mod:`~app.view.step_visuals` — points and segments shown by a step window and a uniform;
* :mod:`~app.view.flow_layers` — the flow visuals: upload once, then step = uniform, colour
  mode and lineage dimming = colour buffers;
* :mod:`~app.view.lattice_frame` — box, planes, labels and coverage;
* :mod:`~app.view.overlay` — info lines, colour bars and legend in screen space;
* :mod:`~app.view.flow_selection`, :mod:`~app.view.picking`, :mod:`~app.view.highlight`,
  :mod:`~app.view.hover` — click to select, lineage, the selected flow's ring, hover tooltip.

Lattice coordinates are normalised to [-1, 1] on every axis. For display the whole 3D scene
sits under one scale transform ``(W, H, D) / max(W, H)`` so the box has the lattice's
proportions; the data itself stays in lattice coordinates.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import vispy
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QVBoxLayout, QWidget

vispy.use("pyqt6")

from vispy import scene  # noqa: E402  (the backend must be chosen before scene is used)
from vispy.visuals.text.text import FontManager  # noqa: E402
from vispy.visuals.transforms import STTransform  # noqa: E402

from app.colormaps import ENERGY_RANGE, energy_range_of  # noqa: E402
from app.snapshot import Snapshot  # noqa: E402
from app.view.controls import ViewControls  # noqa: E402
from app.view.flow_layers import FlowLayers  # noqa: E402
from app.view.flow_selection import FlowSelection  # noqa: E402
from app.view.geometry import FlowGeometry, build_geometry  # noqa: E402
from app.view.hover import FlowHover  # noqa: E402
from app.view.lattice_frame import LatticeFrame, signed  # noqa: E402
from app.view.native_canvas import native_scene_canvas, render_offscreen  # noqa: E402
from app.view.overlay import Overlay  # noqa: E402
from app.view.picking import Transform  # noqa: E402
from app.view.style import BACKGROUND, COLOR_MODES, LAYERS  # noqa: E402
from energy_flow.trace.telemetry import BatchTelemetry, FlowSample  # noqa: E402

#: Flows drawn by default. Chosen with benchmarks/bench_view.py: the largest measured budget that
#: kept a ~900×530 canvas above 20 fps (median of repeated runs) while debug-preset training ran
#: in a background thread, on the shared 2-core Mesa llvmpipe build machines (docs/BENCHMARKS.md,
#: "Lattice view frame rate"). Trajectory lines dominate the frame on software GL (their
#: rasterisation, not their upload); on a real GPU raise it freely.
DEFAULT_DISPLAY_BUDGET = 1_000

FPS_WINDOW_S = 1.0
#: Camera framing: the box's corners stay this far inside the canvas, and below the info lines.
FIT_MARGIN_PX = 8.0
FIT_TOP_PX = 44.0
FIT_ZOOM_STEP = 1.05
FIT_MAX_TRIES = 60


#: What the view's speed reading means (above the canvas and in the status bar): a new user read
#: "idle" as the training's state.
VIEW_SPEED_TIP = ("How fast the 3D view redraws. \"view: idle\": nothing on it changed in the last second, "
                  "so it draws nothing (it redraws only for a new batch, a step, a turn or a zoom). "
                  "It says nothing of training: the state badge in the status bar does.")


def view_speed_text(fps: float, idle: bool) -> str:
    """"view: idle" while the view draws nothing, else its frame rate ("view 57 fps")."""
    return "view: idle" if idle or fps < 0.5 else f"view {fps:.0f} fps"


class LatticeView(QWidget):
    """3D view of the newest batch: lattice box, planes, coverage, trajectories, heads, events.

    Public: ``set_snapshot``, ``clear``, ``set_step``, ``set_layer_visible``, ``set_color_mode``,
    ``set_display_budget``, ``reset_view``, ``render_image``, ``selection`` (select a flow,
    ``picked`` on a click), ``hover`` (its ``text``), and the read-only ``fps``, ``idle``,
    ``shown_flows``, ``total_flows``, ``head_count``, ``segment_count``, ``step``, ``info_text``,
    ``is_empty``, ``empty_message``, ``geometry``, ``flows``, ``head_colors``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._snapshot: Snapshot | None = None
        self._requested_step: int | None = None
        self._step = 0
        self._color_mode = COLOR_MODES[0]
        self._budget = DEFAULT_DISPLAY_BUDGET
        self._energy_range = ENERGY_RANGE
        self._layer_on = {name: True for name in LAYERS}
        self._draw_times: deque[float] = deque(maxlen=240)
        self._shape: tuple[int, int, int] | None = None

        # One glyph atlas for every text of this canvas: VisPy gives each Text its own by
        # default, and rasterising the same glyphs a dozen times costs seconds on first draw.
        fonts = FontManager()
        self.canvas = native_scene_canvas(keys=None, bgcolor=BACKGROUND, show=False, parent=self)
        self.canvas.events.draw.connect(self._on_draw)
        self.canvas.events.resize.connect(lambda _e: self._overlay.layout(self.canvas.size))
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=40.0, elevation=24.0, azimuth=-55.0)
        self._world = scene.Node(parent=self.view.scene)
        # Its scale is set in place per batch: assigning a new transform object would make VisPy
        # build every flow and frame visual's shader program again on the next draw (~90 ms of a
        # new batch's ~150 ms on software GL).
        self._world.transform = STTransform()
        self._frame = LatticeFrame(self._world, fonts)     # their draw orders interleave: see both
        self._flows = FlowLayers(self._world)
        self.layers: dict[str, list[scene.Node]] = {**self._frame.layers, **self._flows.layers}
        self._overlay = Overlay(self.canvas.scene, fonts)
        self._overlay.layout(self.canvas.size)

        self.controls = ViewControls(self._budget)
        self.controls.fps_label.setToolTip(VIEW_SPEED_TIP)
        self.controls.layer_toggled.connect(self.set_layer_visible)
        self.controls.color_mode_chosen.connect(self.set_color_mode)
        self.controls.budget_chosen.connect(self.set_display_budget)
        self.controls.reset_requested.connect(self.reset_view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.controls)
        layout.addWidget(self.canvas.native, 1)

        self.selection = FlowSelection(self, self)     # click picking, lineage, the selected flow's ring
        self.hover = FlowHover(self.canvas, self.selection.pick_row, self._hover_context, self)
        self._fps_timer = QTimer(self)
        self._fps_timer.setInterval(500)
        self._fps_timer.timeout.connect(self._refresh_fps_label)
        self._fps_timer.start()
        self._apply_visibility()

    # ------------------------------------------------------------------ public contract
    def set_snapshot(self, snapshot: Snapshot) -> None:
        """A new batch: rebuild the scene's geometry (box, planes, coverage, flows)."""
        self._snapshot = snapshot
        tel = snapshot.telemetry
        self._world.transform.scale = self._display_scale(tel)
        self._frame.build(tel)
        self._overlay.coverage_max = self._frame.coverage_max
        self._rebuild_flows()
        if tel.lattice_shape != self._shape:   # first batch, or a new lattice: frame it
            self._shape = tel.lattice_shape
            self.reset_view()

    def clear(self) -> None:
        """Back to "no batch yet": the model was rebuilt, so the batch drawn belongs to no run."""
        self._snapshot = None
        self._shape = None            # the next batch is framed afresh (the lattice may differ)
        self._flows.show(None, self._color_mode)
        self._overlay.set_info(())
        self._apply_visibility()

    def set_step(self, step: int) -> None:
        """Show the state after ``step`` propagation steps (clamped to the batch's steps): the
        flow visuals only get the step as a uniform; the info line says which step it is."""
        self._requested_step = int(step)
        if self._snapshot is None:
            return
        self._step = int(np.clip(step, 0, self._snapshot.telemetry.num_steps))
        self._show_step()

    def set_layer_visible(self, name: str, visible: bool) -> None:
        """Show or hide one layer (only ``visible`` flags change; no data is touched)."""
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; layers are {', '.join(LAYERS)}")
        self._layer_on[name] = bool(visible)
        self.controls.show_layer(name, bool(visible))
        self._apply_visibility()
        if name == "coverage":
            self._refresh_overlay()

    def set_color_mode(self, mode: str) -> None:
        """Colour flows by energy or by batch sample (only colour buffers change)."""
        if mode not in COLOR_MODES:
            raise ValueError(f"unknown colour mode {mode!r}; choose one of {COLOR_MODES}")
        self._color_mode = mode
        self._overlay.color_mode = mode
        self.controls.show_color_mode(mode)
        self._flows.recolor(mode, self.selection.keep(self.geometry))
        if self._snapshot is not None:
            self._overlay.set_info(self._info_lines(self._snapshot.telemetry))
        self._refresh_overlay()

    def set_display_budget(self, budget: int) -> None:
        """Draw at most ``budget`` flows (a data change: the drawn sample is rebuilt)."""
        self._budget = int(budget)
        self.controls.show_budget(self._budget)
        if self._snapshot is not None:
            self._rebuild_flows()

    def reset_view(self) -> None:
        """Turntable back to the default angle, framing the whole lattice box."""
        cam = self.view.camera
        cam.elevation, cam.azimuth = 24.0, -55.0
        sx, sy, sz = self._world.transform.scale[:3] if self._snapshot else (1.0, 1.0, 1.0)
        cam.set_range(x=(-sx, sx), y=(-sy, sy), z=(-sz, sz), margin=0.08)
        self._fit_camera(tuple(self.canvas.size))
        self.canvas.update()

    def box_corners_on_screen(self) -> np.ndarray:
        """[8, 2] canvas pixel positions (x right, y down) of the corners of what the scene draws:
        the lattice box widened by half a cell in x and y, where the edge cells' coverage quads end."""
        hx, hy = 1.0, 1.0
        if self._snapshot is not None:
            w, h, _ = self._snapshot.telemetry.lattice_shape
            hx, hy = 1.0 + 1.0 / max(w - 1, 1), 1.0 + 1.0 / max(h - 1, 1)
        corners = np.array([[x * hx, y * hy, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], np.float32)
        mapped = self.scene_transform().map(corners)
        return mapped[:, :2] / mapped[:, 3:4]

    def _fit_camera(self, size: tuple[float, float]) -> None:
        """Zoom out until the whole box lies inside the canvas, below the two info lines, with no
        corner under the colour bars or the legend (at 1100×700 the box ran under both).

        ``set_range`` fits the unrotated box; tilted by the default elevation and azimuth its
        bottom corners fell off the canvas (and off exported images of another aspect ratio).
        Projecting the eight corners is exact for any aspect, lattice shape and field of view.
        """
        w, h = float(size[0]), float(size[1])
        cam = self.view.camera
        boxes = self._overlay.reserved_boxes(size)      # colour bars and legend: keep corners out
        for _ in range(FIT_MAX_TRIES):
            p = self.box_corners_on_screen()
            under = any(((p[:, 0] > x0) & (p[:, 0] < x1) & (p[:, 1] > y0) & (p[:, 1] < y1)).any()
                        for x0, y0, x1, y1 in boxes)
            if (not under and p[:, 0].min() >= FIT_MARGIN_PX and p[:, 0].max() <= w - FIT_MARGIN_PX
                    and p[:, 1].min() >= FIT_TOP_PX and p[:, 1].max() <= h - FIT_MARGIN_PX):
                return
            cam.scale_factor *= FIT_ZOOM_STEP

    def render_image(self, size: tuple[int, int] = (1280, 800)) -> np.ndarray:
        """[h, w, 4] uint8 RGBA render of the view at ``size``, drawn offscreen (not a grab).

        The scene and the overlay are laid out for the requested size before the offscreen
        draw, so an export is not a stretched copy of the window.
        """
        w, h = int(size[0]), int(size[1])
        scale = self.canvas.pixel_scale
        logical = (w / scale, h / scale)
        old = tuple(self.canvas.size)
        # ``region`` is in the canvas framebuffer's y-up pixels: anchor the region's top edge to
        # the canvas's top edge so the overlay (laid out y-down from the top) lands in the image.
        region = (0, int(self.canvas.physical_size[1]) - h, w, h)
        cam = self.view.camera
        scale_factor = cam.scale_factor
        try:
            self.canvas.central_widget.size = logical
            self._overlay.layout(logical)
            if self._snapshot is not None:
                self._fit_camera(logical)      # another aspect ratio may need more room
            return render_offscreen(self.canvas, region, (w, h))
        finally:
            self.canvas.central_widget.size = old
            cam.scale_factor = scale_factor
            self._overlay.layout(old)

    # ------------------------------------------------------------------ what the selection needs
    @property
    def flows(self) -> FlowSample | None:
        """The traced flow sample of the shown batch (None: no batch, or tracing was off)."""
        return None if self._snapshot is None else self._snapshot.telemetry.flows

    @property
    def geometry(self) -> FlowGeometry | None:
        """What is drawn of :attr:`flows` (None when nothing is)."""
        return self._flows.geometry

    def layer_shown(self, name: str) -> bool:
        return self._layer_on[name]

    def scene_transform(self) -> Transform:
        """Lattice coordinates → canvas pixels, as the flows are drawn now."""
        return self._flows.heads.get_transform("visual", "canvas")

    def show_selection(self) -> None:
        """Draw the selection: rebuild when its lineage is not all drawn, else colours and ring."""
        geo = self.geometry
        if geo is not None and not self.selection.lineage_drawn(geo):
            self._rebuild_flows()      # calls include_rows, then shows the selection
            return
        self._flows.recolor(self._color_mode, self.selection.keep(geo))
        self._flows.set_marker(*self.selection.marker(geo))
        self._overlay.flow_selected = self._flows.marker.count > 0
        self._refresh_overlay()

    def _hover_context(self) -> tuple:
        tel = None if self._snapshot is None else self._snapshot.telemetry
        return self.flows, self.geometry, self._step, (tel.reason_names if tel is not None else ())

    # ------------------------------------------------------------------ read-only state
    @property
    def fps(self) -> float:
        """Frames per second over the last second of real draw events (0 before any)."""
        times = np.fromiter(self._draw_times, dtype=np.float64)
        if times.shape[0] < 2:
            return 0.0
        recent = times[times >= times[-1] - FPS_WINDOW_S]
        span = recent[-1] - recent[0]
        return (recent.shape[0] - 1) / span if span > 0 else 0.0

    @property
    def idle(self) -> bool:
        """True unless two frames were drawn within the last second. The view redraws only on
        changes: while training it draws one frame per new batch, which is no frame rate (it
        would read 0.0 fps); turning, scrubbing or playing steps draws continuously."""
        if len(self._draw_times) < 2:
            return True
        now = time.perf_counter()
        return now - self._draw_times[-2] > FPS_WINDOW_S

    @property
    def shown_flows(self) -> int:
        return self.geometry.num_flows if self.geometry is not None else 0

    @property
    def total_flows(self) -> int:
        """Flows of the whole batch (the M of "showing N of M")."""
        if self._snapshot is None:
            return 0
        tel = self._snapshot.telemetry
        return tel.flows.total_flows if tel.flows is not None else tel.total_flows

    @property
    def head_count(self) -> int:
        """Heads drawn at the selected step."""
        return self._flows.head_count if self._snapshot is not None else 0

    @property
    def segment_count(self) -> int:
        """Trajectory line segments drawn at the selected step."""
        return self._flows.segment_count if self._snapshot is not None else 0

    @property
    def head_colors(self) -> np.ndarray:
        """[n, 4] float32 colours of the heads drawn at the selected step, as uploaded."""
        return self._flows.head_colors

    @property
    def trajectory_colors(self) -> np.ndarray:
        """[2S, 4] float32 colours of every segment's two vertices, as uploaded."""
        return self._flows.trajectory_colors

    @property
    def marker_position(self) -> np.ndarray | None:
        """Lattice coordinates of the selected flow's ring at the selected step (None: none drawn)."""
        return self._flows.marker_position

    @property
    def step(self) -> int:
        return self._step

    @property
    def info_text(self) -> str:
        return "\n".join(self._overlay.info_lines)

    @property
    def is_empty(self) -> bool:
        """True until the first snapshot; the canvas then says "no batch yet"."""
        return self._snapshot is None

    @property
    def empty_message(self) -> str | None:
        """The empty-state text while it is shown, else None."""
        return self._overlay.empty.text if self._overlay.empty.visible else None

    @property
    def legend_entries(self) -> list[tuple[str, list[tuple[float, ...]], str]]:
        return self._overlay.entries()

    @property
    def colour_bars(self) -> list[str]:
        """Titles of the colour bars on screen."""
        return list(self._overlay.bar_titles)

    @property
    def deposit_cells(self) -> int:
        """Output-plane cells drawn as covered at the shown step (0 while nothing has landed)."""
        return self._frame.deposit_cells if self._frame.has_coverage else 0

    @property
    def deposit_scale(self) -> float:
        """Top of the deposit colour bar, in ln(1 + energy) units (the batch's largest deposit)."""
        return self._frame.coverage_max

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _display_scale(tel: BatchTelemetry) -> tuple[float, float, float]:
        w, h, d = tel.lattice_shape
        m = float(max(w, h))
        return (w / m, h / m, d / m)

    def _rebuild_flows(self) -> None:
        """Sample and upload the flows of the shown batch (budget, batch or selection changed)."""
        tel = self._snapshot.telemetry
        flows = tel.flows
        self._energy_range = energy_range_of(tel)
        self._overlay.energy_range = self._energy_range
        self._overlay.samples_shown = int(np.unique(flows.sample_index).shape[0]) if flows is not None else 0
        include = self.selection.include_rows(flows)
        geo = build_geometry(flows, self._budget, self._energy_range, include) if flows is not None else None
        self._step = int(np.clip(tel.num_steps if self._requested_step is None else self._requested_step,
                                 0, tel.num_steps))
        self._flows.step = self._step
        self._flows.show(geo, self._color_mode, self.selection.keep(geo))
        self._flows.set_marker(*self.selection.marker(geo))
        self._overlay.flow_selected = self._flows.marker.count > 0
        self._show_step()
        self._refresh_overlay()

    def _show_step(self) -> None:
        """The flows after the current step: a uniform, the info lines and the trajectories'
        visible flag (nothing to draw before step 1)."""
        self._flows.set_step(self._step)
        self._frame.show_deposits(self._step)
        self._overlay.set_info(self._info_lines(self._snapshot.telemetry))
        self._apply_visibility()

    def _info_lines(self, tel: BatchTelemetry) -> tuple[str, str]:
        w, h, d = tel.lattice_shape
        snap = self._snapshot
        label = snap.batch_label or (f"batch {snap.report.step}" if snap.report is not None else "batch")
        planes = ", ".join(signed(z) for z in tel.plane_z)
        if tel.flows is None:
            flows_line = f"trajectories not traced (tracing off) · {tel.total_flows:,} flows in batch"
        else:
            flows_line = (f"showing {self.shown_flows:,} of {self.total_flows:,} flows "
                          f"(trajectories coloured by {self._color_mode})")
        return (f"{label} · lattice {w} × {h} × {d} · start: {tel.start_mode} · output planes z = {planes}",
                f"{flows_line} · step {self._step}/{tel.num_steps} · heads {self.head_count:,} · "
                f"active in batch {int(tel.aggregates.active[self._step]):,}")

    def _apply_visibility(self) -> None:
        """Visible flags from the layer toggles and the data; nothing is uploaded but labels."""
        has_data = self._snapshot is not None
        for name, nodes in self.layers.items():
            for node in nodes:
                node.visible = has_data and self._layer_on[name]
        if has_data:
            self._flows.trajectories.visible &= self.segment_count > 0
            self._frame.coverage.visible &= self._frame.has_coverage
        self._frame.show_labels({name: has_data and self._layer_on[name] for name in ("box", "planes")})
        self._overlay.set_visible(has_data)
        self.canvas.update()

    def _refresh_overlay(self) -> None:
        """Re-lay the overlay after its content changed (info text, coverage bar shown or not)."""
        self._overlay.show_coverage_bar = self._layer_on["coverage"] and self._frame.coverage_max > 0
        self._overlay.layout(self.canvas.size)
        self.canvas.update()

    def _on_draw(self, _event) -> None:
        self._draw_times.append(time.perf_counter())

    def _refresh_fps_label(self) -> None:
        if not self._draw_times:
            return
        self.controls.fps_label.setText(view_speed_text(self.fps, self.idle))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._fps_timer.stop()
        self.canvas.close()
        super().closeEvent(event)
