"""The panels the window shows, declared once: title, class, dock area, minimum size, tab group.

Why a registry: the window used to find panels by module-name strings and call whatever
methods ``hasattr`` found, and its layout code named docks by title. Now each panel is one
:class:`PanelSpec` here; the window builds docks from the specs, draws snapshots through the
typed :class:`~app.panels.base.SnapshotView` protocol, and lays docks out by their
:class:`DockArea` and :class:`TabGroup` (``app.window.dock_layout``), never by their title.
Adding a panel is one spec (and the panel's module).

Panels whose constructor needs collaborators (the Compare panel takes the open references)
are built by the controller that owns those collaborators, which hands the widget to the
window with its spec; :data:`WINDOW_PANELS` are the ones the window builds itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from PyQt6.QtWidgets import QWidget

from app.panels.comparison_panel import ComparisonPanel
from app.panels.config_panel import ConfigPanel
from app.panels.coverage_panel import CoveragePanel
from app.panels.diagnostics_panel import PLOT_MIN_HEIGHT, DiagnosticsPanel
from app.panels.displacement_panel import DisplacementPanel
from app.panels.energy_panel import EnergyPanel
from app.panels.health_panel import HealthPanel
from app.panels.inspector_panel import InspectorPanel
from app.panels.spawn_panel import SpawnPanel
from app.panels.text_bridge_panel import TextBridgePanel
from app.panels.training_panel import TrainingPanel


class DockArea(Enum):
    """Where a panel's dock sits by default."""
    TOP = "top"        # a strip above the 3D view (no title bar, not movable)
    SIDE = "side"      # the column beside the 3D view, in tabs


class TabGroup(Enum):
    """Panels that share one tab stack. Two groups stack one above the other where the window
    is tall enough for both, and merge into one stack where it is not (see dock_layout)."""
    STRIP = "strip"          # the health strip: no tabs
    BATCH_STEPS = "steps"    # the shown batch, step by step (follows the step slider)
    RUN = "run"              # the run over batches, its text and its config


@dataclass(frozen=True)
class PanelSpec:
    """One panel: its dock's title, its class, where it goes and the size it needs.

    ``min_size`` is the smallest size (px) at which the panel's main plot, its titles, axes and
    legend are whole; a dock smaller than that scrolls (the strip does not scroll).
    ``draws_snapshots``: the panel takes every drawn snapshot and step through
    :class:`~app.panels.base.SnapshotView` (the Config panel does not: it shows the config).
    """
    title: str
    cls: type[QWidget]
    area: DockArea
    min_size: tuple[int, int]
    group: TabGroup
    draws_snapshots: bool = True

    @property
    def scrolls(self) -> bool:
        """Side panels sit in a scroll area; the strip is one line and never scrolls."""
        return self.area is DockArea.SIDE


HEALTH = PanelSpec("Health", HealthPanel, DockArea.TOP, (0, 0), TabGroup.STRIP)
SPAWN = PanelSpec("Spawn", SpawnPanel, DockArea.SIDE, (330, 270), TabGroup.BATCH_STEPS)
ENERGY = PanelSpec("Energy", EnergyPanel, DockArea.SIDE, (330, 400), TabGroup.BATCH_STEPS)
DISPLACEMENT = PanelSpec("Displacement", DisplacementPanel, DockArea.SIDE, (330, 400), TabGroup.BATCH_STEPS)
COVERAGE = PanelSpec("Coverage", CoveragePanel, DockArea.SIDE, (340, 290), TabGroup.BATCH_STEPS)
INSPECTOR = PanelSpec("Inspector", InspectorPanel, DockArea.SIDE, (300, 520), TabGroup.BATCH_STEPS)
TRAINING = PanelSpec("Training", TrainingPanel, DockArea.SIDE, (330, 520), TabGroup.RUN)
DIAGNOSTICS = PanelSpec("Diagnostics", DiagnosticsPanel, DockArea.SIDE, (320, 4 * PLOT_MIN_HEIGHT), TabGroup.RUN)
COMPARE = PanelSpec("Compare", ComparisonPanel, DockArea.SIDE, (300, 300), TabGroup.RUN)
TEXT_BRIDGE = PanelSpec("Text bridge", TextBridgePanel, DockArea.SIDE, (300, 160), TabGroup.RUN)
CONFIG = PanelSpec("Config", ConfigPanel, DockArea.SIDE, (280, 420), TabGroup.RUN, draws_snapshots=False)

#: Every panel, in tab order within its group (the first of a group is raised by default).
PANELS: tuple[PanelSpec, ...] = (HEALTH, SPAWN, ENERGY, DISPLACEMENT, COVERAGE, INSPECTOR,
                                 TRAINING, DIAGNOSTICS, COMPARE, TEXT_BRIDGE, CONFIG)
#: The panels the window builds itself (their classes take no arguments).
WINDOW_PANELS: tuple[PanelSpec, ...] = (HEALTH, SPAWN, ENERGY, DISPLACEMENT, COVERAGE, TRAINING,
                                        TEXT_BRIDGE, CONFIG)
