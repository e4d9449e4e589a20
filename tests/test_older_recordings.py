"""Older recordings keep opening, and every fallback they take is measured, not a stand-in
(issue 27, item 7).

Version 1 (tests/data/recording_v1.h5) lacks the per-step motion share, saturation, per-step
plane deposits and the training signals; version 2 lacks the per-plane deposit share that
version 3 added (made here from a current file by removing exactly that column).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from energy_flow.config import create_tiny_config
from energy_flow.diagnostics import assess
from energy_flow.diagnostics.evidence import Evidence
from energy_flow.diagnostics.sources import assess_recording_batch, recording_history
from energy_flow.trace.figures import BATCH, STEP, history_figures
from energy_flow.trace.recording import (SCHEMA_VERSION, RecordingError, RecordingWriter, open_recording, recorded_series,
                                         report_fields_from)
from energy_flow.trace.recording.schema import DATASET_SINCE
from energy_flow.trace.telemetry import STILL_EPSILON
from energy_flow.training import build_model
from energy_flow.training.trainer import EnergyTrainer
from tests.conftest import unit_rows

FIXTURE_V1 = Path(__file__).resolve().parent / "data" / "recording_v1.h5"


def _still_share_by_hand(positions: np.ndarray) -> float:
    """Share of a sample's flow-steps (both ends known) whose largest |Δ| is below STILL_EPSILON."""
    still = total = 0
    for flow in positions:
        for a, b in zip(flow[:-1], flow[1:]):
            if np.isfinite(a).all() and np.isfinite(b).all():
                total += 1
                still += int(np.max(np.abs(b - a)) < STILL_EPSILON)
    return still / total


def test_version_1_motion_is_measured_from_the_trajectory_sample():
    """Version 1 has no per-step motion share: the Motion check measures it over the sampled
    trajectories. Half the sampled flows are made to stand still, so a fallback that returned 0 —
    or the share of the unmodified sample — fails here."""
    with open_recording(FIXTURE_V1) as rec:
        tel = rec.batch(0)
    assert tel.aggregates.still_fraction is None
    flows = tel.flows
    positions = np.array(flows.positions)
    for i in range(0, flows.num_flows, 2):          # every other flow stays where it started
        alive = np.isfinite(positions[i]).all(axis=1)
        positions[i, alive] = positions[i, alive][0]
    stood = dataclasses.replace(tel, flows=dataclasses.replace(flows, positions=positions.astype(np.float32)))
    expected = _still_share_by_hand(positions)
    assert 0.4 < expected < 1.0
    verdict = assess(Evidence(telemetry=stood))["motion"]
    assert verdict.value == pytest.approx(expected)
    assert "sampled flows" in verdict.detail
    untouched = assess(Evidence(telemetry=tel))["motion"].value
    assert untouched == pytest.approx(_still_share_by_hand(np.asarray(flows.positions)))
    assert untouched < expected


def test_version_1_history_comes_from_its_columns_and_step_series():
    with open_recording(FIXTURE_V1) as rec:
        n = rec.num_batches
        step = recorded_series(rec, BATCH.step)
        assert step[0] == 3 and math.isnan(step[1])                    # -1 in the file: unknown
        assert np.isnan(recorded_series(rec, BATCH.grad_norm)).all()    # not in version 1
        assert recorded_series(rec, BATCH.grad_norms).shape == (n, 4)
        granted = recorded_series(rec, BATCH.spawn_granted)
        for i in range(n):
            assert granted[i] == rec.batch(i).aggregates.spawn_granted.sum()
        placed = recorded_series(rec, BATCH.placed)
        assert placed[0] == rec.batch(0).aggregates.active[0] > 0
        assert np.isnan(recorded_series(rec, BATCH.batches_per_second)).all()   # never recorded
        history = recording_history(rec, n - 1)
        assert history[BATCH.loss.key][0] == 0.5 and math.isnan(history[BATCH.loss.key][1])
        for i in range(n):
            assess_recording_batch(rec, i)


