"""The figure registry (issue 27): every figure declared once, merged by its declared rule, and
named nowhere else by a string literal."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow.config import create_tiny_config
from energy_flow.trace.batch_trace import merge_traces
from energy_flow.trace.figures import (BATCH, STEP, Dims, Merge, Pad, RowLayout, merge_tables, step_figures,
                                       step_weights)
from energy_flow.trace.telemetry import StepAggregates
from energy_flow.training import build_model
from energy_flow.training.trainer import EnergyTrainer
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "energy_flow" / "trace" / "figures"
#: Calls whose string argument always names a series (a recording column or a history key).
SERIES_CALLS = {"batch_column", "step_totals", "step_starts", "signal", "series", "window"}
#: Names of the mappings that hold series by figure key: a subscript or ``.get`` on one of these
#: with a string is a figure lookup. (Other dicts — widgets by fact, thresholds by check, a
#: recorder's own row buffers — may use the same words for their own things.)
SERIES_HOLDERS = {"history", "hist", "_history", "columns", "_columns", "signals", "fields", "report_fields",
                  "report", "trained"}


def _holder(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


# ------------------------------------------------------------------------------ one declaration
def _series_literals(path: Path) -> list[tuple[int, str]]:
    """String literals used to look a series up: ``x["key"]``, ``x.get("key")``,
    ``rec.batch_column("key")`` and the like."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            if isinstance(node.slice.value, str) and _holder(node.value) in SERIES_HOLDERS:
                found.append((node.lineno, node.slice.value))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (node.func.attr in SERIES_CALLS
                   or (node.func.attr == "get" and _holder(node.func.value) in SERIES_HOLDERS))):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_figure_key_is_spelled_outside_the_registry():
    """A figure is looked up through its declaration (``BATCH.loss.key``), never by a string: a
    typo then fails at import, not as a silently empty curve."""
    keys = set(STEP.keys()) | set(BATCH.keys())
    offences = []
    for folder in ("app", "energy_flow"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if REGISTRY in path.parents:
                continue
            offences += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _series_literals(path)
                         if text in keys]
    assert not offences, "figure keys spelled outside energy_flow/trace/figures:\n" + "\n".join(offences)


