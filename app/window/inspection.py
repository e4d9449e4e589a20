"""Inspect and compare, added to the window in one place: the Inspector, Diagnostics and
Compare docks, the click-to-select wiring of the 3D view, and the Inspect menu.

Why a controller beside :class:`~app.window.main_window.MainWindow` rather than code inside it (as
:class:`~app.window.recording_controls.RecordingController` does for recordings): the window's layout
belongs to the window; what this adds is one concept — asking about a flow, a run's
diagnostics over time, and other runs — and it only plugs panels into the window's existing
snapshot delivery (``window.dock_panel`` registers them as views).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import QObject
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QFileDialog, QMenu, QWidget

from app.panels.comparison_panel import ComparisonPanel
from app.panels.diagnostics_panel import DiagnosticsPanel
from app.panels.inspector_panel import InspectorPanel
from app.panels.reference_curves import ComparisonSet
from app.panels.training_panel import TrainingPanel
from app.window.dock_layout import fill_view_menu
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


class InspectionController(QObject):
    def __init__(self, window, reference_provider: ReferenceProvider = _ask_reference,
                 png_provider: PngProvider = _ask_png) -> None:
        super().__init__(window)
        self.window = window
        self._ask_reference = reference_provider
        self._ask_png = png_provider
        self.inspector = InspectorPanel()
        window.dock_panel("Inspector", self.inspector, "right")
        view = window.lattice_view
        selection = getattr(view, "selection", None)   # absent when the 3D view could not load
        if selection is not None:
            selection.picked.connect(self._on_picked)
            self.inspector.selection_changed.connect(selection.select)

        self.diagnostics = DiagnosticsPanel()
        training = window.panels.get("Training")
        self.references = ComparisonSet(training if isinstance(training, TrainingPanel) else None, self)
        self.references.error.connect(window.show_error)
        self.comparison = ComparisonPanel(self.references, self._shown_config, self.open_reference)
        for title, panel in (("Diagnostics", self.diagnostics), ("Compare", self.comparison)):
            window.dock_panel(title, panel, "right")
        if getattr(window, "_layout_applied", False):
            self.place_docks()
        if hasattr(window, "view_menu"):      # list the new docks under View too
            fill_view_menu(window.view_menu, window.docks, window.reset_layout)
        self._build_menu()

    def place_docks(self) -> None:
        """Join the default layout's tab groups (the window calls this after resetting its layout).

        Diagnostics shares the tall slot of the Training curves (four stacked plots need the
        height); Inspector and Compare join the Text bridge | Config tabs below, so a reference's
        curves (in Training) and its verdicts (in Compare) can be seen at once. The 3D view keeps
        the middle: at 1280×800 a fourth column would leave it too small to pick flows in.
        """
        w = self.window
        w.tabifyDockWidget(w.docks["Training"], w.docks["Diagnostics"])
        w.tabifyDockWidget(w.docks["Text bridge"], w.docks["Inspector"])
        w.tabifyDockWidget(w.docks["Text bridge"], w.docks["Compare"])
        w.docks["Training"].raise_()
        w.docks["Text bridge"].raise_()

    def _build_menu(self) -> None:
        bar = self.window.menuBar()
        help_menu = next((a for a in bar.actions() if a.text() == "&Help"), None)
        menu = QMenu("&Inspect", self.window)
        if help_menu is not None:
            bar.insertMenu(help_menu, menu)
        else:
            bar.addMenu(menu)
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
        for title in self.window.docks:
            action = QAction(title, self)
            action.triggered.connect(lambda _c=False, t=title: self.ask_save_panel_png(t))
            png_menu.addAction(action)
            self.png_actions[title] = action

    # ------------------------------------------------------------------ actions
    def open_reference(self, path: str | Path | None = None) -> str | None:
        """Open ``path`` (or ask for one) as a reference; returns its name, None when not opened."""
        if path is None:
            path = self._ask_reference(self.window)
            if path is None:
                return None
        name = self.references.add(path)
        if name is not None:
            self.window.docks["Compare"].raise_()
        return name

    def save_panel_png(self, title: str, path: str | Path) -> Path:
        """Write dock ``title``'s panel as a PNG (raises OSError/ValueError naming the problem).

        The part of the panel on screen: the dock's content, its scroll area's viewport if any."""
        return save_widget_png(self.window.docks[title].widget(), path)

    def ask_save_panel_png(self, title: str) -> None:
        default = str(Path.cwd() / f"{re.sub(r'[^A-Za-z0-9]+', '-', title).strip('-').lower()}.png")
        path = self._ask_png(self.window, default)
        if path is None:
            return
        try:
            written = self.save_panel_png(title, path)
            self.window.statusBar().showMessage(f"Saved {title} panel as {written}", 8000)
        except (OSError, ValueError) as exc:
            self.window.show_error(f"Could not save the {title} panel as PNG: {exc}")

    # ------------------------------------------------------------------ internals
    def _on_picked(self, flow_id: int) -> None:
        self.inspector.select_flow(flow_id)
        self.window.docks["Inspector"].raise_()

    def _shown_config(self) -> dict[str, Any]:
        """The config of the run on screen: the replayed file's, or the live worker's."""
        snap = self.window.latest_snapshot
        if snap is not None and snap.source != "live":
            return self.window.recordings.replay.config
        config = getattr(self.window.worker, "config", None)
        return config.to_dict() if config is not None else {}
