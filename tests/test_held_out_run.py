"""The held-out evaluation wired into a run (issue 30, item 3): the headless run evaluates every
``held_out_every`` batches, trains exactly as it would without, and its recording carries the
figures, equal to the evaluator's own computation on the same weights."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.headless import HeadlessOptions, run
from energy_flow.trace.figures import BATCH
from energy_flow.trace.recording import open_recording, recorded_series
from energy_flow.training.data import build_dataset
from energy_flow.training.held_out import HeldOutEvaluator, references_of, split_rows, untraced_predict
from energy_flow.training.trainer import EnergyTrainer, build_model
from tests.conftest import unit_rows

PAIRS, SAMPLE, EVERY, BATCHES = 40, 4, 2, 4


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.npz"
    x = unit_rows(PAIRS, seed=1)
    y = torch.nn.functional.normalize(x + 0.8 * unit_rows(PAIRS, seed=2), dim=1)   # related pairs
    np.savez(path, inputs=x.numpy(), targets=y.numpy())
    return path


def _run(tmp_path: Path, name: str, every: int, record: bool) -> tuple[dict, str, Path]:
    # readout dropout draws from the global generator in training: an evaluation that drew random
    # numbers (or ran in train mode) would change every later mask, and the weights
    config = create_tiny_config(device="cpu", held_out_every=every, held_out_sample=SAMPLE, readout_dropout=0.3)
    out = io.StringIO()
    folder = tmp_path / name
    folder.mkdir()
    opts = HeadlessOptions(config=config, batches=BATCHES, data=str(_data(tmp_path)), progress=False,
                           summary=str(folder / "s.json"), checkpoint=str(folder / "ck.pt"),
                           record=str(folder / "r.h5") if record else None)
    assert run(opts, out) == 0, out.getvalue()
    return json.loads((folder / "s.json").read_text()), out.getvalue(), folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("held_out_runs")
    return {"with": _run(tmp, "with", EVERY, record=True), "without": _run(tmp, "without", 0, record=False)}


def test_training_with_and_without_the_evaluation_is_bit_identical(runs):
    (with_s, with_text, with_dir), (without_s, _, without_dir) = runs["with"], runs["without"]
    assert [p["batch"] for p in with_s["held_out"]["points"]] == [2, 4]     # it did evaluate
    assert without_s["held_out"] == {"every": 0, "off": "held_out_every = 0", "points": [], "seconds": 0.0,
                                     "train_step_seconds": pytest.approx(without_s["held_out"]["train_step_seconds"])}
    assert with_s["losses"] == without_s["losses"]
    a = torch.load(with_dir / "ck.pt", weights_only=False)["model"]
    b = torch.load(without_dir / "ck.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "held-out at batch 2" in with_text and "vs best simple" in with_text


def test_the_recorded_figures_equal_the_evaluators_own_computation(runs, tmp_path):
    summary, _, folder = runs["with"]
    with open_recording(folder / "r.h5") as rec:
        cosine = recorded_series(rec, BATCH.held_out_cosine)
        top1 = recorded_series(rec, BATCH.held_out_top1)
        refs = references_of(rec.provenance["held_out"])
    assert cosine.shape == (BATCHES,) and np.isnan(cosine[[0, 2]]).all() and np.isfinite(cosine[[1, 3]]).all()
    assert np.isnan(top1[[0, 2]]).all() and np.isfinite(top1[[1, 3]]).all()
    # an independent computation: the split, the evaluator and the model saved after batch 4
    config = create_tiny_config(device="cpu", held_out_every=EVERY, held_out_sample=SAMPLE, readout_dropout=0.3)
    data = build_dataset(str(folder.parent / "pairs.npz"))
    train_rows, held_rows = split_rows(data, config.seed)
    evaluator = HeldOutEvaluator(data.subset(train_rows), data.subset(held_rows), SAMPLE, config.seed)
    trainer = EnergyTrainer(build_model(config), config)
    trainer.load_checkpoint(folder / "ck.pt")
    point = evaluator(trainer.predict, BATCHES)          # traced predict: the same outputs
    assert cosine[-1] == pytest.approx(point.mean_cosine, abs=1e-6) and top1[-1] == point.top1
    assert untraced_predict(trainer)(evaluator.sample.inputs).equal(trainer.predict(evaluator.sample.inputs))
    for key, f in ((BATCH.held_out_cosine.key, "mean_cosine"), (BATCH.held_out_top1.key, "top1")):
        assert refs[key][0] == pytest.approx(evaluator.references[f][0])
        assert summary["held_out"]["references"][key]["value"] == pytest.approx(evaluator.references[f][0])
    assert summary["held_out"]["points"][-1][BATCH.held_out_top1.key] == top1[-1]
    assert math.isfinite(summary["held_out"]["seconds"]) and summary["held_out"]["seconds"] > 0
