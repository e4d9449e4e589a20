"""Flow inspector, click picking, hover, lineage highlighting and the selection ring, on real telemetry.

The snapshot is a real batch of a fresh tiny model (it spawns, so families have several
generations). Expected values are computed here from the FlowSample arrays directly — the
family by walking parent ids with a plain dict, not through energy_flow.trace.lineage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt6.QtGui import QMouseEvent
from PyQt6.QtWidgets import QApplication, QToolTip

from app.panels.inspector_panel import InspectorPanel, children_text
from app.snapshot import Snapshot
from app.sources.replay import ReplaySource
from app.view.highlight import DIM_ALPHA
from app.view.hover import HOVER_INTERVAL_MS
from app.view.lattice_view import LatticeView
from app.view.style import MARKER_SIZE
from energy_flow.trace import FlowRecorder
from tests.gui.builders import trained_snapshot


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return trained_snapshot(batches=2, seed=1)


def family(flows, flow_id: int) -> tuple[set[int], set[int]]:
    """(ancestor ids, descendant ids) by plain dict walks over the sample."""
    parent = dict(zip(flows.flow_id.tolist(), flows.parent_id.tolist()))
    children: dict[int, list[int]] = {}
    for fid, pid in parent.items():
        children.setdefault(pid, []).append(fid)
    ancestors, p = set(), parent[flow_id]
    while p >= 0 and p in parent:
        ancestors.add(p)
        p = parent[p]
    descendants, pending = set(), list(children.get(flow_id, []))
    while pending:
        f = pending.pop()
        descendants.add(f)
        pending += children.get(f, [])
    return ancestors, descendants


def middle_flow(flows) -> tuple[int, int]:
    """(id, row) of a traced flow with both a parent and children (a middle generation)."""
    has_parent = flows.parent_id >= 0
    is_parent = np.isin(flows.flow_id, flows.parent_id)
    rows = np.flatnonzero(has_parent & is_parent)
    assert rows.shape[0], "the tiny model spawned no grandchildren in this batch"
    return int(flows.flow_id[rows[0]]), int(rows[0])


def _wired(qtbot, snapshot, budget: int = 100_000) -> tuple[LatticeView, InspectorPanel]:
    view = LatticeView()
    panel = InspectorPanel()
    for w in (view, panel):
        qtbot.addWidget(w)
    view.resize(900, 640)
    view.show()
    qtbot.waitExposed(view)
    view.selection.picked.connect(panel.select_flow)
    panel.selection_changed.connect(view.selection.select)
    view.set_display_budget(budget)
    view.set_snapshot(snapshot)
    panel.set_snapshot(snapshot)
    return view, panel


def _screen(view: LatticeView, points: np.ndarray) -> np.ndarray:
    """Canvas pixels of lattice points through VisPy's own scene transform."""
    mapped = view.scene_transform().map(np.asarray(points, np.float32))
    return mapped[:, :2] / mapped[:, 3:4]


