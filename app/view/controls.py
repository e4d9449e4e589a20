"""The row of controls above the 3D canvas: layer toggles, Reset view, colour mode, display
budget and the frame-rate readout.

One row, narrow enough for a 1280 px window: the seven layer toggles live in a "Layers"
drop-down instead of a row of their own. The widgets only emit; the view applies, and echoes
a programmatic change back here through :meth:`ViewControls.show_layer` and friends without
the widgets signalling again.
"""

from __future__ import annotations

from PyQt6.QtCore import QSignalBlocker, Qt, pyqtSignal
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QMenu, QPushButton, QSpinBox,
                             QToolButton, QVBoxLayout, QWidget, QWidgetAction)

from app.view.style import COLOR_MODES, LAYERS


class ViewControls(QWidget):
    """Signals: ``layer_toggled(name, on)``, ``color_mode_chosen(mode)``, ``budget_chosen(n)``,
    ``reset_requested()``."""

    layer_toggled = pyqtSignal(str, bool)
    color_mode_chosen = pyqtSignal(str)
    budget_chosen = pyqtSignal(int)
    reset_requested = pyqtSignal()

    def __init__(self, budget: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.checkboxes: dict[str, QCheckBox] = {}
        toggles = QWidget()
        toggle_layout = QVBoxLayout(toggles)
        toggle_layout.setContentsMargins(8, 4, 8, 4)
        for name in LAYERS:
            box = QCheckBox(name)
            box.setChecked(True)
            box.toggled.connect(lambda on, n=name: self.layer_toggled.emit(n, on))
            self.checkboxes[name] = box
            toggle_layout.addWidget(box)
        menu = QMenu(self)
        holder = QWidgetAction(menu)
        holder.setDefaultWidget(toggles)
        menu.addAction(holder)
        self.layers_button = QToolButton()
        self.layers_button.setText("Layers")
        self.layers_button.setToolTip("Show or hide the box, planes, coverage, trajectories, heads, spawns "
                                      "and terminations")
        self.layers_button.setMenu(menu)
        self.layers_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)

        self.reset_button = QPushButton("Reset view")
        self.reset_button.clicked.connect(self.reset_requested.emit)
        self.color_combo = QComboBox()
        self.color_combo.addItems([f"colour by {m}" for m in COLOR_MODES])
        self.color_combo.currentIndexChanged.connect(lambda i: self.color_mode_chosen.emit(COLOR_MODES[i]))
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(100, 1_000_000)
        self.budget_spin.setSingleStep(500)
        self.budget_spin.setValue(budget)
        self.budget_spin.setKeyboardTracking(False)
        self.budget_spin.setToolTip("Most flows drawn; whole families are sampled evenly over flow ids.")
        self.budget_spin.valueChanged.connect(self.budget_chosen.emit)
        # Enter ends the typing: the spin box lets go of the keyboard, so the window's one-key
        # shortcuts (Space, S, P, ←/→) work again without a click on the canvas.
        self.budget_spin.editingFinished.connect(self.budget_spin.clearFocus)
        self.fps_label = QLabel("view: –")
        self.fps_label.setMinimumWidth(110)
        self.fps_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 6, 0)
        row.addWidget(self.layers_button)
        row.addWidget(self.reset_button)
        row.addWidget(self.color_combo)
        row.addWidget(QLabel("Flows drawn:"))
        row.addWidget(self.budget_spin)
        row.addStretch(1)
        row.addWidget(self.fps_label)

    def show_layer(self, name: str, on: bool) -> None:
        with QSignalBlocker(self.checkboxes[name]):
            self.checkboxes[name].setChecked(on)

    def show_color_mode(self, mode: str) -> None:
        with QSignalBlocker(self.color_combo):
            self.color_combo.setCurrentIndex(COLOR_MODES.index(mode))

    def show_budget(self, budget: int) -> None:
        with QSignalBlocker(self.budget_spin):
            self.budget_spin.setValue(budget)
