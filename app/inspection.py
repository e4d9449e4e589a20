"""Inspect and compare, added to the window in one place: the Inspector, Diagnostics and
Comparison docks, the click-to-select wiring of the 3D view, and the Inspect menu.

Why a controller beside :class:`~app.main_window.MainWindow` rather than code inside it (as
:class:`~app.recording_controls.RecordingController` does for recordings): the window's layout
belongs to the window; what this adds is one concept — asking about a flow, a run's
diagnostics over time, and other runs — and it only plugs panels into the window's existing
snapshot delivery (``window._add_dock`` registers them as views).
"""

from __future__ import annotations

from PyQt6.QtCore import QObject

from app.panels.diagnostics_panel import DiagnosticsPanel
from app.panels.inspector_panel import InspectorPanel


class InspectionController(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.inspector = InspectorPanel()
        window._add_dock("Inspector", self.inspector, "left")
        window.tabifyDockWidget(window.docks["Config"], window.docks["Inspector"])
        window.docks["Config"].raise_()
        self.diagnostics = DiagnosticsPanel()
        window._add_dock("Diagnostics", self.diagnostics, "right")
        window.tabifyDockWidget(window.docks["Text bridge"], window.docks["Diagnostics"])
        window.docks["Text bridge"].raise_()
        view = window.lattice_view
        selection = getattr(view, "selection", None)   # absent when the 3D view could not load
        if selection is not None:
            selection.picked.connect(self._on_picked)
            self.inspector.selection_changed.connect(selection.select)

    def _on_picked(self, flow_id: int) -> None:
        self.inspector.select_flow(flow_id)
        self.window.docks["Inspector"].raise_()
