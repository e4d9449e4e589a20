"""ConfigPanel: edit the main fields of the run's EnergyConfig and rebuild the model with it.

Validation is the library's, not the panel's: Apply builds the new config with
``EnergyConfig.replace`` and shows the ``ValueError`` it raises word for word, so the panel can
never accept a config the model would reject, nor reject one it would accept. A valid change
is confirmed first (it discards the current weights), then sent as ``config_requested``; the
worker rebuilds the model and the window calls :meth:`set_config` with what is now in effect.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Mapping

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtGui import QPalette
from PyQt6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                             QPushButton, QVBoxLayout, QWidget)

from energy_flow.config import DEVICES, PRESETS, START_MODES, EnergyConfig
from energy_flow.runtime.device import resolve_device
from energy_flow.memory.estimate import estimate_memory, format_bytes, machine_memory_bytes
from energy_flow.training.cost_estimate import BatchCost

#: Editable fields, in display order, with their labels.
FIELDS: tuple[tuple[str, str], ...] = (
    ("lattice_width", "Lattice width (W)"),
    ("lattice_height", "Lattice height (H)"),
    ("lattice_depth", "Lattice depth (D)"),
    ("start_mode", "Start mode"),
    ("batch_size", "Batch size"),
    ("energy_threshold", "Energy threshold"),
    ("spawn_threshold", "Spawn threshold"),
    ("max_spawn_per_step", "Max spawn / step"),
    ("max_active_flows", "Max active flows"),
    ("max_steps", "Max steps"),
    ("displacement_scale", "Displacement scale"),
    ("learning_rate", "Learning rate"),
    ("device", "Device"),
)
_CHOICES = {"start_mode": START_MODES, "device": DEVICES}
_TYPES = {f.name: f.type for f in fields(EnergyConfig)}

#: Asks the user to confirm a change; returns True to go ahead. Replaceable (tests, scripts).
Confirm = Callable[[str], bool]
#: The preset box while a recording's config is shown: the fields are that file's, no preset's.
RECORDED = "(recorded)"
#: Text colours (on a dark window, on a light one): tried as a new user, the cost note's light
#: grey on the light panel looked disabled, and the green "In effect" line was faint.
TONES = {"ok": ("#9ad0a6", "#1e7b34"), "error": ("#ff6b6b", "#b3261e"), "warn": ("#ffb347", "#a85400")}


class ConfigPanel(QWidget):
    #: A validated, confirmed EnergyConfig the model should be rebuilt with.
    config_requested = pyqtSignal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current: EnergyConfig | None = None   # the config in effect in the worker
        self._base: EnergyConfig | None = None     # current config, or the picked preset
        self.confirm: Confirm = self._ask
        #: What Apply would lose besides the weights, e.g. "The weights of 30 trained batches are
        #: not saved (Ctrl+S saves them)."; "" when nothing is unsaved. Set by the window.
        self.unsaved_note: Callable[[], str] = lambda: ""
        self._recorded: str | None = None          # file name while a recording's config is shown
        self._extra_items: list[tuple[QComboBox, str]] = []
        self.preset = QComboBox()
        self.preset.addItem("(current run)")
        self.preset.addItems(list(PRESETS))
        self.preset.setToolTip("Load a preset's values into the fields (nothing changes until Apply)")
        self.preset.currentTextChanged.connect(self._preset_picked)
        self.editors: dict[str, QLineEdit | QComboBox] = {}
        form = QFormLayout()
        form.setVerticalSpacing(3)
        form.addRow("Preset", self.preset)
        for name, label in FIELDS:
            if name in _CHOICES:
                editor = QComboBox()
                editor.addItems(list(_CHOICES[name]))
                editor.setEditable(name == "device")  # "cuda:N" is allowed too
            else:
                editor = QLineEdit()
            editor.setToolTip(f"EnergyConfig.{name}")
            self.editors[name] = editor
            form.addRow(label, editor)
        self.apply_button = QPushButton("Apply…")
        self.apply_button.setToolTip("Validate, confirm, and rebuild the model with these values "
                                     "(training restarts at batch 0)")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Show the config in effect again")
        self.apply_button.clicked.connect(self.apply)
        self.revert_button.clicked.connect(self.revert)
        self.message = QLabel("waiting for the model to load")
        self.message.setWordWrap(True)
        #: The model in effect's estimated cost per batch on this device (``show_cost``).
        self.cost = QLabel("")
        self.cost.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.revert_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(self.cost)
        layout.addStretch(1)
        self.setEnabled(False)

    # ------------------------------------------------------------------ public
    def set_config(self, config: EnergyConfig, in_effect: bool = True) -> None:
        """The config now in effect (after load, reset or a successful apply).

        ``in_effect=False``: the model could not be built from ``config`` (e.g. CUDA asked for
        on a machine without it); the fields show it so the user can fix it and Apply.
        """
        self.current = config
        self._base = config
        if self._recorded is not None:
            return                 # a replay is shown; leave_recorded() shows this config
        self.setEnabled(True)
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(0)
        self.preset.blockSignals(False)
        self._fill(config)
        if in_effect:
            self._say(f"In effect: {config.lattice_width}×{config.lattice_height}×{config.lattice_depth} "
                      f"lattice, batch {config.batch_size}, device {config.device}", ok=True)
        else:
            self._say("Not in effect: no model could be built from this config (see the message "
                      "above the view). Change a field and Apply.", ok=False)

    def show_cost(self, cost: BatchCost) -> None:
        """The estimated memory and time per batch of the config in effect, its warnings, and
        (after the first batch) the measured time against it."""
        lines = [cost.line()] + [f"⚠ {w}" for w in cost.warnings()]
        checked = cost.check_line()
        if checked is not None:
            lines.append(f"Checked: {checked}.")
        self.cost.setStyleSheet(f"color: {self.tone('warn')};" if cost.warnings() else "")
        self.cost.setText("\n".join(lines))

    def show_recorded(self, config: Mapping[str, Any], name: str) -> None:
        """Show the config stored in the replayed recording ``name``, read-only.

        The fields show the recorded values ("–" for a field the recorder did not store); the
        panel is disabled because Apply would rebuild the *live* model, not the recording.
        """
        self._recorded = name
        self.preset.blockSignals(True)
        if self.preset.findText(RECORDED) < 0:
            self.preset.addItem(RECORDED)
        self.preset.setCurrentText(RECORDED)
        self.preset.blockSignals(False)
        for field, editor in self.editors.items():
            value = config.get(field)
            text = "–" if value is None else (repr(value) if isinstance(value, float) else str(value))
            if isinstance(editor, QComboBox):
                if editor.findText(text) < 0:          # e.g. "–": shown, removed on leave
                    editor.addItem(text)
                    self._extra_items.append((editor, text))
                editor.setCurrentText(text)
            else:
                editor.setText(text)
        self.setEnabled(False)
        shape = "×".join(str(config.get(k, "?")) for k in ("lattice_width", "lattice_height", "lattice_depth"))
        self._say(f"Recorded in {name}: {shape} lattice, batch {config.get('batch_size', '?')} (read-only; "
                  "the live run's config returns with it).", ok=True)

    def leave_recorded(self) -> None:
        """The replay ended: show the live config again, or that the model is still loading."""
        self._recorded = None
        self.preset.blockSignals(True)
        self.preset.removeItem(self.preset.findText(RECORDED))
        self.preset.setCurrentIndex(0)
        self.preset.blockSignals(False)
        for editor, text in self._extra_items:
            editor.removeItem(editor.findText(text))
        self._extra_items.clear()
        if self.current is not None:
            self.set_config(self.current)
            return
        for editor in self.editors.values():
            if isinstance(editor, QLineEdit):
                editor.clear()
        self._say("waiting for the model to load", ok=True)

    def edited_config(self) -> EnergyConfig:
        """The config the fields describe; raises ValueError (the library's) if it is invalid."""
        if self._base is None:
            raise ValueError("no config loaded yet")
        changes = {name: self._parse(name) for name, _ in FIELDS}
        return self._base.replace(**changes)

    def apply(self) -> None:
        """Validate → confirm → emit ``config_requested``; an invalid value changes nothing."""
        if self.current is None:
            return
        try:
            new = self.edited_config()
        except ValueError as exc:
            self._say(str(exc), ok=False)
            return
        diff = _differences(self.current, new)
        if not diff:
            self._say("No change: the fields match the config in effect.", ok=True)
            return
        unsaved = self.unsaved_note()
        text = ("Rebuild the model with this config?\nThe current weights and the run's history are "
                "discarded; training restarts at batch 0." + (f"\n{unsaved}" if unsaved else "") + "\n\n" + "\n".join(diff) + "\n\n" + memory_note(new)
                + "\n\nTime per batch: measured on this device by a short probe of the rebuilt model, shown "
                "here and in the status bar before training with it starts.")
        if not self.confirm(text):
            self._say("Not applied (cancelled).", ok=True)
            return
        self._say("Applying: the worker is rebuilding the model…", ok=True)
        self.cost.setText("Time per batch: being measured on this device (a short probe of the new model)…")
        self.config_requested.emit(new)

    def revert(self) -> None:
        if self.current is not None:
            self.set_config(self.current)

    # ------------------------------------------------------------------ internals
    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Apply config", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _preset_picked(self, name: str) -> None:
        if name in PRESETS:
            device = self.current.device if self.current is not None else "auto"
            self._base = PRESETS[name](device=device)
            self._fill(self._base)
            self._say(f"Preset {name!r} loaded into the fields — Apply to use it.", ok=True)
        elif self.current is not None:
            self._base = self.current
            self._fill(self.current)

    def _fill(self, config: EnergyConfig) -> None:
        for name, editor in self.editors.items():
            value = getattr(config, name)
            if isinstance(editor, QComboBox):
                editor.setCurrentText(str(value))
            else:
                editor.setText(repr(value) if isinstance(value, float) else str(value))

    def _parse(self, name: str) -> Any:
        editor = self.editors[name]
        text = (editor.currentText() if isinstance(editor, QComboBox) else editor.text()).strip()
        kind = _TYPES[name]
        try:
            if kind in ("int", int):
                return int(text)
            if kind in ("float", float):
                return float(text)
        except ValueError:
            raise ValueError(f"EnergyConfig.{name} = {text!r} is invalid: not a "
                             f"{'whole number' if kind in ('int', int) else 'number'}") from None
        return text

    def tone(self, kind: str) -> str:
        """The colour of ``kind`` (a key of :data:`TONES`) that reads on this panel's background."""
        on_dark, on_light = TONES[kind]
        return on_light if self.palette().color(QPalette.ColorRole.Window).lightness() > 128 else on_dark

    def _say(self, text: str, ok: bool) -> None:
        self.message.setStyleSheet(f"color: {self.tone('ok' if ok else 'error')};")
        self.message.setText(text)


def _differences(old: EnergyConfig, new: EnergyConfig) -> list[str]:
    return [f"  {f.name}: {getattr(old, f.name)!r} → {getattr(new, f.name)!r}"
            for f in fields(EnergyConfig) if getattr(old, f.name) != getattr(new, f.name)]


def memory_note(config: EnergyConfig) -> str:
    """What a training step of ``config`` needs against this device's memory, warning where it
    will not or may not fit (the same estimate the headless trainer warns with)."""
    estimate = estimate_memory(config)
    need = f"{format_bytes(estimate.minimum_bytes)}–{format_bytes(estimate.worst_case_bytes)}"
    available = machine_memory_bytes(str(resolve_device(config.device)))
    if available is None:
        return f"Memory per training step: {need} (this device's memory is unknown)."
    size, what = available
    if estimate.minimum_bytes > size:
        return f"⚠ Will not fit: a training step needs {need}, the {what} is {format_bytes(size)}."
    if estimate.worst_case_bytes > size:
        return (f"⚠ May not fit: a training step needs {need} (the upper end if flows stay alive for "
                f"many steps), the {what} is {format_bytes(size)}.")
    return f"Memory per training step: {need} of the {format_bytes(size)} {what}."
