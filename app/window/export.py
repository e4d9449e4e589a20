"""Exporting what is on screen: the shown batch as a one-batch recording, the 3D view as a PNG.

Both writes are atomic (temporary file in the target directory, then ``os.replace``): the
target is either the complete new file or untouched, and a failed write — unwritable
directory, full disk — removes its temporary file and raises ``OSError`` naming the target, so
the caller can show the reason and the user loses nothing but the failed export.

The batch export goes through :func:`energy_flow.trace.recording.export_snapshot`, so an
exported batch is an ordinary recording: File → Open (or ``--open``) replays it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
from PyQt6.QtCore import QBuffer, QByteArray, QIODevice
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                             QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.snapshot import Snapshot
from energy_flow.files.atomic import write_bytes_atomic
from energy_flow.trace.figures import recorded_batch_figures
from energy_flow.trace.recording import export_snapshot, report_fields_from
from energy_flow.trace.training_signals import MODULES
from energy_flow.training.report import TrainReport

#: PNG sizes offered by the dialog (label, (width, height)).
PNG_PRESETS = (("1280 × 800", (1280, 800)), ("1920 × 1080 (Full HD)", (1920, 1080)),
               ("2560 × 1440 (QHD)", (2560, 1440)), ("3840 × 2160 (4K UHD)", (3840, 2160)))
DEFAULT_PNG_SIZE = (1920, 1080)
#: Largest side the dialog allows: software OpenGL (llvmpipe) renders up to 16384 px, but an
#: 8k × 8k RGBA image is already 256 MB in memory.
MAX_PNG_SIDE = 8192


# ---------------------------------------------------------------------------------- batch export
def _report_fields_from_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """The batch's scalars: from the live report, else from the last history entry.

    A replayed snapshot has no report but the batch's recorded training signals; a snapshot
    without either (a batch without a training step) keeps what its history holds: the scalars
    recorded for this batch (NaN = unknown → None).
    """
    if snapshot.report is not None:
        return report_fields_from(snapshot.report)
    if snapshot.report_fields is not None:
        return dict(snapshot.report_fields)
    fields: dict[str, Any] = {}
    for figure in recorded_batch_figures():
        series = snapshot.history.get(figure.key)
        if not figure.history or series is None or series.shape[0] == 0:
            continue
        last = np.asarray(series[-1], dtype=np.float64)
        if figure.trailing:             # per-module or per-plane values, NaN = unknown
            if np.isfinite(last).any():
                fields[figure.key] = (dict(zip(MODULES, map(float, last))) if figure.trailing == "M"
                                      else tuple(float(v) for v in last))
            continue
        if not math.isfinite(float(last)):
            continue
        fields[figure.key] = int(last) if np.dtype(figure.dtype).kind == "i" else float(last)
    return fields


def export_batch(path: str | os.PathLike, snapshot_or_report: Snapshot | TrainReport,
                 config_dict: Mapping[str, Any], provenance: Mapping[str, Any]) -> Path:
    """Write the batch as a one-batch recording at ``path`` (atomically); returns the path.

    ``config_dict``/``provenance``: for a live batch the run's config and data provenance; for
    a replayed one the recording's own (``ReplaySource.config``/``.provenance``), so the copy
    keeps the original ``created`` and ``git_commit``. Raises ValueError when the batch has no
    telemetry (tracing was off) and OSError naming ``path`` when it cannot be written.
    """
    if isinstance(snapshot_or_report, Snapshot):
        telemetry = snapshot_or_report.telemetry
        fields = _report_fields_from_snapshot(snapshot_or_report)
    elif isinstance(snapshot_or_report, TrainReport):
        telemetry = snapshot_or_report.telemetry
        fields = report_fields_from(snapshot_or_report)
    else:
        raise TypeError(f"export_batch needs a Snapshot or a TrainReport, got {type(snapshot_or_report).__name__}")
    if telemetry is None:
        raise ValueError(f"{path}: nothing to export: this batch carries no telemetry (tracing was off)")
    return export_snapshot(path, telemetry, fields, config_dict, provenance)


# ---------------------------------------------------------------------------------- PNG export
def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an ``[h, w, 4]`` uint8 RGBA image (straight alpha, as VisPy renders)."""
    if not isinstance(rgba, np.ndarray) or rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        what = f"{rgba.dtype} {rgba.shape}" if isinstance(rgba, np.ndarray) else type(rgba).__name__
        raise ValueError(f"save_png needs an [h, w, 4] uint8 RGBA array, got {what}")
    h, w = rgba.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"save_png: empty image ({w}×{h})")
    pixels = np.ascontiguousarray(rgba)
    image = QImage(pixels.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    ok = image.save(buffer, "PNG")
    buffer.close()
    if not ok:
        raise ValueError(f"Qt could not encode a {w}×{h} image as PNG")
    return bytes(data)


def save_png(path: str | os.PathLike, rgba: np.ndarray) -> Path:
    """Save an ``[h, w, 4]`` uint8 RGBA array (e.g. ``LatticeView.render_image``) as a PNG, atomically."""
    return write_bytes_atomic(path, encode_png(rgba), "image")


# ---------------------------------------------------------------------------------- dialog
class ExportRequest(NamedTuple):
    """What the user asked for; a path is None when that part was not selected."""

    h5_path: Path | None
    png_path: Path | None
    png_size: tuple[int, int]


def split_base(text: str) -> Path:
    """The base path the user typed, without a ``.h5``/``.png`` suffix they may have added."""
    base = Path(text.strip()).expanduser()
    return base.with_suffix("") if base.suffix.lower() in (".h5", ".hdf5", ".png") else base


def write_export(request: ExportRequest, snapshot: Snapshot, config_dict: Mapping[str, Any],
                 provenance: Mapping[str, Any],
                 render: Callable[[tuple[int, int]], np.ndarray] | None) -> list[Path]:
    """Carry out a request: the batch file, then the image (``render(size)`` → RGBA).

    Returns the paths written. A folder of the base path that does not exist yet is made (as
    Save checkpoint makes its folder). Stops at the first failure (OSError/ValueError naming the
    file); files written before it stay complete.
    """
    written: list[Path] = []
    for path in (request.h5_path, request.png_path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if request.h5_path is not None:
        written.append(export_batch(request.h5_path, snapshot, config_dict, provenance))
    if request.png_path is not None:
        if render is None:
            raise ValueError(f"{request.png_path}: the 3D view is not available, so there is no image to save")
        written.append(save_png(request.png_path, render(request.png_size)))
    return written


class ExportDialog(QDialog):
    """Asks for the output base path (``BASE.h5``, ``BASE.png``), what to write and the PNG size.

    ``can_render=False`` (the 3D view failed to load) disables the image part and says why.
    Use :meth:`get_request` for the usual modal flow.
    """

    def __init__(self, default_base: str | os.PathLike, parent: QWidget | None = None,
                 png_size: tuple[int, int] = DEFAULT_PNG_SIZE, can_render: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export batch")
        self.base_edit = QLineEdit(str(default_base))
        self.base_edit.setToolTip("Written as BASE.h5 and BASE.png")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base_edit, 1)
        base_row.addWidget(browse)
        self.h5_check = QCheckBox("Batch data (.h5, a one-batch recording that File → Open replays)")
        self.h5_check.setChecked(True)
        self.png_check = QCheckBox("3D view image (.png, rendered offscreen at the size below)")
        self.png_check.setChecked(can_render)
        self.png_check.setEnabled(can_render)
        if not can_render:
            self.png_check.setToolTip("The 3D view is not available, so it cannot be rendered")
        self.preset_combo = QComboBox()
        for label, size in PNG_PRESETS:
            self.preset_combo.addItem(label, size)
        self.preset_combo.addItem("Custom", None)
        self.width_spin = QSpinBox()
        self.height_spin = QSpinBox()
        for spin in (self.width_spin, self.height_spin):
            spin.setRange(16, MAX_PNG_SIDE)
            spin.setSuffix(" px")
        size_row = QHBoxLayout()
        size_row.addWidget(self.preset_combo)
        size_row.addWidget(self.width_spin)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Output base path:", base_row)
        form.addRow(self.h5_check)
        form.addRow(self.png_check)
        form.addRow("Image size:", size_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(self.buttons)

        self.preset_combo.currentIndexChanged.connect(self._preset_chosen)
        self.width_spin.valueChanged.connect(self._size_edited)
        self.height_spin.valueChanged.connect(self._size_edited)
        for signal in (self.base_edit.textChanged, self.h5_check.toggled, self.png_check.toggled):
            signal.connect(lambda *_: self._validate())
        self.set_png_size(png_size)
        self._validate()

    def set_png_size(self, size: tuple[int, int]) -> None:
        self.width_spin.setValue(int(size[0]))
        self.height_spin.setValue(int(size[1]))

    def request(self) -> ExportRequest:
        """What the dialog currently says; raises ValueError with :meth:`problem` while there is one."""
        problem = self.problem()
        if problem is not None:
            raise ValueError(problem)
        base = split_base(self.base_edit.text())
        return ExportRequest(
            h5_path=base.with_name(base.name + ".h5") if self.h5_check.isChecked() else None,
            png_path=base.with_name(base.name + ".png") if self.png_check.isChecked() else None,
            png_size=(self.width_spin.value(), self.height_spin.value()))

    def problem(self) -> str | None:
        """Why OK is disabled, or None when the request can be carried out."""
        text = self.base_edit.text().strip()
        if not text:
            return "Enter an output base path."
        if not (self.h5_check.isChecked() or self.png_check.isChecked()):
            return "Select at least one thing to export."
        base = split_base(text)
        # "/" or "~/" name a folder, not a file: BASE.h5 needs a file name (Path.with_name
        # raises on an empty name).
        if not base.name or text.endswith(("/", "\\")) or base.is_dir():
            return f"{base} is a folder: add a file name (written as NAME.h5 and NAME.png)."
        existing = next(p for p in (base.parent, *base.parent.parents) if p.exists())
        if not existing.is_dir():
            return f"{existing} is a file, not a folder."
        return None

    def missing_folder(self) -> Path | None:
        """The base path's folder when it does not exist yet (the export makes it)."""
        folder = split_base(self.base_edit.text().strip()).parent
        return None if folder.is_dir() else folder

    @classmethod
    def get_request(cls, parent: QWidget | None, default_base: str | os.PathLike,
                    png_size: tuple[int, int] = DEFAULT_PNG_SIZE, can_render: bool = True) -> ExportRequest | None:
        """Show the dialog modally; the request, or None when cancelled."""
        dialog = cls(default_base, parent, png_size, can_render)
        return dialog.request() if dialog.exec() == QDialog.DialogCode.Accepted else None

    def _validate(self) -> None:
        problem = self.problem()
        existing = [] if problem else [p for p in self.request()[:2] if p is not None and p.exists()]
        if problem:
            self.message.setText(problem)
        elif existing:
            self.message.setText("Will replace " + ", ".join(p.name for p in existing) + ".")
        elif self.missing_folder() is not None:
            self.message.setText(f"Folder {self.missing_folder()} will be made.")
        else:
            self.message.setText("")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(problem is None)
        self.preset_combo.setEnabled(self.png_check.isChecked())
        self.width_spin.setEnabled(self.png_check.isChecked())
        self.height_spin.setEnabled(self.png_check.isChecked())

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export base path", self.base_edit.text(),
                                              "Batch export (*.h5 *.png)")
        if path:
            self.base_edit.setText(str(split_base(path)))

    def _preset_chosen(self, index: int) -> None:
        size = self.preset_combo.itemData(index)
        if size is not None:
            self.set_png_size(size)

    def _size_edited(self) -> None:
        size = (self.width_spin.value(), self.height_spin.value())
        match = next((i for i, (_, s) in enumerate(PNG_PRESETS) if s == size), len(PNG_PRESETS))
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(match)
        self.preset_combo.blockSignals(False)
