"""Inspect and compare, added to the window in one place: the Inspector, Diagnostics and
Compare docks, the click-to-select wiring of the 3D view, and the Inspect menu.

Why a controller beside the window rather than code inside it: what this adds is one concept —
asking about a flow, a run's diagnostics over time, and other runs — and it only plugs panels
into the window's snapshot delivery. It gets the narrow things it uses, not the window: a
:class:`PanelHost` to dock its panels into (their places come from their specs in
:mod:`app.panels.registry`, like every other panel's), the 3D view's flow selection, the
Training panel its reference curves are drawn in, the shown run's config and the Inspect menu.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Protocol

from PyQt6.QtCore import QObject
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QDockWidget, QFileDialog, QMenu, QWidget

from app.panels.comparison_panel import ComparisonPanel
from app.panels.diagnostics_panel import DiagnosticsPanel
from app.panels.inspector_panel import InspectorPanel
from app.panels.reference_curves import ComparisonSet
from app.panels.registry import COMPARE, DIAGNOSTICS, INSPECTOR, PANELS, PanelSpec
from app.panels.training_panel import TrainingPanel
from app.view.flow_selection import FlowSelection
from app.window.panel_png import save_widget_png

#: Asks for a recording to open as a reference (None: cancelled); tests pass a function.
ReferenceProvider = Callable[[QWidget], str | None]
#: Asks where to save a panel's PNG, given a default name (None: cancelled).
PngProvider = Callable[[QWidget, str], str | None]


def _ask_reference(parent: QWidget) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open reference recording", "",
                                          "Recordings (*.h5 *.hdf5);;All files (*)")
    return path or None


def _ask_png(parent: QWidget, default: str) -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, "Save panel as PNG", default, "PNG images (*.png)")
    return path or None


class PanelHost(Protocol):
    """What this controller needs of the window: somewhere to dock panels, and a place for errors."""

    def add_panel(self, spec: PanelSpec, widget: QWidget) -> QDockWidget: ...

    def raise_panel(self, spec: PanelSpec) -> None: ...

    def dock_content(self, spec: PanelSpec) -> QWidget: ...

    def show_error(self, message: str) -> None: ...


class InspectionController(QObject):
    """``shown_config()``: the config dict of the run on screen (the replayed file's, or the live
    run's); ``show_status(text, ms)``: a transient status-bar message."""

    def __init__(self, host: PanelHost, parent: QWidget, menu: QMenu, selection: FlowSelection,
                 training: TrainingPanel | None, shown_config: Callable[[], dict[str, Any]],
                 show_status: Callable[[str, int], None], reference_provider: ReferenceProvider = _ask_reference,
                 png_provider: PngProvider = _ask_png) -> None:
        super().__init__(parent)
        self._host = host
        self._parent = parent
        self._show_status = show_status
        self._ask_reference = reference_provider
        self._ask_png = png_provider
        self.inspector = InspectorPanel()
        self._inspector_dock = host.add_panel(INSPECTOR, self.inspector)
        selection.picked.connect(self._on_picked)
        self.inspector.selection_changed.connect(selection.select)
        self.diagnostics = DiagnosticsPanel()
        self.references = ComparisonSet(training, self)
        self.references.error.connect(host.show_error)
        self.comparison = ComparisonPanel(self.references, shown_config, self.open_reference)
        host.add_panel(DIAGNOSTICS, self.diagnostics)
        host.add_panel(COMPARE, self.comparison)
        self._build_menu(menu)

    def _build_menu(self, menu: QMenu) -> None:
        # Tried as a new user: Inspect had no way to inspect a flow (a click in the 3D view does,
        # and the Inspector's tab sat behind the tab row's scroll arrows).
        self.inspect_flow_action = QAction("Inspect a flow…", self)
        self.inspect_flow_action.setShortcut(QKeySequence("Ctrl+I"))
        self.inspect_flow_action.setToolTip("Bring the Inspector to the front and type a flow id "
                                            "(or click a flow in the 3D view)")
        self.inspect_flow_action.triggered.connect(self.show_inspector)
        menu.addAction(self.inspect_flow_action)
        menu.addSeparator()
        self.open_reference_action = QAction("Open reference recording…", self)
        self.open_reference_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.open_reference_action.setToolTip("Open a recording beside the shown run (training goes on)")
        self.open_reference_action.triggered.connect(lambda: self.open_reference())
        menu.addAction(self.open_reference_action)
        close_all = QAction("Close all references", self)
        close_all.triggered.connect(self.references.close_all)
        menu.addAction(close_all)
        menu.addSeparator()
        png_menu = menu.addMenu("Save panel as PNG")
        self.png_actions: dict[str, QAction] = {}
        for spec in PANELS:
            action = QAction(spec.title, self)
            action.triggered.connect(lambda _c=False, t=spec.title: self.ask_save_panel_png(t))
            png_menu.addAction(action)
            self.png_actions[spec.title] = action

    # ------------------------------------------------------------------ actions
    def show_inspector(self) -> None:
        """The Inspector shown, its tab in front, the keyboard in its "Flow id" box."""
        self._inspector_dock.show()
        self._inspector_dock.raise_()
        self.inspector.id_spin.setFocus()
        self.inspector.id_spin.selectAll()

    def open_reference(self, path: str | Path | None = None) -> str | None:
        """Open ``path`` (or ask for one) as a reference; returns its name, None when not opened."""
        if path is None:
            path = self._ask_reference(self._parent)
            if path is None:
                return None
        name = self.references.add(path)
        if name is not None:
            self._host.raise_panel(COMPARE)
        return name

    def save_panel_png(self, title: str, path: str | Path) -> Path:
        """Write dock ``title``'s panel as a PNG (raises OSError/ValueError naming the problem).

        The part of the panel on screen: the dock's content, its scroll area's viewport if any."""
        spec = next((s for s in PANELS if s.title == title), None)
        if spec is None:
            raise ValueError(f"no panel titled {title!r}; panels: {', '.join(s.title for s in PANELS)}")
        return save_widget_png(self._host.dock_content(spec), path)

    def ask_save_panel_png(self, title: str) -> None:
        default = str(Path.cwd() / f"{re.sub(r'[^A-Za-z0-9]+', '-', title).strip('-').lower()}.png")
        path = self._ask_png(self._parent, default)
        if path is None:
            return
        try:
            written = self.save_panel_png(title, path)
            self._show_status(f"Saved {title} panel as {written}", 8000)
        except (OSError, ValueError) as exc:
            self._host.show_error(f"Could not save the {title} panel as PNG: {exc}")

    # ------------------------------------------------------------------ internals
    def _on_picked(self, flow_id: int) -> None:
        self.inspector.select_flow(flow_id)
        self._host.raise_panel(INSPECTOR)