def _current_recording(path: Path) -> None:
    config = create_tiny_config(device="cpu")
    trainer = EnergyTrainer(build_model(config), config)
    with RecordingWriter(path, config.to_dict(), {}) as writer:
        for seed in (1, 2):
            report = trainer.train_step((unit_rows(4, seed=seed), unit_rows(4, seed=seed + 10)))
            writer.append_batch(report.telemetry, report_fields_from(report))


def _downgrade(path: Path, version: int) -> None:
    """Remove exactly the datasets newer than ``version``, as a file of that version was written."""
    with h5py.File(path, "r+") as f:
        for name, since in DATASET_SINCE.items():
            if since > version:
                del f[name]
        f.attrs["schema_version"] = np.int64(version)


def test_a_version_2_file_opens_and_its_missing_deposit_share_is_nan(tmp_path):
    assert SCHEMA_VERSION >= 3 and DATASET_SINCE[f"batches/{BATCH.deposit_share.key}"] == 3
    path = tmp_path / "v2.h5"
    _current_recording(path)
    with open_recording(path) as rec:
        current = recorded_series(rec, BATCH.deposit_share)
        assert current.shape == (2, 2) and np.isfinite(current).all() and (current > 0).all()
    _downgrade(path, 2)
    with open_recording(path) as rec:
        assert rec.schema_version == 2
        share = recorded_series(rec, BATCH.deposit_share)
        assert share.shape == (2, 2) and np.isnan(share).all()
        assert BATCH.deposit_share.key not in rec.report_fields(0)
        for f in history_figures():          # every series the app draws can be built
            assert recorded_series(rec, f).shape[0] == 2
        tel = rec.batch(1)
        assert tel.aggregates.still_fraction is not None and tel.plane_energy_steps is not None
        assert assess_recording_batch(rec, 1)["motion"].value is not None
    with pytest.raises(RecordingError, match="schema version 2"):
        RecordingWriter(path, create_tiny_config(device="cpu").to_dict(), {}, mode="a")


def test_a_version_3_file_opens_and_its_missing_held_out_figures_are_nan(tmp_path):
    """Held-out figures came with version 4: a current file carries them (here an evaluated batch
    and one in between), a version-3 file opens with both NaN and the memorising check cannot judge."""
    held_out = (BATCH.held_out_cosine, BATCH.held_out_top1)
    assert SCHEMA_VERSION >= 4 and all(DATASET_SINCE[f"batches/{f.key}"] == 4 for f in held_out)
    config = create_tiny_config(device="cpu")
    trainer = EnergyTrainer(build_model(config), config)
    path = tmp_path / "v3.h5"
    with RecordingWriter(path, config.to_dict(), {}) as writer:
        for seed, evaluated in ((1, False), (2, True)):
            report = trainer.train_step((unit_rows(4, seed=seed), unit_rows(4, seed=seed + 10)))
            if evaluated:
                report = dataclasses.replace(report, held_out_cosine=0.25, held_out_top1=0.5)
            writer.append_batch(report.telemetry, report_fields_from(report))
    with open_recording(path) as rec:
        np.testing.assert_array_equal(recorded_series(rec, BATCH.held_out_cosine), [np.nan, 0.25])
        np.testing.assert_array_equal(recorded_series(rec, BATCH.held_out_top1), [np.nan, 0.5])
    _downgrade(path, 3)
    with open_recording(path) as rec:
        assert rec.schema_version == 3
        for f in held_out:
            assert np.isnan(recorded_series(rec, f)).all() and f.key not in rec.report_fields(1)
        for f in history_figures():
            assert recorded_series(rec, f).shape[0] == 2
        verdict = assess_recording_batch(rec, 1)["memorising"]
        assert verdict.level.label == "cannot judge" and "no held-out evaluation" in verdict.detail


def test_a_missing_new_column_in_a_current_file_is_an_error_not_nan(tmp_path):
    """The NaN fallback is for older files only: a current file that lacks a column is damaged."""
    path = tmp_path / "broken.h5"
    _current_recording(path)
    with h5py.File(path, "r+") as f:
        del f[f"batches/{BATCH.deposit_share.key}"]
    with pytest.raises(RecordingError, match=BATCH.deposit_share.key):
        open_recording(path)


def test_step_figures_of_older_versions_are_declared_older():
    for f in STEP:
        if f.optional:
            assert f.since_schema == 2, f.key
