"""FlowRecorder serving other models: batches without a training step, signed energies and
energies above 1, the model's own termination reasons, per-step recording with bounded memory,
the model's provenance kept apart from the recorder's, and `trace inspect` counts."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from energy_flow.trace import (REASON_FADED, REASON_LANDED, REASON_NAMES, STILL_EPSILON,
                               FlowRecorder, open_recording)
from energy_flow.trace.__main__ import main as cli_main

CUSTOM_REASONS = (*REASON_NAMES, "absorbed")
ABSORBED = 4


def write_research_like(path: Path, steps: int = 12, samples: int = 2, width: int = 8) -> None:
    """A recording shaped like the research code's (issue 7): no training step, one flow of the
    batch moves and lands, every other flow stands still until the steps run out."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, width))
    cells = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    pos = np.tile(cells, (samples, 1))
    n = pos.shape[0]
    energy = np.full(n, 0.9)
    with FlowRecorder(path, lattice_shape=(width, width, 6), plane_z=(-1.0, 1.0), start_mode="center",
                      model_name="research", model_version="0.3") as rec:
        rec.begin_batch()
        rec.record_step(pos, energy, np.full(n, -1), np.ones(n, bool),
                        sample_index=np.repeat(np.arange(samples), cells.shape[0]))
        for t in range(1, steps + 1):
            pos = pos.copy()
            pos[0, 2] = min(1.0, t / 4)        # flow 0 walks to z = +1 and lands at step 4
            alive = np.ones(n, bool)
            alive[0] = t < 4
            rows = slice(0, n) if t <= 4 else slice(1, n)
            rec.record_step(pos[rows], energy[rows], np.full(n, -1)[rows], alive[rows],
                            flow_ids=np.arange(n)[rows],
                            sample_index=np.repeat(np.arange(samples), cells.shape[0])[rows])
        rec.end_batch()


def test_a_batch_without_a_training_step_opens_with_the_truth(tmp_path):
    """Guards against a batch without loss being refused, or reported as a trained batch
    (the app crashed on it: "cannot convert float NaN to integer")."""
    path = tmp_path / "research.h5"
    write_research_like(path)
    with open_recording(path) as rec:
        assert rec.report_fields(0) is None
        tel = rec.batch(0)
        agg = tel.aggregates
        n = 128
        assert agg.landed.sum() == 1 and agg.timed_out.sum() == n - 1 and agg.faded.sum() == 0
        assert agg.still_fraction[1] == pytest.approx((n - 1) / n)     # only flow 0 moves
        assert np.all(agg.still_fraction[5:] == 1.0)                   # after it landed, none
        assert np.isnan(agg.saturation).all() and agg.saturation.shape == (13, 5)
        assert np.array_equal(tel.plane_energy_steps[-1], tel.plane_energy)
        assert tel.plane_energy_steps[3].sum() == 0 and tel.plane_energy_steps[4].sum() == pytest.approx(0.9)
        assert rec.provenance["model"] == {"name": "research", "version": "0.3"}
        assert rec.provenance["packages"]["energy_flow"]     # the recorder's own, kept apart


