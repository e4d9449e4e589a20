"""The health verdicts' contract: what the app, ``trace health`` and the headless gate rely on.

tests/test_diagnostics.py shows that each check fails on a run broken in its way. This file pins
what every verdict promises whatever the run: its key and title, a detail that says why, advice
where the researcher must act, a value that is the number the level was decided from (checked
against values computed here from the telemetry, not by the check's own code), non-finite
telemetry caught array by array, and a replayed recording judged exactly like the live run that
wrote it. The survivors of a mutation run over ``energy_flow/diagnostics`` (issue 13) showed
these promises untested; each test says which bug it guards against.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.diagnostics import (CHECK_KEYS, THRESHOLDS, Evidence, HealthReport, Level, Verdict, assess,
                                     assess_batch, evidence_from_config, flow_checks, sources, training_checks)
from energy_flow.diagnostics.flow_checks import _share, _weighted_mean, border_mask
from energy_flow.diagnostics.sources import (HealthMonitor, assess_recording_batch, recording_history,
                                             signals_from_report)
from energy_flow.trace.figures import BATCH
from energy_flow.diagnostics.thresholds import FLAT_WINDOW, LOSS_WINDOW
from energy_flow.trace.recording import Recording, RecordingWriter, open_recording, report_fields_from
from energy_flow.trace.telemetry import SATURATION_NAMES, BatchTelemetry
from energy_flow.training.trainer import EnergyTrainer, build_model
from tests.conftest import unit_rows
from tests.test_diagnostics import freeze_displacement, research_like_recording

ROOT = Path(__file__).resolve().parents[1]
V1_RECORDING = ROOT / "tests" / "data" / "recording_v1.h5"

#: The badge labels the app shows, one per check (written out here, not read from the code).
TITLES = {"finite": "Finite values", "landing": "Landing", "timeouts": "Timeouts", "motion": "Motion",
          "edge": "Edge pile-up", "fading": "Energy", "spawn_budget": "Spawn budget",
          "saturation": "Saturation", "gradients": "Gradients", "clipping": "Clipping",
          "updates": "Update size", "collapse": "Output spread", "loss": "Loss trend",
          "learning_rate": "Learning rate", "memorising": "Memorising"}
FLOW_KEYS = ("landing", "timeouts", "motion", "edge", "fading", "spawn_budget", "saturation")
#: Checks whose level comes from one threshold applied to the verdict's value.
SINGLE_THRESHOLD = {"landing": "landing", "timeouts": "timeouts", "motion": "motion", "edge": "edge",
                    "spawn_budget": "spawn_budget", "saturation": "saturation",
                    "clipping": "gradient_explosion", "collapse": "collapse", "learning_rate": "learning_rate"}
BATCHES = 4


@contextmanager
def one_torch_thread():
    """Train the tiny model on one thread: its ops are too small to share, and on a busy 2-core
    machine two OpenMP threads made a step ~40× slower (4.6 s against 0.12 s, measured here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def live_config():
    """8×8 planes: the smallest square whose border (44 % of the cells) still lets edge judge."""
    return create_tiny_config(device="cpu", lattice_width=8, lattice_height=8, max_active_flows=3000)


# The fixtures are split: the real training runs happen once per module, and every test judges
# them again itself. Mutation testing (mutmut) runs, for each mutant, only the tests that called
# the mutated function; verdicts computed once in a module fixture would be credited to the
# first test alone, and every other contract test here would never see the mutant.

@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """Four real training steps written by a RecordingWriter, as the app's worker does
    (app/sources/worker.py): returns (config, reports, path)."""
    config = live_config()
    torch.manual_seed(0)
    trainer = EnergyTrainer(build_model(config), config)
    x = unit_rows(4 * BATCHES, config.teacher_dim, seed=11)
    y = unit_rows(4 * BATCHES, config.teacher_dim, seed=12)
    path = tmp_path_factory.mktemp("live") / "live.h5"
    reports = []
    provenance = {"model": "energy_flow.FlowProcessor"}
    with one_torch_thread(), RecordingWriter(path, config.to_dict(), provenance) as writer:
        for i in range(BATCHES):
            idx = torch.arange(4 * i, 4 * i + 4)
            report = trainer.train_step((x[idx], y[idx], idx))
            writer.append_batch(report.telemetry, report_fields_from(report))
            reports.append(report)
    return config, reports, path


@pytest.fixture
def live(live_run):
    """The live run judged batch by batch by a HealthMonitor, in this test: (reports, verdicts, path)."""
    config, reports, path = live_run
    monitor = HealthMonitor(config.to_dict())
    return reports, [monitor.observe_report(r) for r in reports], path


@pytest.fixture(scope="module")
def broken_run():
    """One real step of a model whose displacement head outputs zero: nobody moves or lands."""
    config = live_config()
    torch.manual_seed(1)
    trainer = EnergyTrainer(build_model(config), config)
    freeze_displacement(trainer)
    x, y = unit_rows(4, config.teacher_dim, seed=21), unit_rows(4, config.teacher_dim, seed=22)
    with one_torch_thread():
        report = trainer.train_step((x, y, torch.arange(4)))
    return config, report


@pytest.fixture
def broken(broken_run):
    config, report = broken_run
    return report, HealthMonitor(config.to_dict()).observe_report(report)


@pytest.fixture(scope="module")
def research_path(tmp_path_factory):
    """The research-like FlowRecorder recording of test_diagnostics (no training step)."""
    return research_like_recording(tmp_path_factory.mktemp("research") / "research.h5")


@pytest.fixture
def research(research_path):
    with open_recording(research_path) as rec:
        return rec.batch(0), assess_recording_batch(rec, 0)


def with_aggregates(tel: BatchTelemetry, **changes) -> BatchTelemetry:
    return dataclasses.replace(tel, aggregates=dataclasses.replace(tel.aggregates, **changes))


def pct(x: float) -> str:
    """A share ≥ 1 % as the detail lines print it."""
    assert x >= 0.01, x
    return f"{x:.0%}"


# ---------------------------------------------------------------------------------- 1. the verdict contract
SITUATIONS = ("live", "replayed", "broken", "nothing", "no_telemetry", "no_training_step", "research",
              "version_1_trained", "version_1_untrained", "no_flows", "nan_telemetry")


@pytest.fixture
def situations(live, broken, research):
    reports, verdicts, path = live
    report = reports[-1]
    signals = signals_from_report(report)
    with open_recording(path) as rec:
        replayed = assess_recording_batch(rec, BATCHES - 1)
    with open_recording(V1_RECORDING) as rec:
        v1 = [assess_recording_batch(rec, i) for i in range(2)]
    energy = np.array(report.telemetry.plane_energy)
    energy[0, 0, 0] = np.nan
    return {
        "live": verdicts[-1], "replayed": replayed, "broken": broken[1],
        "nothing": assess_batch(None, None), "no_telemetry": assess_batch(None, signals),
        "no_training_step": assess_batch(report.telemetry, None), "research": research[1],
        "version_1_trained": v1[0], "version_1_untrained": v1[1],
        "no_flows": assess_batch(dataclasses.replace(report.telemetry, total_flows=0), signals),
        "nan_telemetry": assess_batch(dataclasses.replace(report.telemetry, plane_energy=energy), signals),
    }


@pytest.mark.parametrize("situation", SITUATIONS)
def test_every_verdict_keeps_the_contract(situations, situation):
    """Guards against a verdict the strip cannot show or the researcher cannot act on: a key or
    title lost or changed, a detail that is empty or not text, advice missing on a warning or a
    failure, a value that is not the number the level was decided from, a cannot-judge verdict
    that shows a number."""
    health = situations[situation]
    assert [v.key for v in health] == list(CHECK_KEYS)
    for v in health:
        where = f"{situation}/{v.key}"
        assert v.title == TITLES[v.key], where
        assert isinstance(v.level, Level), where
        assert isinstance(v.detail, str) and v.detail.strip() and "\n" not in v.detail, where
        assert isinstance(v.advice, str), where
        if v.level >= Level.WARNING:
            assert v.advice.strip(), f"{where}: a {v.level.label} without advice"
        assert v.value is None or (isinstance(v.value, float) and not math.isinf(v.value)), where
        if v.level is Level.UNKNOWN:
            assert v.value is None or math.isnan(v.value), f"{where}: cannot judge, yet shows {v.value}"
        else:
            assert v.value is not None and math.isfinite(v.value), where
        if v.key in SINGLE_THRESHOLD and v.value is not None:
            assert THRESHOLDS[SINGLE_THRESHOLD[v.key]].level(v.value) is v.level, where


def test_cannot_judge_says_why(situations, live):
    """Guards against a cannot-judge verdict whose detail does not say what was missing, and
    against a tooltip that vanishes when a check cannot judge a batch that does have telemetry
    (the researcher still needs to know what the check looks for)."""
    no_tel, no_step, nothing = situations["no_telemetry"], situations["no_training_step"], situations["nothing"]
    for key in FLOW_KEYS:
        assert no_tel[key].level is Level.UNKNOWN and no_tel[key].detail == flow_checks.NO_TELEMETRY, key
    for key in ("gradients", "clipping", "updates", "collapse", "learning_rate"):
        assert no_step[key].level is Level.UNKNOWN and no_step[key].detail == training_checks.NO_STEP, key
    assert nothing["finite"].level is Level.UNKNOWN
    assert "telemetry" in nothing["finite"].detail and "training step" in nothing["finite"].detail
    # Telemetry present but not enough of it: the tooltip is the one the judged check shows.
    judged = live[1][-1]
    v1 = situations["version_1_untrained"]
    assert v1["saturation"].level is Level.UNKNOWN and v1["saturation"].advice == judged["saturation"].advice
    assert v1["edge"].level is Level.UNKNOWN and v1["edge"].advice == judged["edge"].advice
    tel = live[0][-1].telemetry
    bare = dataclasses.replace(with_aggregates(tel, still_fraction=None), flows=None)
    motion = assess_batch(bare, None)["motion"]
    assert motion.level is Level.UNKNOWN and motion.advice == judged["motion"].advice
    for key in ("gradients", "clipping", "updates", "collapse", "loss", "learning_rate"):
        assert no_step[key].advice == judged[key].advice, key


def test_a_batch_without_flows_cannot_be_judged_on_landing(situations):
    """Guards against a division by a zero flow count turning into a crash or into a share."""
    health = situations["no_flows"]
    for key in ("landing", "timeouts"):
        assert health[key].level is Level.UNKNOWN and math.isnan(health[key].value), key
    assert math.isnan(_share(1, 0)) and _share(1, 4) == 0.25


def test_older_recordings_judge_motion_from_the_trajectory_sample(situations):
    """Guards against the version-1 path (no per-step still share) losing its share or detail:
    the fixture's model moved every flow at every step."""
    for name in ("version_1_trained", "version_1_untrained"):
        motion = situations[name]["motion"]
        assert motion.level is Level.OK and motion.value == 0.0, name
        assert "sampled flows" in motion.detail, name


# ---------------------------------------------------------------------------------- 2. values computed here
def test_border_mask_is_the_outer_ring():
    """Guards against a mask that misses a side (edge pile-up on that wall would go unseen)."""
    expected = np.array([[1, 1, 1, 1, 1],
                         [1, 0, 0, 0, 1],
                         [1, 0, 0, 0, 1],
                         [1, 1, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(border_mask(4, 5), expected)


def border_excess(plane_energy: np.ndarray) -> float:
    """docs/health.md's border excess, with this test's own mask."""
    energy = np.asarray(plane_energy, dtype=np.float64)
    interior = np.zeros(energy.shape[1:], dtype=bool)
    interior[1:-1, 1:-1] = True
    cells = 1.0 - interior.mean()
    on_border = energy[:, ~interior].sum() / energy.sum()
    return (on_border - cells) / (1.0 - cells)


def test_edge_value_is_the_border_excess_of_the_deposit(live, broken):
    """Guards against a wrong excess formula (a sign, the normalisation) and a clamp share in the
    detail that is not the flows' (the detail is how the researcher tells sliding along a wall
    from aiming at it)."""
    cases = [(r.telemetry, h) for r, h in zip(live[0], live[1])] + [(broken[0].telemetry, broken[1])]
    for tel, health in cases:
        assert health["edge"].value == pytest.approx(border_excess(tel.plane_energy), abs=1e-6)
    tel, edge = live[0][-1].telemetry, live[1][-1]["edge"]
    agg = tel.aggregates
    clamp = np.sum(agg.clamp_fraction[1:] * agg.active[:-1]) / np.sum(agg.active[:-1])
    assert f"{pct(clamp)} of moves clamped" in edge.detail, edge.detail


def test_fading_counts_early_fades_against_the_configs_max_steps(live):
    """Guards against the early window (first half of max_steps, step 0 excluded) being cut at the
    wrong step or taken from the telemetry when the config says otherwise, and against a value
    that is not the early share."""
    tel = live[0][-1].telemetry
    assert tel.num_steps == 10
    faded = np.zeros(11, dtype=np.int64)
    faded[[2, 5, 6, 9]] = [7, 11, 13, 17]
    tel = with_aggregates(tel, faded=faded)
    n = tel.total_flows
    for config, half, early in (({"max_steps": 10}, 5, 7 + 11), (None, 5, 7 + 11), ({"max_steps": 4}, 2, 7),
                                ({"max_steps": 14}, 7, 7 + 11 + 13)):
        verdict = assess_batch(tel, None, None, config)["fading"]
        assert verdict.value == pytest.approx(early / n), config
        assert f"faded by step {half} ({7 + 11 + 13 + 17} in all)" in verdict.detail, (config, verdict.detail)


def test_fading_detail_shows_the_energy_kept(live):
    """Guards against the kept share being read from the wrong step or not shown: the share of the
    placed energy still carried or deposited after the last step."""
    for report, health in zip(live[0], live[1]):
        agg = report.telemetry.aggregates
        kept = (float(agg.deposited_energy[-1].sum()) + float(agg.active_energy[-1])) / float(agg.active_energy[0])
        assert f"{pct(kept)} of the placed energy kept" in health["fading"].detail, health["fading"].detail


def test_only_a_batch_with_no_fade_at_all_warns_that_energy_never_fades(live):
    """Guards against the "never fades" warning firing on a batch where flows did fade (the
    warning says the retention head is pinned; one fade proves it is not)."""
    tel = live[0][-1].telemetry
    agg = tel.aggregates
    conserved = np.array(agg.active_energy)
    conserved[-1] = agg.active_energy[0] - agg.deposited_energy[-1].sum()   # no energy lost
    kept_all = with_aggregates(tel, active_energy=conserved, faded=np.zeros_like(agg.faded))
    never = assess_batch(kept_all, None)["fading"]
    assert never.level is Level.WARNING and "never fades" in never.detail, never.detail
    late = np.zeros_like(agg.faded)
    late[-1] = 1                                                            # one fade, after the early window
    one_fade = assess_batch(with_aggregates(kept_all, faded=late), None)["fading"]
    assert one_fade.level is Level.OK and "never fades" not in one_fade.detail, one_fade.detail


def test_spawn_budget_value_is_the_denied_share(live):
    """Guards against the spawn verdict dropping its value: denied ÷ requested over the batch."""
    for report, health in zip(live[0], live[1]):
        agg = report.telemetry.aggregates
        assert agg.spawn_requested.sum() > 0
        assert health["spawn_budget"].value == pytest.approx(agg.spawn_denied.sum() / agg.spawn_requested.sum())


def test_saturation_names_the_heads_it_could_not_measure(live):
    """Guards against a partly measured batch (a recorder that cannot see one head) hiding which
    head went unmeasured, or being judged non-finite for the legitimately empty column."""
    tel = live[0][-1].telemetry
    sat = np.array(tel.aggregates.saturation)
    payload = SATURATION_NAMES.index("payload")
    sat[:, payload] = np.nan
    health = assess_batch(with_aggregates(tel, saturation=sat), None)
    detail = health["saturation"].detail
    assert detail.endswith("(not recorded: payload)"), detail
    shown = [part.rsplit(" ", 1)[0] for part in detail.split("pinned: ", 1)[1].split(" (")[0].split(", ")]
    assert shown == [n for n in SATURATION_NAMES if n != "payload"], detail
    assert health["finite"].level is Level.OK, health["finite"].detail
    full = assess_batch(tel, None)["saturation"].detail
    assert "not recorded" not in full, full


def test_weighted_mean_counts_single_flows_and_skips_nan_rows():
    """Guards against steps with one stepped flow being dropped from a per-step share, and NaN
    steps poisoning it."""
    assert _weighted_mean(np.array([0.2, np.nan, 0.6]), np.array([1.0, 1.0, 3.0])) == pytest.approx(0.5)
    assert _weighted_mean(np.array([0.4, 0.8]), np.array([1.0, 1.0])) == pytest.approx(0.6)
    assert math.isnan(_weighted_mean(np.array([np.nan]), np.array([2.0])))


# ---------------------------------------------------------------------------------- 3. non-finite values
#: Every telemetry array the finite check scans → (is a per-step array whose step 0 may be NaN).
SCANNED = {"plane_energy": False, "plane_reached": False, "plane_energy_steps": False,
           "energy_percentiles": False, "coverage": False, "deposited_energy": False, "active_energy": False,
           "delta_min": True, "delta_max": True, "delta_percentiles": True, "clamp_fraction": True,
           "still_fraction": True, "saturation": True}


def with_nan(tel: BatchTelemetry, name: str, row: int) -> BatchTelemetry:
    agg_fields = {f.name for f in dataclasses.fields(tel.aggregates)}
    array = np.array(getattr(tel.aggregates if name in agg_fields else tel, name))
    array[(row,) + (0,) * (array.ndim - 1)] = np.nan
    if name in agg_fields:
        return with_aggregates(tel, **{name: array})
    return dataclasses.replace(tel, **{name: array})


def named_arrays(detail: str) -> list[str]:
    return detail.split("telemetry: ", 1)[1].split("; ")[0].split(", ")


@pytest.mark.parametrize("name", list(SCANNED))
def test_one_nan_in_any_scanned_array_fails_finite_and_names_it(live, name):
    """Guards against a telemetry array dropped from the scan, scanned from the wrong step, or
    named wrongly in the detail (the researcher looks up the array by that name)."""
    report = live[0][-1]
    signals = signals_from_report(report)
    verdict = assess_batch(with_nan(report.telemetry, name, row=1), signals)["finite"]
    assert verdict.level is Level.FAILURE and verdict.value == 1.0, verdict.detail
    assert named_arrays(verdict.detail) == [name], verdict.detail
    assert verdict.advice.strip()
    if SCANNED[name]:   # nothing has moved or been pinned at step 0: NaN there is legitimate
        assert assess_batch(with_nan(report.telemetry, name, row=0), signals)["finite"].level is Level.OK


def test_nan_outputs_of_a_live_report_fail_finite(live):
    """Guards against NaN output embeddings passing: only a live report can show them, through
    ``signals_from_report``'s ``outputs_finite``."""
    report = live[0][-1]
    assert signals_from_report(report)["outputs_finite"] is True
    nan_out = dataclasses.replace(report, outputs=np.full(report.outputs.shape, np.nan, np.float32))
    signals = signals_from_report(nan_out)
    assert signals["outputs_finite"] is False
    verdict = assess_batch(report.telemetry, signals)["finite"]
    assert verdict.level is Level.FAILURE and "output embeddings" in verdict.detail, verdict.detail


def test_a_nan_loss_fails_finite_even_without_the_trainers_flag(live):
    """Guards against a NaN loss passing when the trainer did not name it (a recording of another
    trainer, an older file): the loss itself is checked."""
    signals = dict(signals_from_report(live[0][-1]), loss=float("nan"), nonfinite=None)
    verdict = assess_batch(None, signals)["finite"]
    assert verdict.level is Level.FAILURE and "loss is nan" in verdict.detail, verdict.detail


def test_the_finite_check_says_what_it_checked(situations):
    """Guards against an ok whose scope line is wrong: it must list what was actually seen."""
    def scope(detail: str) -> list[str]:
        return detail.split("all finite: ", 1)[1].split(" (")[0].split(", ")

    assert scope(situations["live"]["finite"].detail) == ["loss", "gradients", "outputs", "telemetry"]
    assert scope(situations["no_training_step"]["finite"].detail) == ["telemetry"]
    assert scope(situations["no_telemetry"]["finite"].detail) == ["loss", "gradients", "outputs"]


# ---------------------------------------------------------------------------------- 4. replay equals live
def same_value(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def test_a_recording_is_judged_exactly_like_the_live_run_that_wrote_it(live):
    """Guards against replay losing the training signals, the history or the config (learning
    rate, max_steps): `trace health` and the app's replay must show what the live strip showed."""
    _, verdicts, path = live
    with open_recording(path) as rec:
        assert rec.num_batches == BATCHES
        for i, live_health in enumerate(verdicts):
            replayed = assess_recording_batch(rec, i)
            for a, b in zip(live_health, replayed):
                assert (a.key, a.level, a.detail) == (b.key, b.level, b.detail), (i, a, b)
                assert same_value(a.value, b.value), (i, a.key, a.value, b.value)
    assert "4 batches of loss" in verdicts[-1]["loss"].detail   # the live run did use its history


def test_replay_with_a_batch_already_read_does_not_read_it_again(live, monkeypatch):
    """Guards against the app's replay (which has decoded the batch to draw it) paying for a
    second read of its telemetry per verdict."""
    _, verdicts, path = live
    with open_recording(path) as rec:
        tel = rec.batch(1)
        reads = []
        original = Recording.batch
        monkeypatch.setattr(Recording, "batch", lambda self, i: reads.append(i) or original(self, i))
        health = assess_recording_batch(rec, 1, tel)
    assert reads == []
    assert [(v.level, v.detail) for v in health] == [(v.level, v.detail) for v in verdicts[1]]


def test_recording_history_is_the_window_up_to_the_batch(live, monkeypatch):
    """Guards against an off-by-one in the history window: batches k−L+1…k, clipped at 0."""
    monkeypatch.setattr(sources, "HISTORY_LENGTH", 3)
    with open_recording(live[2]) as rec:
        loss = np.asarray(rec.batch_column("loss"), dtype=np.float64)
        assert np.unique(loss).size == BATCHES
        for k, expected in ((0, loss[0:1]), (1, loss[0:2]), (BATCHES - 1, loss[1:4])):
            history = recording_history(rec, k)
            assert set(history) == {"loss", "grad_norm", "learning_rate", "output_spread", "target_spread",
                                    "held_out_cosine", "held_out_top1"}
            np.testing.assert_array_equal(history["loss"], expected, err_msg=f"batch {k}")
            assert all(len(series) == len(expected) for series in history.values()), k


def test_recording_history_is_nan_where_the_file_has_no_column():
    """Guards against a version-1 file (no gradient or spread columns) breaking the history or
    filling it with something other than NaN."""
    with open_recording(V1_RECORDING) as rec:
        history = recording_history(rec, 1)
    assert history["loss"][0] == 0.5 and math.isnan(history["loss"][1])
    for name in ("grad_norm", "output_spread", "target_spread"):
        assert history[name].shape == (2,) and np.isnan(history[name]).all(), name


def test_the_monitor_keeps_a_bounded_history_and_judges_with_it(monkeypatch):
    """Guards against a live history that grows without bound, a batch without a training step
    breaking the monitor, and verdicts judged without the history (one calm batch after steady
    explosions must not clear the clipping failure)."""
    monkeypatch.setattr(sources, "HISTORY_LENGTH", 3)
    monitor = HealthMonitor({"learning_rate": 1e-3})
    for g in (500.0, 500.0, 500.0):
        monitor.observe(None, {"grad_norm": g, "grad_clip": 1.0})
    calm = monitor.observe(None, {"grad_norm": 0.5, "grad_clip": 1.0})
    assert calm["clipping"].level is Level.FAILURE, calm["clipping"].detail
    history = monitor.history()
    np.testing.assert_array_equal(history["grad_norm"], [500.0, 500.0, 0.5])
    assert history["grad_norm"].dtype == np.float64
    assert np.isnan(history["loss"]).all() and history["loss"].shape == (3,)
    monitor.observe(None, None)
    np.testing.assert_array_equal(monitor.history()["grad_norm"], [500.0, 0.5, np.nan])


# ---------------------------------------------------------------------------------- 5. small contracts
def test_a_missing_check_raises_a_keyerror_naming_it(situations):
    """Guards against a lookup error that does not say which key was asked for."""
    with pytest.raises(KeyError, match="no_such_check"):
        situations["live"]["no_such_check"]


def test_counts_and_failures_of_a_report():
    """Guards against wrong badge counts in the strip's summary and a failure list that is not
    exactly the failed checks, in their order."""
    levels = [Level.FAILURE, Level.OK, Level.WARNING, Level.FAILURE, Level.OK, Level.OK]
    report = HealthReport(tuple(Verdict(f"k{i}", f"T{i}", lv, "d") for i, lv in enumerate(levels)))
    assert report.counts() == {Level.OK: 3, Level.UNKNOWN: 0, Level.WARNING: 1, Level.FAILURE: 2}
    assert [v.key for v in report.failures()] == ["k0", "k3"]
    assert HealthReport(()).counts() == {level: 0 for level in Level} and HealthReport(()).failures() == ()


def test_evidence_from_config_carries_the_run_settings_and_history():
    """Guards against the learning rate, max_steps or history being dropped between the config
    dict and the checks."""
    history = {"loss": np.array([1.0, np.nan, 2.0])}
    ev = evidence_from_config(None, None, history, {"learning_rate": 0.01, "max_steps": 7})
    assert ev.initial_learning_rate == 0.01 and ev.max_steps == 7 and isinstance(ev.max_steps, int)
    np.testing.assert_array_equal(ev.series(BATCH.loss), [1.0, 2.0])
    unknown = ev.series(BATCH.grad_norm)
    assert unknown.shape == (0,) and unknown.dtype == np.float64
    bare = evidence_from_config(None, None, None, None)
    assert bare.initial_learning_rate is None and bare.max_steps is None and bare.series(BATCH.loss).size == 0


def test_loss_trend_reports_the_rolling_means(live):
    """Guards against a windowed mean that is not a mean (a ratio alone would not show it: the
    detail's numbers must be the losses' own scale)."""
    losses = 1.0 + 0.5 * np.sin(np.arange(3 * LOSS_WINDOW)) + np.linspace(0.0, 0.6, 3 * LOSS_WINDOW)
    verdict = assess(Evidence(None, {"loss": float(losses[-1])}, {"loss": losses}))["loss"]
    means = np.lib.stride_tricks.sliding_window_view(losses, LOSS_WINDOW).mean(axis=1)
    last, best = means[-1], means.min()
    head = verdict.detail.split(";")[0]
    assert head == f"last {LOSS_WINDOW} batches' mean {last:.4g}, {last / best:.2f}× the best {best:.4g}", head
    assert verdict.value == pytest.approx(last / best)


# ---------------------------------------------------------------------------------- 6. the optimisation checks' numbers
def step_signals(**fields) -> dict:
    """A training step's signals with every parameter given a gradient, plus ``fields``."""
    return {"params_without_grad": [], "params_without_grad_count": 0, **fields}


def test_gradients_judges_every_module_with_a_weight_norm_above_zero():
    """Guards against the vanishing-gradient ratio skipping modules whose weight norm is small
    (≤ 1: a displacement head, a bias, a freshly initialised layer), which are the ones that
    vanish first, and against a weightless module dividing by zero."""
    grads = {"displacement": 2e-7, "gru": 0.3, "spare": 0.1}
    weights = {"displacement": 0.8, "gru": 12.0, "spare": 0.0}
    ratios = {m: grads[m] / weights[m] for m in ("displacement", "gru")}
    weakest = min(ratios, key=ratios.get)
    assert weakest == "displacement"
    verdict = assess(Evidence(None, step_signals(grad_norms=grads, weight_norms=weights)))["gradients"]
    assert verdict.value == pytest.approx(ratios[weakest])
    assert verdict.level is THRESHOLDS["gradient_vanishing"].level(ratios[weakest]) is Level.WARNING
    assert verdict.detail.endswith(f"{ratios[weakest]:.1e} ({weakest})"), verdict.detail


def test_updates_names_the_module_with_the_largest_and_the_smallest_step():
    """Guards against the largest update being picked by module name instead of by size: the
    researcher lowers the learning rate of the module the detail names."""
    ratios = {"decoder": 0.3, "encoder": 2e-7, "head": 1e-3, "lost": float("nan")}
    verdict = assess(Evidence(None, step_signals(update_ratios=ratios)))["updates"]
    assert verdict.detail == f"‖Δθ‖/‖θ‖ from {2e-7:.1e} (encoder) to {0.3:.1e} (decoder)", verdict.detail
    assert verdict.value == 0.3
    expected = max(THRESHOLDS["update_ratio"].level(0.3), THRESHOLDS["update_stalled"].level(2e-7))
    assert verdict.level is expected is Level.WARNING


def test_a_skipped_update_cannot_be_judged_on_its_size():
    """Guards against a step the trainer skipped (non-finite) being judged from the ratios it
    left behind, or its cannot-judge verdict losing the updates key (the strip and the gate look
    verdicts up by key)."""
    signals = step_signals(skipped=True, update_ratios={"decoder": 5.0, "encoder": 1e-3})
    verdict = assess(Evidence(None, signals))["updates"]
    assert verdict.level is Level.UNKNOWN and verdict.value is None
    assert "skipped" in verdict.detail, verdict.detail


def test_collapse_is_the_median_over_batches_where_both_spreads_are_finite():
    """Guards against the finite mask letting a batch through when only one of its spreads is
    usable (a NaN output spread, a NaN or zero target spread turn the median into NaN or inf),
    and against the target history being ignored (the check then judges the last batch alone)."""
    out = np.array([0.2, 0.3, 0.4, np.nan, 0.3])
    tgt = np.array([1.0, np.nan, 0.0, 0.7, 0.5])
    usable = [(o, t) for o, t in zip(out, tgt) if math.isfinite(o) and math.isfinite(t) and t > 0]
    assert len(usable) == 2
    ratio = float(np.median([o / t for o, t in usable]))   # (0.2 + 0.6) / 2
    signals = step_signals(output_spread=float(out[-1]), target_spread=float(tgt[-1]))
    verdict = assess(Evidence(None, signals, {"output_spread": out, "target_spread": tgt}))["collapse"]
    assert verdict.value == pytest.approx(ratio)
    assert verdict.level is THRESHOLDS["collapse"].level(ratio) is Level.WARNING
    assert verdict.detail.endswith("(0.300 vs 0.500; median of 2 batches)"), verdict.detail


def rolling_means(losses: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(losses, LOSS_WINDOW).mean(axis=1)


def flatness_bound(losses: np.ndarray) -> float:
    """The relative change between the last window and the one FLAT_WINDOW before, plus twice
    the standard error of that difference from the two windows' scatter."""
    means = rolling_means(losses)
    before = means[-1 - FLAT_WINDOW]
    a, b = losses[-LOSS_WINDOW:], losses[-LOSS_WINDOW - FLAT_WINDOW:-FLAT_WINDOW]
    noise = 2 * np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / LOSS_WINDOW) / abs(before)
    return abs(means[-1] - before) / abs(before) + noise


def test_loss_flatness_compares_the_last_window_with_the_one_flat_window_before():
    """Guards against the relative change being taken from the wrong windowed mean (the first
    instead of the last), and against a flat loss's verdict losing the change it was judged on."""
    n = FLAT_WINDOW + 2 * LOSS_WINDOW
    falling = 2.0 * np.exp(-np.arange(n) / 60.0) + 0.05 * np.sin(np.arange(n))
    means = rolling_means(falling)
    change = abs(means[-1] - means[-1 - FLAT_WINDOW]) / abs(means[-1 - FLAT_WINDOW])
    verdict = assess(Evidence(None, {"loss": float(falling[-1])}, {"loss": falling}))["loss"]
    assert f"; {change:.2%} change over {FLAT_WINDOW} batches" in verdict.detail, verdict.detail
    assert verdict.level is Level.OK and verdict.value == pytest.approx(means[-1] / means.min())

    flat = 0.7 + 1e-6 * np.cos(np.arange(n))
    means = rolling_means(flat)
    change = abs(means[-1] - means[-1 - FLAT_WINDOW]) / abs(means[-1 - FLAT_WINDOW])
    verdict = assess(Evidence(None, {"loss": float(flat[-1])}, {"loss": flat}))["loss"]
    assert verdict.level is THRESHOLDS["loss_flat"].level(change) is Level.FAILURE
    assert verdict.value == pytest.approx(flatness_bound(flat), rel=1e-6)
    assert change < verdict.value < 2 * change + 1e-5     # the scatter of 1e-6 wiggles adds almost nothing


def test_a_loss_whose_best_mean_is_not_positive_has_no_divergence_ratio():
    """Guards against a loss that can reach zero or go negative (a shifted or log-likelihood
    loss) crashing the trend check or getting a divergence ratio that means nothing; its
    flatness is still judged."""
    short = -0.5 + 0.01 * np.arange(2 * LOSS_WINDOW)
    verdict = assess(Evidence(None, {"loss": float(short[-1])}, {"loss": short}))["loss"]
    assert verdict.level is Level.UNKNOWN and math.isnan(verdict.value), verdict.detail
    n = FLAT_WINDOW + LOSS_WINDOW
    flat = -0.5 + 1e-8 * np.arange(n)
    means = rolling_means(flat)
    assert means.min() < 0
    change = abs(means[-1] - means[-1 - FLAT_WINDOW]) / abs(means[-1 - FLAT_WINDOW])
    verdict = assess(Evidence(None, {"loss": float(flat[-1])}, {"loss": flat}))["loss"]
    assert verdict.level is THRESHOLDS["loss_flat"].level(change) is Level.FAILURE
    assert verdict.value == pytest.approx(flatness_bound(flat), rel=1e-6)


def test_noisy_windows_that_happen_to_agree_are_not_a_flat_line():
    """Guards against the false failure a real WordNet run of the debug preset got at batch 160:
    the loss still fell, but each batch holds other pairs, so its per-batch values scatter by
    5–10 % (coefficient of variation over 20 batches, measured there), and the mean of the last
    ten batches came within 0.07 % of the mean a hundred batches before by chance. Two such windows say nothing about flatness; the same windows without the
    scatter (a loss that really stopped) still fail."""
    rng = np.random.default_rng(0)
    n = FLAT_WINDOW + 2 * LOSS_WINDOW
    noise = 0.07 * rng.standard_normal(n)
    noisy = 0.7 - 0.0002 * np.arange(n) + noise
    # shift the last window so that its mean equals the earlier window's exactly
    means = rolling_means(noisy)
    noisy[-LOSS_WINDOW:] += means[-1 - FLAT_WINDOW] - means[-1]
    verdict = assess(Evidence(None, {"loss": float(noisy[-1])}, {"loss": noisy}))["loss"]
    assert "0.00% change over" in verdict.detail and "from the batches' scatter" in verdict.detail, verdict.detail
    assert verdict.level is Level.OK, verdict.detail
    assert verdict.value == pytest.approx(rolling_means(noisy)[-1] / rolling_means(noisy).min())

    stopped = np.full(n, 0.7)
    verdict = assess(Evidence(None, {"loss": 0.7}, {"loss": stopped}))["loss"]
    assert verdict.level is Level.FAILURE and verdict.value == 0.0, verdict.detail


def test_collapse_with_only_one_spread_recorded_cannot_be_judged():
    """Guards against a batch that recorded one spread but not the other (a trainer that only
    measures its outputs, a spread that was NaN for a batch of one) crashing the collapse check
    instead of saying what is missing."""
    for signals in (step_signals(output_spread=0.3), step_signals(output_spread=0.3, target_spread=float("nan"))):
        verdict = assess(Evidence(None, signals, {"output_spread": np.array([0.3])}))["collapse"]
        assert verdict.level is Level.UNKNOWN and verdict.value is None
        assert verdict.detail == "output and target spread not recorded", verdict.detail
