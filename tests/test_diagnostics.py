"""Health verdicts: every check fails on a run constructed to have its problem, and does not
fail on the healthy default.

The failing runs are real runs of a deliberately broken model wherever the problem can be made
that way (a frozen displacement head, a retention head pinned at 0 or 1, a full flow budget, an
orphan parameter, a clip level a million times too low…), so the verdict is checked against the
telemetry the model really produced, not against numbers written to fit the check. Trend checks
(loss, clipping over batches) take a constructed history. The worst bug of a debugger is a
green verdict on a broken run: each test names the broken run it must catch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from energy_flow.config import create_tiny_config
from energy_flow.diagnostics import CHECK_KEYS, THRESHOLDS, Evidence, Level, assess, assess_batch
from energy_flow.diagnostics.sources import HealthMonitor, signals_from_report
from energy_flow.diagnostics.thresholds import FLAT_WINDOW, LOSS_WINDOW
from energy_flow.training.trainer import EnergyTrainer, build_model
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CHECKS = ("gradients", "clipping", "updates", "collapse", "loss", "learning_rate")
FLOW_CHECKS = ("landing", "timeouts", "motion", "edge", "fading", "spawn_budget", "saturation")


def small_config(**overrides):
    """A 12×12 plane (border cells 31 % of it, so edge pile-up can be judged), tiny model."""
    base = dict(lattice_width=12, lattice_height=12, lattice_depth=6, max_active_flows=3000, device="cpu")
    base.update(overrides)
    return create_tiny_config(**base)


def run_batches(config, breaker=None, batches: int = 1, seed: int = 0):
    """Train ``batches`` real steps (after ``breaker(trainer)``), judging each with a monitor;
    returns (last TrainReport, last HealthReport)."""
    trainer = EnergyTrainer(build_model(config), config)
    if breaker is not None:
        breaker(trainer)
    monitor = HealthMonitor(config.to_dict())
    x = unit_rows(4 * batches, config.teacher_dim, seed=seed + 1)
    y = unit_rows(4 * batches, config.teacher_dim, seed=seed + 2)
    for i in range(batches):
        idx = torch.arange(4 * i, 4 * i + 4)
        report = trainer.train_step((x[idx], y[idx], idx))
        health = monitor.observe_report(report)
    return report, health


def levels(health) -> dict[str, Level]:
    return {v.key: v.level for v in health}


@pytest.fixture(scope="module")
def healthy():
    return run_batches(small_config(), batches=3)


# ---------------------------------------------------------------------------------- shape of the answer
def test_every_check_answers_once_in_the_fixed_order(healthy):
    _, health = healthy
    assert [v.key for v in health] == list(CHECK_KEYS)
    for v in health:
        assert v.detail and "\n" not in v.detail, v.key
        assert isinstance(v.level, Level)


def test_the_healthy_default_fails_no_check_but_output_spread(healthy):
    """Guards against thresholds so tight that a working model is flagged (a badge that is
    always red is ignored as surely as one that is always green)."""
    _, health = healthy
    lv = levels(health)
    for key in ("finite", "landing", "timeouts", "motion", "edge", "fading", "spawn_budget", "gradients",
                "clipping", "learning_rate"):
        assert lv[key] is Level.OK, (key, health[key].detail)
    assert all(level is not Level.FAILURE for key, level in lv.items() if key != "collapse"), lv


def test_worst_first_order_and_worst_level():
    _, health = run_batches(small_config(), breaker=freeze_displacement)
    ordered = health.worst_first()
    assert [int(v.level) for v in ordered] == sorted((int(v.level) for v in ordered), reverse=True)
    assert health.worst is Level.FAILURE
    assert ordered[0].level is Level.FAILURE


# ---------------------------------------------------------------------------------- flows
def freeze_displacement(trainer):
    """The research code's failure: the displacement head outputs zero, nobody moves."""
    head = trainer.processor.carrier.displacement_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()