def test_click_on_a_projected_head_selects_that_flow_and_shows_its_values(qtbot, snapshot):
    """Guards against picking the wrong flow (row/id mix-ups, y flipped, another step's heads)
    and an inspector showing anything but the telemetry's values for it."""
    view, panel = _wired(qtbot, snapshot)
    flows = snapshot.telemetry.flows
    target, row = middle_flow(flows)
    t = int(flows.birth_step[row])               # alive after its birth step, before its end
    assert t < flows.end_step[row]
    view.set_step(t)
    panel.set_step(t)
    alive = (flows.birth_step <= t) & (t < flows.end_step) & np.isfinite(flows.positions[:, t, 0])
    heads = np.flatnonzero(alive)
    screen = _screen(view, flows.positions[heads, t])
    mine = screen[np.flatnonzero(heads == row)[0]]
    others = np.delete(screen, np.flatnonzero(heads == row)[0], axis=0)
    assert np.min(np.hypot(*(others - mine).T)) > 1.0, "another head projects onto the same pixel"
    qtbot.mouseClick(view.canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(int(round(mine[0])), int(round(mine[1]))))
    qtbot.waitUntil(lambda: panel.flow_id == target, timeout=3000)

    assert view.selection.flow_id == target
    assert panel.fields["flow"].text() == str(target)
    assert panel.fields["sample"].text() == str(int(flows.sample_index[row]))
    assert panel.fields["parent"].text() == str(int(flows.parent_id[row]))
    kids = flows.flow_id[flows.parent_id == target]
    assert panel.fields["children"].text() == children_text(kids)
    assert panel.fields["life"].text() == f"step {flows.birth_step[row]} → step {flows.end_step[row]}"
    assert panel.fields["reason"].text() == snapshot.telemetry.reason_names[int(flows.reason[row])].replace("_", " ")
    exists = np.isfinite(flows.energy[row])
    np.testing.assert_array_equal(panel.energy_curve.xData, np.flatnonzero(exists))
    np.testing.assert_allclose(panel.energy_curve.yData, flows.energy[row, exists], rtol=1e-6)
    np.testing.assert_allclose(panel.position_curves["z"].yData, flows.positions[row, exists, 2], rtol=1e-6)
    x, y, z = flows.positions[row, t]
    assert panel.fields["at_step"].text() == f"{t}: energy {flows.energy[row, t]:.4g} at ({x:+.3f}, {y:+.3f}, {z:+.3f})"


def test_click_on_empty_canvas_selects_nothing(qtbot, snapshot):
    view, panel = _wired(qtbot, snapshot)
    qtbot.mouseClick(view.canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(3, 3))
    qtbot.wait(50)
    assert panel.flow_id is None and view.selection.flow_id is None


