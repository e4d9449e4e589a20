"""Where the docks go, so every panel shows its whole plot from 1280×800 up.

Why this shape: the 3D view needs the middle; the per-batch views (training curves, decoded
text, config) form a right column; the per-step panels (spawn, energy, displacement,
coverage) share the bottom row. Four per-step panels side by side need ~340 px each: when the
bottom row is narrower than that, they are tabified in two pairs instead of squeezed. Each
panel also sits in a scroll area with a minimum size, so a dock the user shrinks below what a
panel needs gets a scroll bar rather than a plot cut off at its edge.

The default layout is applied when the window is first shown (its size is known then) and by
View → Reset layout. The View menu lists every dock, including docks added later (the health
strip, inspector or diagnostics panels): anything added with :func:`add_dock` appears there.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDockWidget, QFrame, QMainWindow, QMenu, QScrollArea, QWidget

AREAS = {"left": Qt.DockWidgetArea.LeftDockWidgetArea, "right": Qt.DockWidgetArea.RightDockWidgetArea,
         "top": Qt.DockWidgetArea.TopDockWidgetArea, "bottom": Qt.DockWidgetArea.BottomDockWidgetArea}

#: Smallest size at which each panel shows its plots, titles, axes and legends whole (px).
PANEL_MIN_SIZE = {
    "Spawn": (330, 270), "Energy": (330, 270), "Displacement": (330, 400), "Coverage": (340, 290),
    "Training": (330, 360), "Text bridge": (300, 160), "Config": (280, 420),
}
#: The per-step panels of the bottom row, left to right.
STEP_PANELS = ("Spawn", "Energy", "Displacement", "Coverage")
#: Right column: width as a share of the window, within these bounds.
RIGHT_SHARE, RIGHT_MIN, RIGHT_MAX = 0.28, 390, 560
#: Bottom row: height as a share of the window.
BOTTOM_SHARE = 0.42


def add_dock(window: QMainWindow, title: str, widget: QWidget, area: str, scroll: bool = True) -> QDockWidget:
    """A movable, floatable, closable dock holding ``widget`` (in a scroll area unless ``scroll=False``)."""
    dock = QDockWidget(title, window)
    dock.setObjectName(f"dock-{title}")
    if scroll:
        size = PANEL_MIN_SIZE.get(title)
        if size is not None:
            widget.setMinimumSize(*size)
        area_widget = QScrollArea()
        area_widget.setObjectName(f"scroll-{title}")
        area_widget.setWidgetResizable(True)
        area_widget.setFrameShape(QFrame.Shape.NoFrame)
        area_widget.setWidget(widget)
        dock.setWidget(area_widget)
    else:
        dock.setWidget(widget)
    dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                     | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                     | QDockWidget.DockWidgetFeature.DockWidgetClosable)
    window.addDockWidget(AREAS[area], dock)
    return dock


def apply_default_layout(window: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """Put every known dock back in its default place and size for the window's current size."""
    w, h = max(window.width(), 1), max(window.height(), 1)
    for dock in docks.values():
        dock.setFloating(False)
        dock.show()
    window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    right = Qt.DockWidgetArea.RightDockWidgetArea
    bottom = Qt.DockWidgetArea.BottomDockWidgetArea
    if "Health" in docks:
        window.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, docks["Health"])

    window.addDockWidget(right, docks["Training"])
    window.splitDockWidget(docks["Training"], docks["Text bridge"], Qt.Orientation.Vertical)
    window.tabifyDockWidget(docks["Text bridge"], docks["Config"])
    docks["Text bridge"].raise_()

    step_docks = [docks[t] for t in STEP_PANELS]
    window.addDockWidget(bottom, step_docks[0])
    right_width = int(min(max(RIGHT_SHARE * w, RIGHT_MIN), RIGHT_MAX))
    bottom_width = w - right_width
    fit_four = bottom_width / len(step_docks) >= max(PANEL_MIN_SIZE[t][0] for t in STEP_PANELS) + 10
    if fit_four:
        for left, nxt in zip(step_docks, step_docks[1:]):
            window.splitDockWidget(left, nxt, Qt.Orientation.Horizontal)
    else:
        window.splitDockWidget(step_docks[0], step_docks[2], Qt.Orientation.Horizontal)
        window.tabifyDockWidget(step_docks[0], step_docks[1])
        window.tabifyDockWidget(step_docks[2], step_docks[3])
        step_docks[0].raise_()
        step_docks[2].raise_()
    shown = step_docks if fit_four else [step_docks[0], step_docks[2]]
    window.resizeDocks(shown, [1] * len(shown), Qt.Orientation.Horizontal)
    window.resizeDocks([docks["Training"]], [right_width], Qt.Orientation.Horizontal)
    window.resizeDocks([step_docks[0]], [int(BOTTOM_SHARE * h)], Qt.Orientation.Vertical)
    window.resizeDocks([docks["Training"], docks["Text bridge"]], [int(0.55 * h), int(0.45 * h)],
                       Qt.Orientation.Vertical)


def fill_view_menu(menu: QMenu, docks: dict[str, QDockWidget], reset) -> None:
    """One show/hide entry per dock (Qt's toggle actions), then "Reset layout"."""
    menu.clear()
    for title, dock in docks.items():
        action = dock.toggleViewAction()
        action.setText(f"{title} panel" if title != "Health" else "Health strip")
        menu.addAction(action)
    menu.addSeparator()
    reset_action = menu.addAction("Reset layout")
    reset_action.setToolTip("Show every panel again, in its default place and size")
    reset_action.triggered.connect(reset)
