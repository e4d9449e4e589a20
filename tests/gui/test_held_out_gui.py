"""The Training panel draws the held-out figures over training with the best simple predictor's
as labelled reference lines (issue 30, item 3), from a live run that crosses an evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energy_flow.trace.figures import BATCH
from energy_flow.training.data import PairDataset
from energy_flow.training.held_out import HeldOutSchedule, split_rows
from energy_flow.training.report import DataProvenance
from tests.conftest import unit_rows

SNAPSHOT_TIMEOUT_MS = 15_000
PAIRS = 40


@pytest.fixture
def related_pairs() -> PairDataset:
    """40 unit pairs whose targets lean toward their inputs (so the simple predictors differ)."""
    x = unit_rows(PAIRS, seed=3)
    y = torch.nn.functional.normalize(x + 0.8 * unit_rows(PAIRS, seed=4), dim=1)
    return PairDataset(x, y, [f"input {i}" for i in range(PAIRS)], [f"target {i}" for i in range(PAIRS)],
                       DataProvenance("40 related unit pairs", PAIRS, "precomputed embeddings", 384))


def _step(qtbot, window):
    with qtbot.waitSignal(window.snapshot_shown, timeout=SNAPSHOT_TIMEOUT_MS) as shown:
        window.step_action.trigger()
    qtbot.waitUntil(lambda: window.worker_state == "paused")
    return shown.args[0]


def test_training_panel_draws_held_out_points_and_best_simple_lines(qtbot, make_window, small_config,
                                                                   related_pairs):
    config = small_config(held_out_every=2, held_out_sample=4)
    window = make_window(config, related_pairs)
    panel = window.panels["Training"]
    _step(qtbot, window)                                    # batch 1: not evaluated
    plot = panel.held_out
    assert plot.curves[BATCH.held_out_cosine.key].getData()[0] is None or \
        len(plot.curves[BATCH.held_out_cosine.key].getData()[0]) == 0
    assert "first evaluation at batch 2" in plot.title
    assert "best simple (dashed): cosine " in plot.title     # the references before any point
    hist = _step(qtbot, window).history                     # batch 2: evaluated
    # the references, computed here independently on the same split and sample
    train_rows, held_rows = split_rows(related_pairs, config.seed)
    expected = HeldOutSchedule.for_run(related_pairs.subset(train_rows), related_pairs.subset(held_rows),
                                       2, 4, config.seed).evaluator.references
    for key, name in ((BATCH.held_out_cosine.key, "mean_cosine"), (BATCH.held_out_top1.key, "top1")):
        x, y = plot.curves[key].getData()
        assert list(x) == [2.0] and list(y) == [hist[key][1]] and np.isnan(hist[key][0])
        lx, ly = plot.reference_lines[key].getData()
        assert len(lx) == 2 and ly[0] == ly[1] == pytest.approx(expected[name][0])
        word = "cosine" if name == "mean_cosine" else "top-1"
        verdict = "beaten" if y[-1] > expected[name][0] else "NOT beaten"
        assert (f"{verdict}: held-out {word} {y[-1]:.3f} vs best simple {expected[name][0]:.3f} "
                f"({expected[name][1].split(' (')[0]})") in plot.title.split("<br>")
    # one legend row: the two figures and the dashed reference (its values are in the title)
    labels = [label.text for _sample, label in plot.plot.legend.items]
    assert labels == ["cosine", "top-1", "best simple"]
    assert plot.plot.legend.layout.rowCount() == 1


def test_a_replayed_recording_draws_its_held_out_curve_and_references(qtbot, tmp_path):
    """Recorded by the headless run, replayed: the same points and the same reference lines."""
    import io

    from app.panels.training_panel import TrainingPanel
    from app.sources.replay import ReplaySource
    from energy_flow.config import create_tiny_config
    from energy_flow.headless import HeadlessOptions, run
    from energy_flow.training.held_out import references_of

    data = tmp_path / "pairs.npz"
    x = unit_rows(PAIRS, seed=3)
    np.savez(data, inputs=x.numpy(), targets=torch.nn.functional.normalize(x + 0.8 * unit_rows(PAIRS, seed=4),
                                                                            dim=1).numpy())
    config = create_tiny_config(device="cpu", held_out_every=2, held_out_sample=4)
    out = io.StringIO()
    assert run(HeadlessOptions(config=config, batches=4, data=str(data), progress=False,
                               record=str(tmp_path / "r.h5")), out) == 0, out.getvalue()
    source = ReplaySource()
    assert source.open(tmp_path / "r.h5")
    snapshot = source.snapshot(3)
    source.close()
    refs = references_of(snapshot.held_out)
    assert set(refs) == {BATCH.held_out_cosine.key, BATCH.held_out_top1.key}
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    for key in refs:
        xs, ys = panel.held_out.curves[key].getData()
        assert list(xs) == [2.0, 4.0] and list(ys) == list(snapshot.history[key][[1, 3]])
        assert panel.held_out.reference_lines[key].getData()[1][0] == refs[key][0]
    assert "vs best simple" in panel.held_out.title
    # the same lines as the run printed
    assert f"held-out top-1 {snapshot.history[BATCH.held_out_top1.key][3]:.3f} vs best simple " \
           f"{refs[BATCH.held_out_top1.key][0]:.3f}" in out.getvalue()