def test_still_fraction_uses_the_given_positions():
    """Guards against a threshold off by its epsilon: moves just under and over STILL_EPSILON."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        with FlowRecorder(Path(tmp) / "s.h5", lattice_shape=(3, 3, 3), plane_z=(1.0,),
                          start_mode="input_face", model_name="s") as rec:
            rec.begin_batch()
            p0 = np.zeros((4, 3))
            rec.record_step(p0, np.ones(4), np.full(4, -1), np.ones(4, bool))
            p1 = p0.copy()
            p1[0, 0] = 0.5 * STILL_EPSILON
            p1[1, 1] = -2 * STILL_EPSILON
            p1[2, 2] = 0.1
            rec.record_step(p1, np.ones(4), np.full(4, -1), np.ones(4, bool))
            tel = rec.end_batch()
    assert tel.aggregates.still_fraction[1] == pytest.approx(0.5)   # flows 0 and 3 did not move


def test_signed_energies_and_energies_above_one_are_kept_and_binned(tmp_path):
    """Guards against energies clipped to [0, 1] or falling outside every histogram bin."""
    path = tmp_path / "signed.h5"
    e0 = np.array([-0.5, 0.2, 1.5, 2.0])
    with FlowRecorder(path, lattice_shape=(3, 3, 3), plane_z=(1.0,), start_mode="input_face",
                      model_name="signed", energy_hist_bins=5) as rec:
        rec.begin_batch()
        p0 = np.array([[-1, -1, -1], [0, 0, -1], [1, 1, -1], [1, -1, -1]], float)
        rec.record_step(p0, e0, np.full(4, -1), np.ones(4, bool))
        p1 = p0.copy()
        p1[:, 2] = 1.0                                  # every flow lands
        rec.record_step(p1, np.array([-0.4, 0.1, 1.2, 2.5]), np.full(4, -1), np.zeros(4, bool))
        tel = rec.end_batch()
    with open_recording(path) as r:
        back = r.batch(0)
    for t in (tel, back):
        edges = t.aggregates.energy_bin_edges
        assert edges[0] == pytest.approx(-0.5) and edges[-1] == pytest.approx(2.5)
        assert t.aggregates.energy_hist.sum(axis=1).tolist() == [4, 4]
        assert t.input_energy_range == (-0.5, 2.0)
        assert t.plane_energy[0, 0, 0] == pytest.approx(-0.4) and t.plane_energy.sum() == pytest.approx(3.4)
        np.testing.assert_allclose(t.aggregates.energy_percentiles[0, 2], np.median(e0), rtol=1e-6)


def test_a_fixed_energy_range_refuses_energies_outside_it(tmp_path):
    """Guards against silently dropping energies a fixed range cannot show."""
    rec = FlowRecorder(tmp_path / "r.h5", lattice_shape=(3, 3, 3), plane_z=(1.0,), start_mode="input_face",
                       model_name="r", energy_range=(0.0, 1.0))
    rec.begin_batch()
    with pytest.raises(ValueError, match=r"r\.h5: batch 0: energy 1\.5 at step 0 lies outside energy_range"):
        rec.record_step(np.zeros((2, 3)), np.array([0.5, 1.5]), np.full(2, -1), np.ones(2, bool))
    rec.record_step(np.zeros((2, 3)), np.array([0.5, 1.0]), np.full(2, -1), np.ones(2, bool))
    tel = rec.end_batch()
    rec.close()
    assert tel.aggregates.energy_bin_edges[[0, -1]].tolist() == [0.0, 1.0]


def _custom_reason_recording(path: Path) -> None:
    with FlowRecorder(path, lattice_shape=(3, 3, 3), plane_z=(1.0,), start_mode="input_face",
                      model_name="custom", reason_names=CUSTOM_REASONS) as rec:
        rec.begin_batch(step=2, loss=0.5)
        p0 = np.array([[-1, -1, -1], [0, 0, -1], [1, 1, -1]], float)
        rec.record_step(p0, np.ones(3), np.full(3, -1), np.ones(3, bool))
        p1 = p0.copy()
        p1[:, 2] = [1.0, 0.0, 0.0]
        rec.record_step(p1, np.ones(3), np.full(3, -1), np.array([False, False, False]),
                        reasons=np.array([REASON_LANDED, ABSORBED, REASON_FADED]))
        rec.end_batch()


def test_a_model_names_its_own_termination_reasons(tmp_path, capsys):
    """Guards against custom reason codes being refused, renamed or counted as built-in ones."""
    path = tmp_path / "custom.h5"
    _custom_reason_recording(path)
    with open_recording(path) as r:
        tel = r.batch(0)
    assert tel.reason_names == CUSTOM_REASONS
    assert tel.flows.reason.tolist() == [REASON_LANDED, ABSORBED, REASON_FADED]
    agg = tel.aggregates
    assert (agg.landed.sum(), agg.faded.sum(), agg.timed_out.sum()) == (1, 1, 0)
    assert agg.active.tolist() == [3, 0]
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "landed 1" in out and "faded 1" in out and "timed out 0" in out and "absorbed 1" in out
    rec = FlowRecorder(tmp_path / "bad.h5", lattice_shape=(3, 3, 3), plane_z=(1.0,), start_mode="input_face",
                       model_name="custom", reason_names=CUSTOM_REASONS)
    rec.begin_batch()
    rec.record_step(np.zeros((1, 3)), np.ones(1), np.full(1, -1), np.ones(1, bool))
    with pytest.raises(ValueError, match=r"reasons of ended flows must be codes 1…4"):
        rec.record_step(np.zeros((1, 3)), np.ones(1), np.full(1, -1), np.zeros(1, bool), reasons=np.array([5]))
    rec.end_batch()
    rec.close()
    with pytest.raises(ValueError, match="reason_names must be unique non-empty strings starting with"):
        FlowRecorder(tmp_path / "x.h5", lattice_shape=(3, 3, 3), plane_z=(1.0,), start_mode="input_face",
                     model_name="x", reason_names=("landed", "absorbed"))


def test_inspect_shows_counts_per_batch(tmp_path, capsys):
    """Guards against `trace inspect` hiding what ended how (issue 7: landed 1 of 1,600)."""
    path = tmp_path / "research.h5"
    write_research_like(path)
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flows 128: landed 1, faded 0, timed out 127" in out and "no training step" in out


def test_steps_are_aggregated_as_they_come_in_bounded_memory(tmp_path):
    """Guards against the recorder keeping every step's arrays until end_batch: with one traced
    sample of ten and a fixed energy range, what it holds after 60 steps of 2,000 flows is a
    fraction of those arrays (≈ 49 bytes per flow and step), and the aggregates still count all
    samples while the trajectories cover the traced one only."""
    n, samples, steps = 2000, 10, 60
    rng = np.random.default_rng(0)
    pos = rng.uniform(-0.5, 0.5, size=(n, 3))
    sample = np.repeat(np.arange(samples), n // samples)
    rec = FlowRecorder(tmp_path / "big.h5", lattice_shape=(10, 10, 6), plane_z=(-1.0, 1.0), start_mode="center",
                       model_name="big", energy_range=(0.0, 1.0), traced_samples=1)
    rec.begin_batch()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for t in range(steps + 1):
            pos = np.clip(pos + rng.normal(0, 0.001, size=pos.shape), -0.9, 0.9)
            rec.record_step(pos, np.full(n, 0.5), np.full(n, -1), np.ones(n, bool), sample_index=sample)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    tel = rec.end_batch()
    rec.close()
    all_steps = n * (steps + 1) * 49
    assert held < all_steps / 4, (held, all_steps)
    assert tel.aggregates.active[0] == n and tel.aggregates.timed_out[-1] == n
    assert tel.flows.num_flows == n // samples and set(tel.flows.sample_index.tolist()) == {0}
    assert tel.flows.traced_samples == 1 and tel.flows.total_flows == n
    assert 0 < tel.aggregates.still_fraction[1] < 1
