"""TextBridgePanel: what the network's outputs "say", for the first samples of the batch.

Loss numbers are hard to read; sentences are not. For each decoded sample the panel shows the
input text, the target text, the corpus sentences nearest to the output embedding (with their
cosine similarity) and cos(output, target). A decoded sentence equal to the target is marked,
so retrieval success is visible at a glance. When the bridge is unavailable (precomputed
embeddings have no texts) or an output is non-finite, the panel says so instead of going blank.
"""

from __future__ import annotations

import html
import math

from PyQt6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from app.snapshot import DecodedSample, Snapshot


class TextBridgePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel("Text bridge: waiting for the first batch")
        self.header.setWordWrap(True)
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)
        self.view.setHtml("<p><i>no batch yet</i></p>")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.header)
        layout.addWidget(self.view, 1)
        self.snapshot: Snapshot | None = None
        self._bridge_note = ""
        self._bridge_available = True

    def set_bridge_info(self, note: str, available: bool) -> None:
        """What the bridge decodes against, or why it is unavailable (from the worker's ``loaded``)."""
        self._bridge_note = note
        self._bridge_available = available
        self._render()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._render()

    def clear(self) -> None:
        """Back to "no batch yet" (the model was rebuilt, or a replay ended); the bridge note stays."""
        self.snapshot = None
        self.view.setHtml("<p><i>no batch yet</i></p>")
        self._render()

    def set_step(self, step: int) -> None:
        """Outputs exist only after the last propagation step: the slider does not change them."""

    def _render(self) -> None:
        note = html.escape(self._bridge_note)
        if not self._bridge_available:
            self.header.setText(f"<span style='color:#ff6b6b'><b>Text bridge unavailable:</b> {note}</span>")
        elif self._bridge_note:
            self.header.setText(f"Decoding: {note}")
        snap = self.snapshot
        if snap is None:
            if self._bridge_note:
                return
            self.header.setText("Text bridge: waiting for the first batch")
            return
        if snap.source != "live":
            # A recording holds telemetry, not the model's outputs: there is nothing to decode.
            self.header.setText("Text bridge: a recording keeps no model outputs, so there is no "
                                "decoded text for replayed batches")
            self.view.setHtml(f"<p><i>{html.escape(snap.batch_label)} — replayed from "
                              f"{html.escape(snap.source)}</i></p>")
            return
        if not snap.decoded:
            self.view.setHtml(f"<p><i>{html.escape(snap.batch_label)}: no decoded samples in this "
                              "snapshot</i></p>")
            return
        parts = [f"<p style='color:#9aa0a6'>{html.escape(snap.batch_label)} — first "
                 f"{len(snap.decoded)} samples</p>"]
        parts += [_sample_html(i, s) for i, s in enumerate(snap.decoded)]
        self.view.setHtml("".join(parts))

    def plain_text(self) -> str:
        """What the panel currently displays, as text (for tests and copy/paste)."""
        return self.header.text() + "\n" + self.view.toPlainText()


def _sample_html(i: int, s: DecodedSample) -> str:
    cos = "non-finite" if math.isnan(s.target_similarity) else f"{s.target_similarity:+.3f}"
    rows = [f"<p style='margin-top:8px'><b>Sample {i + 1}</b> &nbsp; cos(output, target) = <b>{cos}</b><br>",
            f"<span style='color:#9aa0a6'>input:</span> {html.escape(s.input_text)}<br>",
            f"<span style='color:#9aa0a6'>target:</span> {html.escape(s.target_text)}<br>"]
    if not s.decoded:
        reason = "output is non-finite" if math.isnan(s.target_similarity) else "no text bridge"
        rows.append(f"<span style='color:#ff6b6b'>decoded: — ({reason})</span></p>")
        return "".join(rows)
    rows.append("<span style='color:#9aa0a6'>nearest:</span><br>")
    for text, sim in s.decoded:
        hit = text == s.target_text
        style = "color:#3ddc84;font-weight:bold" if hit else ""
        mark = " ✔ target" if hit else ""
        rows.append(f"&nbsp;&nbsp;<span style='{style}'>{sim:+.3f} &nbsp;{html.escape(text)}{mark}</span><br>")
    rows.append("</p>")
    return "".join(rows)