def test_lineage_highlight_marks_exactly_ancestors_and_descendants(qtbot, snapshot):
    """Guards against highlighting siblings or cousins, missing a generation, or dimming the lineage."""
    view, panel = _wired(qtbot, snapshot)
    flows = snapshot.telemetry.flows
    target, _ = middle_flow(flows)
    ancestors, descendants = family(flows, target)
    assert ancestors and descendants
    panel.select_flow(target)
    expected = {target} | ancestors | descendants
    assert set(flows.flow_id[view.selection.lineage_rows].tolist()) == expected

    geo = view.geometry
    in_lineage = np.repeat(np.isin(flows.flow_id[geo.rows[geo.segment_flow]], list(expected)), 2)
    colors = view.trajectory_colors                      # per segment end point, as uploaded
    base = geo.segment_colors["energy"]
    np.testing.assert_allclose(colors[in_lineage, 3], base[in_lineage, 3])
    np.testing.assert_allclose(colors[~in_lineage, 3], base[~in_lineage, 3] * DIM_ALPHA, rtol=1e-6)
    assert [panel.lineage_list.item(i).text() for i in range(panel.lineage_list.count())].count(
        f"selected: flow {target:,}".replace(",", " ")) == 1
    assert panel.lineage_list.count() == len(expected)

    # The selection follows the step slider: the drawn heads of the lineage keep their colours
    # at each step, every other head is faded toward the background.
    for t in (0, int(flows.end_step.max()) // 2, snapshot.telemetry.num_steps):
        view.set_step(t)
        heads = geo.heads_at(t)
        kept = np.isin(flows.flow_id[geo.rows[geo.head_flow[heads]]], list(expected))
        drawn, own = view.head_colors, geo.head_colors["energy"][heads]
        np.testing.assert_allclose(drawn[kept], own[kept])
        assert np.all(np.abs(drawn[~kept] - own[~kept]).sum(axis=1) > 1e-3)

    panel.select_flow(None)
    assert view.selection.lineage_rows.shape[0] == 0
    np.testing.assert_allclose(view.trajectory_colors[:, 3], base[:, 3])
    assert view.marker_position is None


def _white_pixels(image: np.ndarray, at: np.ndarray, radius: int) -> int:
    """Pure-white pixels (the ring's colour; nothing else in the view is white) near ``at``."""
    x, y = int(round(at[0])), int(round(at[1]))
    box = image[max(y - radius, 0): y + radius + 1, max(x - radius, 0): x + radius + 1, :3]
    return int(np.all(box >= 250, axis=2).sum())


def test_the_selected_flow_has_a_ring_at_its_head_that_follows_the_step(qtbot, snapshot):
    """Guards against a marker at another flow, one left behind when the step moves, one drawn
    before the flow exists, and a marker that is computed but never reaches the screen."""
    view, panel = _wired(qtbot, snapshot)
    flows = snapshot.telemetry.flows
    target, row = middle_flow(flows)
    birth, end = int(flows.birth_step[row]), int(flows.end_step[row])
    panel.select_flow(target)
    size = tuple(int(v) for v in view.canvas.size)
    radius = int(MARKER_SIZE)
    for t in range(birth, snapshot.telemetry.num_steps + 1):
        view.set_step(t)
        at_step = min(t, end)                       # after its end the ring stays where it ended
        np.testing.assert_allclose(view.marker_position, flows.positions[row, at_step], rtol=1e-6)
        if t in (birth, end):
            image = view.render_image(size)
            assert _white_pixels(image, _screen(view, flows.positions[row, at_step][None])[0], radius) > 12
    if birth > 0:
        view.set_step(birth - 1)
        assert view.marker_position is None         # not born yet: no ring
    view.set_step(birth)
    ring_at = _screen(view, flows.positions[row, birth][None])[0]
    panel.select_flow(None)
    assert view.marker_position is None
    assert _white_pixels(view.render_image(size), ring_at, radius) < 3
    labels = [label for label, _, _ in view.legend_entries]
    assert not any("selected" in label for label in labels)
    panel.select_flow(target)
    assert any("selected" in label for label in [label for label, _, _ in view.legend_entries])


def _hover(qtbot, view: LatticeView, at: np.ndarray) -> None:
    """A synthetic mouse move, no button held, to canvas pixel ``at``; waits for the pick."""
    native = view.canvas.native
    local = QPointF(float(at[0]), float(at[1]))
    event = QMouseEvent(QEvent.Type.MouseMove, local, native.mapToGlobal(local), Qt.MouseButton.NoButton,
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(native, event)
    qtbot.wait(3 * HOVER_INTERVAL_MS)


def test_hovering_a_head_shows_that_flows_id_and_leaving_it_hides_the_tip(qtbot, snapshot):
    """Guards against naming a neighbour (row/id mix-ups, y flipped, heads of another step) and
    against a tooltip that stays up over empty canvas."""
    view, _ = _wired(qtbot, snapshot)
    flows = snapshot.telemetry.flows
    target, row = middle_flow(flows)
    t = int(flows.birth_step[row])
    view.set_step(t)
    _hover(qtbot, view, _screen(view, flows.positions[row, t][None])[0])
    parent = int(flows.parent_id[row])
    expected = (f"flow {target} · parent {parent} · sample {int(flows.sample_index[row])} · "
                f"energy {float(flows.energy[row, t]):.3g} at step {t}")
    assert view.hover.text == expected
    assert QToolTip.isVisible() and QToolTip.text() == expected
    _hover(qtbot, view, np.array([3.0, 3.0]))
    assert view.hover.text == ""
    qtbot.waitUntil(lambda: not QToolTip.isVisible(), timeout=2000)   # Qt fades a tip out in ~300 ms


def test_a_typed_id_outside_the_display_budget_is_drawn_with_its_lineage(qtbot, snapshot):
    """Guards against highlighting a flow the budget left out (nothing would show)."""
    view, panel = _wired(qtbot, snapshot, budget=100)
    flows = snapshot.telemetry.flows
    drawn = set(flows.flow_id[view.geometry.rows].tolist())
    outside = [int(f) for f in flows.flow_id if int(f) not in drawn and flows.parent_id[flows.flow_id == f][0] >= 0]
    assert outside
    panel.id_spin.setValue(outside[0])
    panel.select_button.click()
    ancestors, descendants = family(flows, outside[0])
    expected = {outside[0]} | ancestors | descendants
    assert expected <= set(flows.flow_id[view.geometry.rows].tolist())
    assert view.shown_flows <= 100 + len(expected)


def test_an_id_not_in_the_sample_is_reported_and_nothing_is_highlighted(qtbot, snapshot):
    view, panel = _wired(qtbot, snapshot)
    missing = int(snapshot.telemetry.flows.flow_id.max()) + 10
    panel.id_spin.setMaximum(missing)
    panel.id_spin.setValue(missing)
    panel.select_button.click()
    assert panel.record is None and "not in this batch's traced sample" in panel.message.text()
    assert view.selection.lineage_rows.shape[0] == 0
    assert not panel.csv_button.isEnabled()


def test_a_new_batch_leaves_the_typed_id_as_it_was(qtbot, snapshot):
    """Guards against the id box changing by itself (a stranger saw 5940 → 4276 → 4067 with
    nothing selected): a batch whose traced ids end lower must not clamp what was typed."""
    view, panel = _wired(qtbot, snapshot)
    typed = int(snapshot.telemetry.flows.flow_id.max()) + 1000
    panel.id_spin.setValue(typed)
    panel.set_snapshot(snapshot)
    assert panel.id_spin.value() == typed
    assert f"{int(snapshot.telemetry.flows.flow_id.max()):,}" in panel.id_spin.toolTip()


def test_export_csv_and_json_hold_the_lineage(qtbot, snapshot, tmp_path):
    view, panel = _wired(qtbot, snapshot)
    flows = snapshot.telemetry.flows
    target, _ = middle_flow(flows)
    panel.select_flow(target)
    ancestors, descendants = family(flows, target)
    lines = panel.export_csv(tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == "relation,flow_id,parent_id,sample,step,x,y,z,energy"
    ids = {int(line.split(",")[1]) for line in lines[1:]}
    assert ids == {target} | ancestors | descendants
    points = sum(int(np.isfinite(flows.energy[flows.flow_id == f][0]).sum()) for f in ids)
    assert len(lines) - 1 == points
    data = json.loads(panel.export_json(tmp_path / "f.json").read_text())
    assert data["selected"] == target and set(data["ancestors"]) == ancestors
    assert set(data["descendants"]) == descendants
    sel = next(f for f in data["flows"] if f["relation"] == "selected")
    row = int(np.flatnonzero(flows.flow_id == target)[0])
    np.testing.assert_allclose(sel["energy"], flows.energy[row][np.isfinite(flows.energy[row])], rtol=1e-6)


def test_inspector_works_on_a_flow_recorder_recording(qtbot, tmp_path):
    """A recording from another model (FlowRecorder) replays into the same inspector and highlight."""
    path = tmp_path / "toy.h5"
    with FlowRecorder(path, lattice_shape=(4, 4, 4), plane_z=(1.0,), start_mode="input_face",
                      model_name="toy") as rec:
        rec.begin_batch(step=1, loss=0.5)
        rec.record_step(np.array([[0, 0, -1], [0.5, 0.5, -1]], float), np.array([0.9, 0.8]),
                        np.array([-1, -1]), np.array([True, True]))
        rec.record_step(np.array([[0, 0, 0], [0.5, 0.5, 0], [0.1, 0, 0]]), np.array([0.6, 0.7, 0.2]),
                        np.array([-1, -1, 0]), np.array([True, True, True]))
        rec.record_step(np.array([[0, 0, 1], [0.5, 0.5, 1], [0.1, 0, 1]]), np.array([0.5, 0.6, 0.2]),
                        np.array([-1, -1, 0]), np.array([False, False, False]))
        rec.end_batch()
    source = ReplaySource()
    got = []
    source.snapshot_ready.connect(got.append)
    assert source.open(path)
    view, panel = _wired(qtbot, got[-1])
    panel.select_flow(2)
    assert panel.fields["parent"].text() == "0" and panel.fields["life"].text() == "step 1 → step 2"
    assert panel.fields["reason"].text() == "landed"
    assert set(got[-1].telemetry.flows.flow_id[view.selection.lineage_rows].tolist()) == {0, 2}
    source.close()


def test_enter_in_the_flow_id_box_selects_the_flow(qtbot, snapshot):
    """Guards against Enter in "Flow id" doing nothing (only the Select button selected)."""
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    panel.show()
    flow = int(snapshot.telemetry.flows.flow_id[3])
    chosen: list[object] = []
    panel.selection_changed.connect(chosen.append)
    panel.id_spin.lineEdit().setText(str(flow))
    qtbot.keyClick(panel.id_spin.lineEdit(), Qt.Key.Key_Return)
    assert panel.flow_id == flow and chosen[-1] == flow


def test_the_wheel_over_the_inspector_plots_scrolls_the_panel_and_never_zooms(qtbot, snapshot):
    """Issue 28: the wheel over the Inspector's plot zoomed it (to −100…5), and the zoom carried
    over to the next flow, instead of scrolling the panel."""
    from PyQt6.QtCore import QPoint, QPointF
    from PyQt6.QtGui import QWheelEvent
    from PyQt6.QtWidgets import QApplication

    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(snapshot)
    panel.resize(400, 600)
    panel.show()
    qtbot.waitExposed(panel)
    panel.select_flow(int(snapshot.telemetry.flows.flow_id[3]))
    before = [p.viewRange() for p in (panel.energy_plot, panel.position_plot)]
    viewport = panel.graphics.viewport()
    centre = QPointF(viewport.width() / 2, viewport.height() / 4)
    event = QWheelEvent(centre, QPointF(viewport.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, -480),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, event)
    assert not event.isAccepted()          # left to the panel's scroll area
    assert [p.viewRange() for p in (panel.energy_plot, panel.position_plot)] == before
    for plot in (panel.energy_plot, panel.position_plot):
        assert plot.getViewBox().state["mouseEnabled"] == [False, False]


def test_children_say_how_many_and_ids_read_as_typed():
    """Tried as a new user: "children: 6 495" read as six thousand children; it was one child,
    flow 6495. The count comes first, the ids as "Flow id" takes them (no separator)."""
    assert children_text(np.array([6495])) == "1: flow 6495"
    assert children_text([12001, 12002]) == "2: flows 12001, 12002"
    assert children_text(list(range(100, 110))) == "10: flows 100, 101, 102, 103, 104, 105, 106, 107, …"
    assert children_text([]) == "none"


def test_the_hover_line_writes_ids_as_flow_id_takes_them(snapshot):
    """Tried as a new user: the tooltip said "flow 1 431" while "Flow id" took 1431."""
    import dataclasses

    from app.view.hover import describe_flow
    flows = snapshot.telemetry.flows
    row = int(np.flatnonzero(flows.parent_id >= 0)[0])
    big = dataclasses.replace(flows, flow_id=flows.flow_id + 12000, parent_id=np.where(
        flows.parent_id >= 0, flows.parent_id + 12000, flows.parent_id))
    text = describe_flow(big, row, int(flows.end_step[row]), ("landed", "faded", "timed_out"))
    assert text.startswith(f"flow {int(big.flow_id[row])} · parent {int(big.parent_id[row])} · ")
    assert "_" not in text


def test_inspect_a_flow_brings_the_inspector_forward_with_the_keyboard_in_flow_id(qtbot, make_window):
    """Tried as a new user: the Inspect menu had no way to inspect a flow."""
    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    dock = window.docks["Inspector"]
    dock.hide()
    window.inspection.inspect_flow_action.trigger()
    qtbot.waitUntil(dock.isVisible, timeout=2000)
    assert window.inspection.inspect_flow_action.shortcut().toString() == "Ctrl+I"
    qtbot.waitUntil(lambda: window.inspection.inspector.id_spin.hasFocus(), timeout=2000)
