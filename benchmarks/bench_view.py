"""Frame rate of the 3D lattice view for several display budgets, idle and while training runs.

Run under a virtual display (software OpenGL, as on the build machines):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m benchmarks.bench_view

What it does, all with real data:

* one real forward pass of the debug preset (20×20×10) at a batch large enough that the traced
  flow sample holds more than 20k flows gives the telemetry drawn;
* for each display budget the LatticeView (widget 900×580, a canvas of about 900×525: the
  central area the main window gives it in a 1600×1000 window) is measured in three cells:
  *turn, last step* — every trajectory segment and termination marker drawn (the heaviest step
  for lines) while the turntable camera turns one degree per frame; *turn, step k* — the step
  with the most live heads, camera turning; *play steps* — camera still, the step advancing by
  one every frame (what Play steps and scrubbing do, at full speed). Frames are redrawn
  continuously for a few seconds and counted from the canvas's draw events;
* each cell idle and while a Python thread runs ``EnergyTrainer.train_step`` on the debug
  preset in a loop with ``torch.set_num_threads(1)`` (the app leaves one core to the GUI the
  same way), also recording the longest gap between ticks of a 10 ms QTimer (the worst GUI
  stall). Idle, the process's CPU time per frame is printed too (GUI thread and llvmpipe's
  render threads together): unlike the frame rate it hardly moves when other jobs share the cores.

It prints a table; ``app.view.lattice_view.DEFAULT_DISPLAY_BUDGET`` is the largest budget whose
frame rate stays above 20 fps while training in every cell, on these machines; the last line
also says whether 5,000 flows hold the aim of 30 fps.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PyQt6.QtCore import QElapsedTimer, QEventLoop, QTimer
from PyQt6.QtWidgets import QApplication

from app.snapshot import RunHistory, Snapshot
from app.view.lattice_view import DEFAULT_DISPLAY_BUDGET, LatticeView
from energy_flow.config import create_debug_config
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training import EnergyTrainer, build_model

#: The frame rate a budget must keep while training, in every cell, to be the default.
DEFAULT_RULE_FPS = 20.0
#: The aim: this many flows drawn at this frame rate while training, in every cell.
AIM = (5_000, 30.0)


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1)


def big_telemetry(min_flows: int) -> BatchTelemetry:
    """Telemetry of one real forward pass whose traced sample has at least ``min_flows`` flows."""
    base = create_debug_config()
    batch = int(np.ceil(min_flows / base.cells_per_plane))
    c = create_debug_config(batch_size=batch, max_active_flows=4 * batch * base.cells_per_plane,
                            trace_max_flows=4 * batch * base.cells_per_plane)
    model = build_model(c)
    with torch.no_grad():
        result = model(unit_rows(batch, c.teacher_dim, seed=0))
    tel = result.telemetry
    assert tel is not None and tel.flows is not None and tel.flows.num_flows >= min_flows
    return tel


class TrainingLoad:
    """Background thread running real debug-preset training steps until stopped."""

    def __init__(self) -> None:
        c = create_debug_config()
        self.trainer = EnergyTrainer(build_model(c), c)
        self.batch = (unit_rows(c.batch_size, c.teacher_dim, 1), unit_rows(c.batch_size, c.teacher_dim, 2))
        self.trainer.train_step(self.batch)   # warm-up: the first step is slower than the rest
        self.steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TrainingLoad":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.5)    # let the first step get going
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.trainer.train_step(self.batch)
            self.steps += 1

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(app: QApplication, view: LatticeView | None, change: Callable[[], None],
            seconds: float) -> tuple[float, float, float]:
    """(frames per second, longest 10 ms-timer gap in ms, process CPU ms per frame) while
    ``change`` runs before every frame and the view redraws continuously.

    With ``view`` None nothing is redrawn: the gap is then the stall training alone causes.
    """
    frames = 0
    last_tick = [time.perf_counter()]
    worst_gap = [0.0]

    def on_draw(_event) -> None:
        nonlocal frames
        frames += 1

    def next_frame() -> None:
        if view is None:
            return
        # Change the scene and ask for a frame on every event-loop pass; Qt coalesces the
        # requests, so one frame is drawn as soon as the previous one is done.
        change()
        view.canvas.update()

    def on_tick() -> None:
        now = time.perf_counter()
        worst_gap[0] = max(worst_gap[0], now - last_tick[0])
        last_tick[0] = now

    ticker = QTimer()
    ticker.setInterval(10)
    ticker.timeout.connect(on_tick)
    driver = QTimer()
    driver.setInterval(0)
    driver.timeout.connect(next_frame)
    if view is not None:
        view.canvas.events.draw.connect(on_draw)
    driver.start()
    app.processEvents()
    frames = 0
    clock = QElapsedTimer()
    clock.start()
    cpu = time.process_time()
    last_tick[0] = time.perf_counter()
    ticker.start()
    loop = QEventLoop()                       # a real event loop, idle when there is nothing to do
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    elapsed = clock.elapsed() / 1000.0
    cpu = time.process_time() - cpu
    ticker.stop()
    driver.stop()
    if view is not None:
        view.canvas.events.draw.disconnect(on_draw)
    return frames / elapsed, worst_gap[0] * 1000.0, 1000.0 * cpu / max(frames, 1)


def cells(view: LatticeView, tel: BatchTelemetry) -> list[tuple[str, int, Callable[[], None]]]:
    """(label, step shown first, what changes before each frame) of the three measured cells."""
    busiest = int(np.argmax(tel.aggregates.active[:-1]))

    def turn() -> None:
        view.view.camera.azimuth = view.view.camera.azimuth + 1.0

    def play() -> None:
        view.set_step((view.step + 1) % (tel.num_steps + 1))

    return [("turn, last step", tel.num_steps, turn), (f"turn, step {busiest}", busiest, turn),
            ("play steps", 0, play)]


def drawn_counts(view: LatticeView, step: int, last_step: int | None) -> tuple[str, str]:
    """Show ``step``; the line segments and heads drawn there, or their range over every step up
    to ``last_step`` (the play cell shows them all in turn)."""
    every_step = last_step is not None
    steps = range(last_step + 1) if every_step else [step]
    counts = []
    for t in steps:
        view.set_step(t)
        counts.append((view.segment_count, view.head_count))
    view.set_step(step)
    (s_lo, h_lo), (s_hi, h_hi) = np.min(counts, axis=0), np.max(counts, axis=0)
    return (f"{s_lo:,}–{s_hi:,}", f"{h_lo:,}–{h_hi:,}") if every_step else (f"{s_hi:,}", f"{h_hi:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per cell; the median is reported (other processes share the cores)")
    parser.add_argument("--size", type=int, nargs=2, default=[900, 580], metavar=("W", "H"),
                        help="size of the LatticeView widget (its canvas is a little shorter)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    app = QApplication.instance() or QApplication([])
    t0 = time.perf_counter()
    tel = big_telemetry(max(20_000, *args.budgets))   # the same batch whatever budgets are measured
    print(f"telemetry: debug preset, {tel.flows.num_flows:,} traced flows of {tel.total_flows:,}, "
          f"{tel.num_steps} steps (one forward pass, {time.perf_counter() - t0:.1f} s)")
    snapshot = Snapshot(telemetry=tel, history=RunHistory().arrays(), batch_label="benchmark batch")

    view = LatticeView()
    view.resize(*args.size)
    view.show()
    for _ in range(20):
        app.processEvents()
    view.set_snapshot(snapshot)
    print(f"canvas {view.canvas.size[0]}×{view.canvas.size[1]}, GL: software (Mesa llvmpipe) under Xvfb; "
          f"torch threads {torch.get_num_threads()}; current default budget {DEFAULT_DISPLAY_BUDGET:,}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    rows = []
    train = TrainingLoad()
    with train:
        quiet_gap = float(np.median([measure(app, None, lambda: None, args.seconds)[1] for _ in range(args.repeat)]))
    print(f"longest GUI stall while training with no redraw (median of {args.repeat}): {quiet_gap:.0f} ms")
    train_time = 0.0
    for budget in args.budgets:
        t_build = time.perf_counter()
        view.set_display_budget(budget)
        build_ms = 1000 * (time.perf_counter() - t_build)
        for label, step, change in cells(view, tel):
            segments, heads = drawn_counts(view, step, tel.num_steps if label == "play steps" else None)
            idle = [measure(app, view, change, args.seconds) for _ in range(args.repeat)]
            t_train = time.perf_counter()
            with train:
                busy = [measure(app, view, change, args.seconds) for _ in range(args.repeat)]
            train_time += time.perf_counter() - t_train
            (idle_fps, idle_gap, idle_cpu), (busy_fps, busy_gap, _) = np.median(idle, axis=0), np.median(busy, axis=0)
            rows.append((budget, view.shown_flows, label, segments, heads, idle_fps, idle_cpu, idle_gap,
                         busy_fps, busy_gap))
            print(f"  measured budget {budget:>6,} {label:>15}: idle {idle_fps:5.1f} fps ({idle_cpu:4.1f} CPU ms/frame), "
                  f"training {busy_fps:5.1f} fps, max stall {busy_gap:5.0f} ms  (batch upload {build_ms:.0f} ms)",
                  flush=True)
    print(f"training thread: {train.steps} debug-preset steps in {train_time:.0f} s "
          f"({train.steps / train_time:.2f} steps/s while the view redrew)")

    print(f"\nmedian of {args.repeat} runs of {args.seconds:g} s per cell")
    header = ("| budget | drawn flows | cell | line segments | heads | idle fps | idle CPU ms/frame "
              "| idle max gap (ms) | training fps | training max gap (ms) |")
    print(header)
    print("|" + "|".join("---" for _ in range(10)) + "|")
    for budget, shown, label, segments, heads, fi, ci, gi, fb, gb in rows:
        print(f"| {budget:,} | {shown:,} | {label} | {segments} | {heads} | {fi:.1f} | {ci:.1f} | {gi:.0f} "
              f"| {fb:.1f} | {gb:.0f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other processes share these cores)")
    ok = [b for b in args.budgets if all(r[8] > DEFAULT_RULE_FPS for r in rows if r[0] == b)]
    print()
    print(f"largest budget above {DEFAULT_RULE_FPS:g} fps while training (every cell): {max(ok):,}" if ok
          else f"no budget stays above {DEFAULT_RULE_FPS:g} fps while training in every cell")
    aim = [r[8] for r in rows if r[0] == AIM[0]]
    if aim:
        print(f"aim {AIM[1]:g} fps at {AIM[0]:,} flows while training: {'met' if min(aim) >= AIM[1] else 'not met'} "
              f"(slowest cell {min(aim):.1f} fps)")
    view.close()


if __name__ == "__main__":
    main()
