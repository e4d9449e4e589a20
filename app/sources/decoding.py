"""The text bridge's reading of a batch: the first samples' texts and their nearest sentences.

Built in the worker thread after each batch, so the Text bridge panel only shows strings: for
the first :data:`DECODED_SAMPLES` samples, the input and target texts, the corpus sentences
nearest to the output embedding, and cos(output, target).
"""

from __future__ import annotations

import math

import numpy as np

from app.snapshot import DecodedSample
from energy_flow.training.data import PairDataset
from energy_flow.training.report import TrainReport
from energy_flow.training.text_bridge import TextBridge

#: How many samples of each batch are decoded by the text bridge for the Text bridge panel.
DECODED_SAMPLES = 3
#: Nearest corpus sentences shown per decoded sample.
DECODE_TOP_K = 3


def make_bridge(dataset: PairDataset) -> tuple[TextBridge | None, str]:
    """The text bridge over the dataset's targets, or None with the reason (shown in the UI)."""
    try:
        bridge = TextBridge.from_dataset(dataset)
    except ValueError as exc:
        return None, str(exc)
    return bridge, f"nearest of {len(bridge)} distinct target texts of {dataset.provenance.source}"


def decode_batch(bridge: TextBridge | None, dataset: PairDataset, report: TrainReport) -> tuple[DecodedSample, ...]:
    """The first samples of the batch: texts, nearest corpus sentences, cos(output, target).

    Without a bridge (or with non-finite outputs) the texts are still shown, with nothing decoded.
    """
    n = min(DECODED_SAMPLES, report.outputs.shape[0])
    outputs = report.outputs[:n]
    rows = [int(i) for i in report.sample_indices[:n]]
    finite = bool(np.all(np.isfinite(outputs)))
    decoded: list[tuple[tuple[str, float], ...]] = [() for _ in rows]
    if bridge is not None and finite:
        decoded = [tuple(d) for d in bridge.decode(outputs, k=DECODE_TOP_K)]
    samples = []
    for j, row in enumerate(rows):
        target = dataset.targets[row].numpy()
        out = outputs[j]
        denom = float(np.linalg.norm(out) * np.linalg.norm(target))
        cos = float(out @ target) / denom if finite and denom > 0 else math.nan
        samples.append(DecodedSample(
            input_text=_text(dataset.input_texts, row),
            target_text=_text(dataset.target_texts, row),
            decoded=decoded[j], target_similarity=cos))
    return tuple(samples)


def _text(texts: list[str] | None, row: int) -> str:
    if texts is None:
        return f"(no text: precomputed embedding, dataset row {row})"
    return texts[row]