def test_the_scan_finds_a_spelled_key(tmp_path):
    """The check above can fail: a lookup by string is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(history, rec):\n    return history['loss'], history.get('placed'), rec.batch_column('step')\n")
    assert [t for _, t in _series_literals(bad)] == ["loss", "placed", "step"]


def test_step_aggregates_hold_exactly_the_declared_step_figures():
    declared = {f.key for f in STEP if f is not STEP.plane_energy_steps}
    held = {f.name for f in fields(StepAggregates)} - {"energy_bin_edges"}
    assert held == declared


def test_every_declaration_says_what_it_means_and_its_unit():
    for f in (*STEP, *BATCH):
        assert f.meaning and f.unit, f.key
        Dims(planes=2, bins=4, height=3, width=5).shape(f.trailing)   # a known shape code
    for f in BATCH:
        assert (f.measure is None) == (f is BATCH.batches_per_second), f.key   # only the worker measures it
        assert not (f.from_step_total and f.recorded), f.key


# ------------------------------------------------------------------------------ layout
def test_row_layout_round_trips_and_names_a_wrong_width():
    dims = Dims(planes=2, bins=4, height=3, width=5)
    layout = RowLayout(step_figures(detailed=True), dims)
    rng = np.random.default_rng(0)
    values = {f.key: rng.integers(0, 9, size=dims.shape(f.trailing)).astype(np.float64) for f in layout.figures}
    row = np.concatenate(layout.parts(values))
    assert row.shape == (layout.width,)
    back = layout.unpack(np.stack([row, row]))
    for f in layout.figures:
        assert back[f.key].shape == (2, *dims.shape(f.trailing))
        np.testing.assert_array_equal(back[f.key][1], values[f.key])
    values[STEP.coverage.key] = np.zeros(3)
    with pytest.raises(ValueError, match="coverage"):
        layout.parts(values)
    del values[STEP.coverage.key]
    with pytest.raises(KeyError, match="coverage"):
        layout.parts(values)


# ------------------------------------------------------------------------------ merging
def _part(active, granted, coverage, clamp):
    rows = len(active)
    return {STEP.active.key: np.asarray(active), STEP.spawn_granted.key: np.asarray(granted),
            STEP.coverage.key: np.asarray(coverage, np.float32).reshape(rows, 1),
            STEP.clamp_fraction.key: np.asarray(clamp, np.float32)}


def test_merge_follows_each_figures_rule_and_pads_a_shorter_part():
    # part a: 3 samples, 2 steps; part b: 1 sample, 3 steps
    a = _part([6, 4, 0], [0, 1, 0], [0.0, 0.5, 0.5], [np.nan, 0.5, 0.0])
    b = _part([2, 2, 1, 0], [0, 0, 1, 0], [0.0, 0.0, 1.0, 1.0], [np.nan, 1.0, 0.0, 1.0])
    figures = (STEP.active, STEP.spawn_granted, STEP.coverage, STEP.clamp_fraction)
    out = merge_tables([a, b], [3, 1], figures)
    np.testing.assert_array_equal(out[STEP.active.key], [8, 6, 1, 0])            # SUM, padded with 0
    np.testing.assert_array_equal(out[STEP.spawn_granted.key], [0, 1, 1, 0])
    # SAMPLE_MEAN, the shorter part held at its last value: (3·0.5 + 1·1.0) / 4 at step 2
    np.testing.assert_allclose(out[STEP.coverage.key][:, 0], [0.0, 0.375, 0.625, 0.625])
    # FLOW_MEAN weighted by flows stepped (active one step earlier): step 1: (6·0.5 + 2·1.0)/8
    np.testing.assert_allclose(out[STEP.clamp_fraction.key], [np.nan, 0.625, 0.0, 1.0])
    np.testing.assert_array_equal(step_weights(np.array([6, 4, 0])), [6, 6, 4])
    assert STEP.coverage.pad is Pad.HOLD and STEP.coverage.merge is Merge.SAMPLE_MEAN


def test_percentiles_are_never_averaged_across_parts():
    a = {STEP.active.key: np.array([2, 0]), STEP.energy_percentiles.key: np.zeros((2, 5), np.float32)}
    with pytest.raises(ValueError, match="pooled"):
        merge_tables([a, a], [1, 1], (STEP.active, STEP.energy_percentiles))
    assert STEP.energy_percentiles.merge is Merge.POOLED and STEP.delta_percentiles.merge is Merge.POOLED


def test_a_figure_missing_from_one_part_is_an_error_not_that_parts_value():
    a = _part([2, 0], [0, 0], [0, 0], [np.nan, 0])
    b = {k: v for k, v in _part([2, 0], [0, 0], [0, 0], [np.nan, 0]).items() if k != STEP.spawn_granted.key}
    with pytest.raises(ValueError, match="spawn_granted"):
        merge_tables([a, b], [1, 1], (STEP.active, STEP.spawn_granted))


# ------------------------------------------------------------------------------ the trainer
def _train_once(accumulation: int):
    config = create_tiny_config(device="cpu", grad_accumulation_steps=accumulation)
    trainer = EnergyTrainer(build_model(config), config)
    x, y = unit_rows(4, seed=3), unit_rows(4, seed=4)
    return trainer.train_step((x, y))


def _consistent(report) -> None:
    """FlowStats, the step aggregates and the telemetry describe the same flows."""
    fs, tel = report.flow_stats, report.telemetry
    agg = tel.aggregates
    assert fs.initial_flows == agg.active[0]
    assert fs.spawned == agg.spawn_granted.sum() and fs.requested == agg.spawn_requested.sum()
    assert fs.denied == agg.spawn_denied.sum() == fs.requested - fs.spawned
    assert fs.spawned <= fs.requested
    assert tuple(agg.landed.sum(axis=0)) == fs.landed and fs.faded == agg.faded.sum()
    assert tel.total_flows == fs.initial_flows + fs.spawned == tel.flows.total_flows
    assert fs.terminated == tel.total_flows


def test_a_train_step_leaves_the_model_whole_for_the_next_forward():
    config = create_tiny_config(device="cpu", grad_accumulation_steps=2)
    trainer = EnergyTrainer(build_model(config), config)
    trainer.train_step((unit_rows(4, seed=1), unit_rows(4, seed=2)))
    assert trainer.processor.batch_parts == 1
    with torch.no_grad():
        assert trainer.processor(unit_rows(2, seed=3)).trace.values is None   # no pooled values kept


def test_one_and_two_micro_batches_report_the_same_batch():
    """Issue 27: with grad_accumulation_steps=2 the Spawn panel plotted more children granted than
    requested — the telemetry came from the first micro-batch, the counts from both. Now both are
    the whole batch's, and the same batch gives the same figures however it is split."""
    one, two = _train_once(1), _train_once(2)
    for r in (one, two):
        _consistent(r)
    a, b = one.flow_stats, two.flow_stats
    assert (a.initial_flows, a.requested, a.spawned, a.landed, a.faded, a.timed_out) == \
           (b.initial_flows, b.requested, b.spawned, b.landed, b.faded, b.timed_out)
    assert a.landed_fraction == b.landed_fraction
    ta, tb = one.telemetry.aggregates, two.telemetry.aggregates
    for f in STEP:
        if f is STEP.plane_energy_steps:
            continue
        # percentiles too: recomputed from both parts' pooled values, not averaged
        np.testing.assert_allclose(getattr(tb, f.key), getattr(ta, f.key), rtol=1e-4, atol=1e-5, err_msg=f.key)
    np.testing.assert_allclose(two.telemetry.plane_energy, one.telemetry.plane_energy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two.telemetry.plane_reached, one.telemetry.plane_reached, atol=1e-6)
    np.testing.assert_allclose(BATCH.deposit_share.measure(two), BATCH.deposit_share.measure(one), rtol=1e-4)
    assert abs(two.output_spread - one.output_spread) < 1e-4


def test_merged_traces_sum_the_parts_flows():
    config = create_tiny_config(device="cpu")
    model = build_model(config)
    model.batch_parts = 2
    with torch.no_grad():
        parts = [model(unit_rows(n, seed=n)).trace for n in (1, 3)]
    merged = merge_traces(parts)
    for t, energies in enumerate(merged.values.energies):     # pooled: both parts' flows stepped at t
        assert energies.shape[0] == sum(len(p.values.energies[t]) for p in parts if t < len(p.values.energies))
    model.batch_parts = 1
    with torch.no_grad():
        alone = [model(unit_rows(n, seed=n)).trace for n in (1, 3)]
    with pytest.raises(ValueError, match="pooled values"):
        merge_traces(alone)
    assert merged.samples == 4
    assert merged.total_flows == sum(p.total_flows for p in parts)
    assert merged.flow_stats().spawned == sum(p.flow_stats().spawned for p in parts)
    assert merged.flows.total_flows == merged.total_flows