def test_frozen_flows_fail_landing_timeouts_and_motion():
    report, health = run_batches(small_config(), breaker=freeze_displacement)
    agg = report.telemetry.aggregates
    assert agg.landed.sum() == 0 and agg.timed_out.sum() > 0   # the run really is broken
    for key in ("landing", "timeouts", "motion"):
        assert health[key].level is Level.FAILURE, (key, health[key].detail)
    assert health["motion"].value == pytest.approx(1.0)


def test_few_flows_moving_a_lot_still_fail_motion(tmp_path):
    """The research recording: ~7 % of flows move (a lot) each step, 1 of 1,600 lands. A check on
    displacement ranges or percentiles calls this "moving"; the share of still flows must not."""
    path = research_like_recording(tmp_path / "research.h5")
    from energy_flow.diagnostics.sources import assess_recording_batch
    from energy_flow.trace.recording import open_recording
    with open_recording(path) as rec:
        health = assess_recording_batch(rec, 0)
    assert health["motion"].level is Level.FAILURE, health["motion"].detail
    assert health["landing"].level is Level.FAILURE, health["landing"].detail
    assert health["timeouts"].level is Level.FAILURE
    for key in TRAINING_CHECKS:   # no training step was recorded: cannot judge, never ok
        assert health[key].level is Level.UNKNOWN, (key, health[key].detail)


def research_like_recording(path: Path) -> Path:
    """1,600 flows on a 20×20×10 lattice, batch 4, written through FlowRecorder as the original
    research code was: each step only ~110 flows move (by up to 0.3), the rest stand still;
    after 16 steps one flow sits on the output plane and every other one is still travelling."""
    from energy_flow.trace.recorder import FlowRecorder
    rng = np.random.default_rng(0)
    xs = np.linspace(-1, 1, 20)
    gx, gy = np.meshgrid(xs, xs)
    pos = np.tile(np.stack([gx.ravel(), gy.ravel(), np.zeros(400)], 1), (4, 1)).astype(np.float32)
    n = pos.shape[0]
    sample = np.repeat(np.arange(4), 400)
    energy = np.full(n, 0.8, np.float32)
    parents = np.full(n, -1)
    with FlowRecorder(path, lattice_shape=(20, 20, 10), plane_z=(-1.0, 1.0), start_mode="center",
                      model_name="research-like") as rec:
        rec.begin_batch()
        rec.record_step(pos, energy, parents, np.ones(n, bool), sample_index=sample)
        for t in range(1, 17):
            movers = rng.choice(n, size=int(rng.integers(87, 166)), replace=False)
            pos = pos.copy()
            pos[movers] += rng.uniform(-0.3, 0.3, size=(movers.size, 3)).astype(np.float32)
            pos[:, 2] = np.clip(pos[:, 2], -0.9, 0.9)
            np.clip(pos, -1, 1, out=pos)
            alive = np.ones(n, bool)
            if t == 16:
                pos[0, 2] = 1.0
                alive[:] = False
            rec.record_step(pos, energy, parents, alive, sample_index=sample)
        rec.end_batch()
    return path


def push_to_the_wall(trainer):
    """Δx saturated at +scale for every flow: everything slides to x = +1 and lands there."""
    head = trainer.processor.carrier.displacement_head
    with torch.no_grad():
        head.weight[0].zero_()
        head.bias[0] = 20.0


def test_flows_piled_on_the_wall_fail_edge():
    report, health = run_batches(small_config(), breaker=push_to_the_wall)
    energy = report.telemetry.plane_energy
    assert energy[:, :, -1].sum() / energy.sum() > 0.8   # the deposit really is on the x=+1 column
    assert health["edge"].level is Level.FAILURE, health["edge"].detail


def test_edge_cannot_be_judged_on_a_plane_that_is_mostly_border():
    _, health = run_batches(create_tiny_config(device="cpu"))   # 6×6: 56 % border cells
    assert health["edge"].level is Level.UNKNOWN


