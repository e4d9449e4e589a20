"""Where the docks go, so the 3D view keeps most of the window and every panel shows its plot.

Why this shape: the 3D view is the app's reason to exist, so it keeps the middle and at least
half of the window from 1280×800 up (40 % at the smallest window, :data:`MIN_WINDOW`). Every
side panel goes into one column beside it, in tabs: the panels of the shown batch step by step
(:attr:`TabGroup.BATCH_STEPS`) and those of the run (:attr:`TabGroup.RUN`) form two tab stacks,
one above the other where the column is tall enough for both (:data:`STACK_MIN_HEIGHT` each),
else merged into one stack. Each side panel sits in a scroll area with its spec's minimum
size, so a dock the user shrinks gets a scroll bar rather than a plot cut off at its edge.

The layout reads only the panels' specs (area, tab group, minimum size), never their titles.
It is applied when the window is first shown and by View → Reset layout; when the window is
resized, :func:`fit_column` gives the column its share of the new width again, so a window made
small and then large again gets its layout back without a reset.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QDockWidget, QFrame, QMainWindow, QMenu, QScrollArea, QTabBar, QTabWidget, QVBoxLayout, QWidget

from app.panels.registry import DockArea, PanelSpec, TabGroup

#: The side column's width: this share of the window, within these bounds (px).
COLUMN_SHARE, COLUMN_MIN, COLUMN_MAX = 0.28, 370, 560
#: The side column holds two tab stacks one above the other only if each gets this much (px).
STACK_MIN_HEIGHT = 440
#: The smallest window the app allows: the 3D view still gets 40 % of it (tests/gui/test_layout.py).
MIN_WINDOW = (1024, 660)
#: Space (px) between a side dock's title-bar buttons and its scroll area's arrow.
TITLE_GAP = 8
#: Tab stacks of the side column, top to bottom.
COLUMN_GROUPS = (TabGroup.BATCH_STEPS, TabGroup.RUN)

_QT_AREA = {DockArea.TOP: Qt.DockWidgetArea.TopDockWidgetArea, DockArea.SIDE: Qt.DockWidgetArea.RightDockWidgetArea}


def make_dock(window: QMainWindow, spec: PanelSpec, widget: QWidget) -> QDockWidget:
    """A dock for ``widget`` as ``spec`` says: side panels movable, floatable and in a scroll area
    with the spec's minimum size; the strip fixed, with no title bar.

    Side panels have no close button: it sat right above the scroll bar's arrow, where one
    misclick closed the panel. View → "<title> panel" hides and shows each one
    (:func:`fill_view_menu`); the float button that remains keeps :data:`TITLE_GAP` px to the
    scroll area.
    """
    dock = QDockWidget(spec.title, window)
    dock.setObjectName(f"dock-{spec.title}")
    if spec.scrolls:
        widget.setMinimumSize(*spec.min_size)
        area = QScrollArea()
        area.setObjectName(f"scroll-{spec.title}")
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidget(widget)
        holder = QWidget()                  # the gap between the title bar's buttons and the scroll bar
        holder.setObjectName(f"holder-{spec.title}")
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, TITLE_GAP, 0, 0)
        column.addWidget(area)
        dock.setWidget(holder)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
    else:
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        dock.setTitleBarWidget(QWidget())      # a strip, not a captioned panel
    window.addDockWidget(_QT_AREA[spec.area], dock)
    return dock


def scroll_area(dock: QDockWidget) -> QScrollArea | None:
    """The scroll area a side dock shows its panel in (None for the strip)."""
    return dock.widget().findChild(QScrollArea, f"scroll-{dock.windowTitle()}")


def column_width(window_width: int) -> int:
    return int(min(max(COLUMN_SHARE * window_width, COLUMN_MIN), COLUMN_MAX))


def stacks_fit(window_height: int) -> bool:
    """True when the side column is tall enough for two tab stacks (menus, toolbar, status bar
    and the health strip take ~200 px of the window's height)."""
    return (window_height - 200) / len(COLUMN_GROUPS) >= STACK_MIN_HEIGHT


def apply_default_layout(window: QMainWindow, docks: list[tuple[PanelSpec, QDockWidget]]) -> None:
    """Put every dock back in its default place and size for the window's current size."""
    w, h = max(window.width(), 1), max(window.height(), 1)
    for _, dock in docks:
        dock.setFloating(False)
        dock.show()
    # The column runs the window's full height; the strip spans only the 3D view.
    window.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    for spec, dock in docks:
        if spec.area is DockArea.TOP:
            window.addDockWidget(_QT_AREA[spec.area], dock)
    stacks = [[d for s, d in docks if s.area is DockArea.SIDE and s.group is g] for g in COLUMN_GROUPS]
    stacks = [s for s in stacks if s]
    if not stacks:
        return
    if not stacks_fit(h):
        stacks = [[d for stack in stacks for d in stack]]
    side = Qt.DockWidgetArea.RightDockWidgetArea
    window.addDockWidget(side, stacks[0][0])
    for above, stack in zip(stacks, stacks[1:]):
        window.splitDockWidget(above[0], stack[0], Qt.Orientation.Vertical)
    window.setTabPosition(side, QTabWidget.TabPosition.North)     # tabs at the top, by the titles
    for stack in stacks:
        for dock in stack[1:]:
            window.tabifyDockWidget(stack[0], dock)
        stack[0].raise_()
    for bar in window.findChildren(QTabBar):
        # Ten tabs do not fit a 370 px column: whole names and scroll arrows, not "S…", "E…".
        bar.setElideMode(Qt.TextElideMode.ElideNone)
        bar.setUsesScrollButtons(True)
    firsts = [stack[0] for stack in stacks]
    window.resizeDocks([firsts[0]], [column_width(w)], Qt.Orientation.Horizontal)
    window.resizeDocks(firsts, [1] * len(firsts), Qt.Orientation.Vertical)


def fit_column(window: QMainWindow, docks: list[tuple[PanelSpec, QDockWidget]]) -> None:
    """The side column back to its share of the window's width (after a resize)."""
    shown = [d for s, d in docks if s.area is DockArea.SIDE and d.isVisible() and not d.isFloating()
             and window.dockWidgetArea(d) == Qt.DockWidgetArea.RightDockWidgetArea]
    if shown:
        window.resizeDocks([shown[0]], [column_width(window.width())], Qt.Orientation.Horizontal)


def fill_view_menu(menu: QMenu, docks: list[tuple[PanelSpec, QDockWidget]], reset) -> None:
    """One show/hide entry per dock, then "Reset layout".

    Not Qt's ``toggleViewAction``: that one *closes* the dock, which a dock without a close
    button (:func:`make_dock`) refuses. These hide and show it, and are brought up to date
    each time the menu opens (a dock dragged out and back, or shown by Reset layout)."""
    menu.clear()
    entries: list[tuple[QAction, QDockWidget]] = []
    for spec, dock in docks:
        action = QAction(f"{spec.title} panel" if spec.area is DockArea.SIDE else f"{spec.title} strip", menu)
        action.setCheckable(True)
        action.setChecked(not dock.isHidden())
        action.toggled.connect(lambda on, d=dock: _show_dock(d, on))
        menu.addAction(action)
        entries.append((action, dock))

    def sync() -> None:
        for action, dock in entries:
            action.blockSignals(True)
            action.setChecked(not dock.isHidden())
            action.blockSignals(False)

    menu.aboutToShow.connect(sync)
    _add_go_to_menu(menu, docks)
    menu.addSeparator()
    reset_action = menu.addAction("Reset layout")
    reset_action.setToolTip("Show every panel again, in its default place and size")
    reset_action.triggered.connect(reset)
    reset_action.triggered.connect(sync)


#: Keys of View → Go to panel, in the order of the side panels.
GO_TO_KEYS = ("Alt+1", "Alt+2", "Alt+3", "Alt+4", "Alt+5", "Alt+6", "Alt+7", "Alt+8", "Alt+9", "Alt+0")


def _add_go_to_menu(menu: QMenu, docks: list[tuple[PanelSpec, QDockWidget]]) -> None:
    """View → Go to panel: one entry per side panel (Alt+1…) that shows it and brings its tab to
    the front. Tried as a new user at 1280×800: ten side panels share one tab row, and Training,
    Config and Diagnostics sat behind its scroll arrows."""
    go_to = menu.addMenu("Go to panel")
    side = [(spec, dock) for spec, dock in docks if spec.area is DockArea.SIDE]
    for k, (spec, dock) in enumerate(side):
        action = QAction(f"Go to {spec.title}", go_to)
        if k < len(GO_TO_KEYS):
            action.setShortcut(GO_TO_KEYS[k])
        action.setToolTip(f"Show the {spec.title} panel and bring its tab to the front")
        action.triggered.connect(lambda _c=False, d=dock: _show_dock(d, True))
        go_to.addAction(action)


def _show_dock(dock: QDockWidget, on: bool) -> None:
    dock.setVisible(on)
    if on:
        dock.raise_()       # the tab of a panel just shown comes to the front