def kill_retention(trainer):
    with torch.no_grad():
        trainer.processor.carrier.energy_head.bias[0] = -30.0


def pin_retention_at_one(trainer):
    with torch.no_grad():
        trainer.processor.carrier.energy_head.weight[0].zero_()
        trainer.processor.carrier.energy_head.bias[0] = 40.0


def test_energy_dying_out_fails_fading():
    report, health = run_batches(small_config(), breaker=kill_retention)
    assert report.telemetry.aggregates.faded[1] > 0.9 * report.flow_stats.initial_flows
    assert health["fading"].level is Level.FAILURE, health["fading"].detail


def test_energy_that_never_fades_warns():
    report, health = run_batches(small_config(), breaker=pin_retention_at_one)
    assert report.flow_stats.faded == 0
    assert health["fading"].level is Level.WARNING, health["fading"].detail
    assert "never fades" in health["fading"].detail


def test_a_full_flow_budget_fails_spawn_budget():
    config = small_config(max_active_flows=4 * 144, spawn_threshold=0.06)

    def always_spawn(trainer):
        with torch.no_grad():
            trainer.processor.carrier.spawn_head.weight.zero_()
            trainer.processor.carrier.spawn_head.bias.fill_(10.0)

    report, health = run_batches(config, breaker=always_spawn)
    agg = report.telemetry.aggregates
    assert agg.spawn_denied.sum() >= 0.5 * agg.spawn_requested.sum() > 0
    assert health["spawn_budget"].level is Level.FAILURE, health["spawn_budget"].detail


# ---------------------------------------------------------------------------------- gradients
def test_an_orphan_parameter_fails_gradients():
    def add_orphan(trainer):
        trainer.processor.neuron.register_parameter("orphan", nn.Parameter(torch.ones(3)))
        trainer.optimizer.add_param_group({"params": [trainer.processor.neuron.orphan]})

    report, health = run_batches(small_config(), breaker=add_orphan)
    assert "neuron.orphan" in report.params_without_grad
    assert health["gradients"].level is Level.FAILURE
    assert "neuron.orphan" in health["gradients"].detail


def test_a_spawn_head_that_never_spawns_fails_gradients():
    """Spawning follows the share smoothly now (issue 19), so it stops only when every share is
    0: a spawn head pinned there gets no gradient, and the check must still say so by name."""
    def never_spawn(trainer):
        with torch.no_grad():
            trainer.processor.carrier.spawn_head.weight.zero_()
            trainer.processor.carrier.spawn_head.bias.fill_(-40.0)   # share ≈ 4e-18

    report, health = run_batches(small_config(), breaker=never_spawn)
    assert report.flow_stats.spawned == 0
    assert health["gradients"].level is Level.FAILURE
    assert "carrier.spawn_head.weight" in health["gradients"].detail


def test_gradients_a_million_times_the_clip_fail_clipping():
    _, health = run_batches(small_config(grad_clip=1e-7))
    assert health["clipping"].level is Level.FAILURE, health["clipping"].detail


def test_clipping_is_judged_over_recent_batches_not_one_spike():
    signals = {"grad_clip": 1.0, "grad_norm": 500.0, "learning_rate": 1e-3}
    spike = np.r_[np.full(9, 0.5), 500.0]
    assert assess(Evidence(None, signals, {"grad_norm": spike}))["clipping"].level is Level.OK
    steady = np.full(10, 500.0)
    assert assess(Evidence(None, signals, {"grad_norm": steady}))["clipping"].level is Level.FAILURE


# ---------------------------------------------------------------------------------- trends
def ev_with_losses(losses) -> Evidence:
    losses = np.asarray(losses, dtype=float)
    return Evidence(None, {"loss": float(losses[-1]), "learning_rate": 1e-3}, {"loss": losses})


def test_a_diverging_loss_fails_and_a_falling_one_does_not():
    falling = np.linspace(1.0, 0.3, 60) + 0.01 * np.sin(np.arange(60))
    assert assess(ev_with_losses(falling))["loss"].level is Level.OK
    diverging = np.r_[np.linspace(1.0, 0.3, 40), np.linspace(0.3, 2.0, 20)]
    assert assess(ev_with_losses(diverging))["loss"].level is Level.FAILURE


def test_a_flat_loss_over_many_batches_fails_loss_trend():
    flat = np.full(FLAT_WINDOW + 2 * LOSS_WINDOW, 0.7)
    verdict = assess(ev_with_losses(flat))["loss"]
    assert verdict.level is Level.FAILURE and "change" in verdict.detail


def test_a_short_loss_history_cannot_be_judged():
    assert assess(ev_with_losses([1.0, 0.9, 0.8]))["loss"].level is Level.UNKNOWN


def test_a_learning_rate_at_its_floor_fails():
    def floor(trainer):
        for group in trainer.optimizer.param_groups:
            group["lr"] = trainer.config.learning_rate * 1e-4

    _, health = run_batches(small_config(), breaker=floor)
    assert health["learning_rate"].level is Level.FAILURE, health["learning_rate"].detail


# ---------------------------------------------------------------------------------- non-finite
def test_nonfinite_loss_and_telemetry_fail_finite(healthy):
    report, _ = healthy
    signals = signals_from_report(report)
    assert assess_batch(report.telemetry, signals)["finite"].level is Level.OK
    bad = dict(signals, nonfinite="loss is nan (mse nan, 1−cos nan)", loss=float("nan"))
    assert assess_batch(report.telemetry, bad)["finite"].level is Level.FAILURE
    energy = np.array(report.telemetry.plane_energy)
    energy[0, 0, 0] = np.nan
    broken = dataclasses.replace(report.telemetry, plane_energy=energy)
    verdict = assess_batch(broken, signals)["finite"]
    assert verdict.level is Level.FAILURE and "plane_energy" in verdict.detail


# ---------------------------------------------------------------------------------- cannot judge
def test_missing_evidence_is_cannot_judge_never_ok(healthy):
    """Guards against the old behaviour of passing a check by default when its data is absent."""
    report, _ = healthy
    no_telemetry = assess_batch(None, signals_from_report(report))
    for key in FLOW_CHECKS:
        assert no_telemetry[key].level is Level.UNKNOWN, key
    no_step = assess_batch(report.telemetry, None)
    for key in TRAINING_CHECKS:
        assert no_step[key].level is Level.UNKNOWN, key
    nothing = assess_batch(None, None)
    assert all(v.level is Level.UNKNOWN for v in nothing)


# ---------------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize("threshold", list(THRESHOLDS.values()), ids=list(THRESHOLDS))
def test_a_value_on_a_threshold_takes_the_worse_level(threshold):
    assert threshold.level(threshold.warn) is Level.WARNING
    if threshold.fail is not None:
        assert threshold.level(threshold.fail) is Level.FAILURE
    assert threshold.level(float("nan")) is Level.UNKNOWN
    assert threshold.level(None) is Level.UNKNOWN
    better = threshold.warn * (0.5 if threshold.bad_when == "above" else 2.0)
    assert threshold.level(better) is Level.OK


def test_docs_health_lists_every_threshold_with_its_values():
    text = (ROOT / "docs" / "health.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in THRESHOLDS:
            rows[cells[0]] = cells
    assert set(rows) == set(THRESHOLDS), set(THRESHOLDS) ^ set(rows)
    for key, th in THRESHOLDS.items():
        warn, fail = rows[key][2], rows[key][3]
        assert math.isclose(float(warn), th.warn), key
        assert (fail == "—") if th.fail is None else math.isclose(float(fail), th.fail), key


# ---------------------------------------------------------------------------------- without a window
def test_trace_health_exits_nonzero_on_the_research_recording(tmp_path, capsys):
    from energy_flow.trace.__main__ import main as trace_main
    path = research_like_recording(tmp_path / "research.h5")
    assert trace_main(["health", str(path)]) == 1
    out = capsys.readouterr().out
    assert "UNHEALTHY" in out and "Landing" in out and "Motion" in out
    assert trace_main(["health", str(path), "--batch", "5"]) == 2            # out of range
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a recording")
    assert trace_main(["health", str(junk)]) == 2


def test_headless_health_gate_prints_verdicts_and_stops_on_a_failure(tmp_path):
    """A run whose gradients are clipped a million-fold stops at its first batch with exit 4,
    the failure named, and the summary says why."""
    import json

    from tests.test_headless import embeddings_file, run_main
    data = embeddings_file(tmp_path)
    config = tmp_path / "clip.toml"
    create_tiny_config(grad_clip=1e-7).save(config)
    summary = tmp_path / "s.json"
    proc = run_main("--headless", "--config", str(config), "--batches", "5", "--data", str(data),
                    "--health-every", "1", "--stop-on-failure", "--summary", str(summary), "--no-progress")
    assert proc.returncode == 4, proc.stderr
    assert "health at batch 1" in proc.stdout and "Clipping" in proc.stdout
    assert "stopped by the health gate at batch 1" in proc.stderr
    s = json.loads(summary.read_text())
    assert s["steps"] == 1 and s["health"]["clipping"]["level"] == "failure"


# ---------------------------------------------------------------------------------- signals of the new telemetry
def test_a_pinned_retention_head_fails_saturation():
    report, health = run_batches(small_config(), breaker=pin_retention_at_one)
    sat = report.telemetry.aggregates.saturation
    assert np.nanmin(sat[1:, 0]) == 1.0                      # every retention output pinned
    assert health["saturation"].level is Level.FAILURE, health["saturation"].detail
    assert "retention 100%" in health["saturation"].detail


def test_the_healthy_default_judges_updates_saturation_and_gradients(healthy):
    _, health = healthy
    for key in ("updates", "saturation", "gradients"):
        assert health[key].level is Level.OK, (key, health[key].detail)


def test_a_violent_learning_rate_fails_update_size():
    report, health = run_batches(small_config(learning_rate=5.0))
    assert max(report.update_ratios.values()) >= 1.0
    assert health["updates"].level is Level.FAILURE, health["updates"].detail


def test_a_frozen_learning_rate_fails_update_size():
    report, health = run_batches(small_config(learning_rate=1e-12, weight_decay=0.0))
    assert min(report.update_ratios.values()) <= 1e-9
    assert health["updates"].level is Level.FAILURE, health["updates"].detail


def test_a_vanishing_loss_scale_fails_gradients():
    """Loss weights of 1e-10: every gradient is ~1e-10 of a normal one, but none is missing."""
    report, health = run_batches(small_config(mse_weight=1e-10, cosine_weight=1e-10))
    assert not report.params_without_grad
    assert health["gradients"].level is Level.FAILURE, health["gradients"].detail
    assert "‖g‖/‖θ‖" in health["gradients"].detail


def test_outputs_that_ignore_the_input_fail_collapse():
    """An output mapper with zero weights returns its bias for every input: spread 0."""
    def constant_output(trainer):
        with torch.no_grad():
            trainer.processor.output_mapper.proj.weight.zero_()
            trainer.processor.output_mapper.proj.bias.normal_()

    report, health = run_batches(small_config(), breaker=constant_output)
    assert report.output_spread == pytest.approx(0.0, abs=1e-6) and report.target_spread > 0.5
    assert health["collapse"].level is Level.FAILURE, health["collapse"].detail


def test_outputs_that_spread_like_their_targets_pass_collapse(healthy):
    report, _ = healthy
    signals = dict(signals_from_report(report), output_spread=0.9, target_spread=1.0)
    assert assess_batch(report.telemetry, signals)["collapse"].level is Level.OK
