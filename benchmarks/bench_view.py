"""Frame rate and CPU cost of the 3D lattice view for several display budgets, idle and while
training runs.

Run under a virtual display (software OpenGL, as on the build machines):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m benchmarks.bench_view

What it does, all with real data:

* one real forward pass of the debug preset (20×20×10) at a batch large enough that the traced
  flow sample holds more than 20k flows gives the telemetry drawn;
* the view is the one inside the app's real main window at 1600×1000 (not started: no worker,
  empty panels), so the canvas has the size the app gives it and every frame pays what the app
  pays to show it on screen (``--standalone`` measures the view alone, 900×580, as before);
* for each display budget, four cells: *turn, last step* — every trajectory segment and
  termination marker drawn (the heaviest step for lines) while the turntable camera turns one
  degree per frame; *turn, step k* — the step with the most live heads, camera turning; *play
  steps* — camera still, the step advancing by one every frame (Play steps and scrubbing, at
  full speed); *new batches* — camera still, a new snapshot every second (training shows about
  one batch a second here), the view redrawing only when it has to. The first three redraw
  continuously for a few seconds, counting frames from the canvas's draw events;
* each cell idle and while a Python thread runs ``EnergyTrainer.train_step`` on the debug preset
  in a loop with ``torch.set_num_threads(1)`` (the app leaves one core to the GUI the same way),
  recording the longest gap between ticks of a 10 ms QTimer (the worst GUI stall) and the
  *view's CPU time*: every thread of the process but the training thread (the GUI thread and
  llvmpipe's render threads), per frame or per batch shown. Unlike the frame rate it hardly
  moves when other jobs share the cores.

It prints a table; ``app.view.lattice_view.DEFAULT_DISPLAY_BUDGET`` is the largest budget whose
frame rate stays above 20 fps while training in every continuous cell, on these machines; the
last line also says whether 5,000 flows hold the aim of 30 fps.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PyQt6.QtCore import QElapsedTimer, QEventLoop, QTimer
from PyQt6.QtWidgets import QApplication

from app.snapshot import RunHistory, Snapshot
from app.sources.worker import TrainingWorker
from app.view.lattice_view import DEFAULT_DISPLAY_BUDGET, LatticeView
from app.window.main_window import MainWindow
from energy_flow.config import create_debug_config
from energy_flow.trace.telemetry import BatchTelemetry
from energy_flow.training import EnergyTrainer, build_model

#: The frame rate a budget must keep while training, in every continuous cell, to be the default.
DEFAULT_RULE_FPS = 20.0
#: The aim: this many flows drawn at this frame rate while training, in every continuous cell.
AIM = (5_000, 30.0)
#: The app's window size the view is measured in, and the old standalone widget size.
WINDOW_SIZE = (1600, 1000)
STANDALONE_SIZE = (900, 580)
#: A new batch every this many ms in the "new batches" cell (the debug preset trains ~1 batch/s).
BATCH_INTERVAL_MS = 1000
NEW_BATCHES = "new batches"


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
        self.native_id: int | None = None     # the thread's kernel id, left out of the view's CPU time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TrainingLoad":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.5)    # let the first step get going
        return self

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        while not self._stop.is_set():
            self.trainer.train_step(self.batch)
            self.steps += 1

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def view_cpu_seconds(training: TrainingLoad) -> float:
    """CPU time of every thread of this process except the training thread (Linux /proc): the
    GUI thread, llvmpipe's render threads and Qt's helpers. The process total where /proc is
    missing (then training counts too)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for task in tasks.iterdir():
        if training.native_id is not None and task.name == str(training.native_id):
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:       # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])     # utime, stime
    return total / ticks


@dataclass(frozen=True)
class Measured:
    fps: float          # frames drawn per second
    gap_ms: float       # longest gap between ticks of a 10 ms timer
    cpu_ms: float       # view CPU ms per frame, or per batch shown in the "new batches" cell
    per_event: float    # frames per change (1 per frame in continuous cells; per batch otherwise)


def measure(app: QApplication, view: LatticeView | None, change: Callable[[], None], interval_ms: int,
            seconds: float, training: TrainingLoad) -> Measured:
    """Run ``change`` every ``interval_ms`` for ``seconds`` and count what the view draws; 0 means
    once per frame: each frame's draw schedules the next change and asks for the next frame, so
    a frame is drawn as soon as the previous one is done and every frame shows one change (the
    camera turns one degree a frame whatever the frame rate). With ``view`` None nothing is
    redrawn: the gap is then the stall training alone causes."""
    frames = changes = 0
    last_tick = [time.perf_counter()]
    worst_gap = [0.0]
    every_frame = interval_ms == 0
    driver = QTimer()
    driver.setInterval(interval_ms)
    driver.setSingleShot(every_frame)

    def on_draw(_event) -> None:
        nonlocal frames
        frames += 1
        if every_frame:
            driver.start()            # fires once this frame is done

    def next_change() -> None:
        nonlocal changes
        if view is None:
            return
        change()
        changes += 1
        if every_frame:
            view.canvas.update()

    def on_tick() -> None:
        now = time.perf_counter()
        worst_gap[0] = max(worst_gap[0], now - last_tick[0])
        last_tick[0] = now

    ticker = QTimer()
    ticker.setInterval(10)
    ticker.timeout.connect(on_tick)
    driver.timeout.connect(next_change)
    if view is not None:
        view.canvas.events.draw.connect(on_draw)
    if every_frame:
        driver.start()
    app.processEvents()
    frames = changes = 0
    clock = QElapsedTimer()
    clock.start()
    cpu = view_cpu_seconds(training)
    last_tick[0] = time.perf_counter()
    ticker.start()
    if not every_frame:
        driver.start()
    loop = QEventLoop()                       # a real event loop, idle when there is nothing to do
    # Periodic changes: stop half an interval after the last one, so its frame is counted.
    QTimer.singleShot(int(seconds * 1000) + interval_ms // 2, loop.quit)
    loop.exec()
    elapsed = clock.elapsed() / 1000.0
    cpu = view_cpu_seconds(training) - cpu
    ticker.stop()
    driver.stop()
    if view is not None:
        view.canvas.events.draw.disconnect(on_draw)
    per = max(frames if every_frame else changes, 1)
    return Measured(frames / elapsed, worst_gap[0] * 1000.0, 1000.0 * cpu / per,
                    frames / max(changes, 1))


def cells(view: LatticeView, tel: BatchTelemetry, batches: list[Snapshot]
          ) -> list[tuple[str, int, Callable[[], None], int]]:
    """(label, step shown first, what changes, how often in ms: 0 = every frame) of each cell."""
    busiest = int(np.argmax(tel.aggregates.active[:-1]))
    turn_batches = iter(range(1 << 30))

    def turn() -> None:
        view.view.camera.azimuth = view.view.camera.azimuth + 1.0

    def play() -> None:
        view.set_step((view.step + 1) % (tel.num_steps + 1))

    def new_batch() -> None:          # what the main window does with a new snapshot
        view.set_snapshot(batches[next(turn_batches) % len(batches)])
        view.set_step(tel.num_steps)

    return [("turn, last step", tel.num_steps, turn, 0), (f"turn, step {busiest}", busiest, turn, 0),
            ("play steps", 0, play, 0), (NEW_BATCHES, tel.num_steps, new_batch, BATCH_INTERVAL_MS)]


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
    parser.add_argument("--batch-seconds", type=float, default=5.0,
                        help="measuring time of the new-batches cell (one batch a second)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per cell; the median is reported (other processes share the cores)")
    parser.add_argument("--standalone", action="store_true",
                        help="the view alone in a 900×580 window instead of inside the app's 1600×1000 window")
    args = parser.parse_args()

    torch.set_num_threads(1)
    app = QApplication.instance() or QApplication([])
    t0 = time.perf_counter()
    tel = big_telemetry(max(20_000, *args.budgets))   # the same batch whatever budgets are measured
    print(f"telemetry: debug preset, {tel.flows.num_flows:,} traced flows of {tel.total_flows:,}, "
          f"{tel.num_steps} steps (one forward pass, {time.perf_counter() - t0:.1f} s)")
    batches = [Snapshot(telemetry=tel, history=RunHistory().arrays(), batch_label=f"benchmark batch {i}")
               for i in range(2)]

    window: MainWindow | None = None
    if args.standalone:
        view = LatticeView()
        view.resize(*STANDALONE_SIZE)
        view.show()
    else:
        window = MainWindow(TrainingWorker(create_debug_config()))   # never started: no worker runs
        window.resize(*WINDOW_SIZE)
        window.show()
        view = window.lattice_view
    for _ in range(20):
        app.processEvents()
    view.set_snapshot(batches[0])
    where = "alone" if args.standalone else f"in the app's {WINDOW_SIZE[0]}×{WINDOW_SIZE[1]} window"
    print(f"canvas {view.canvas.size[0]}×{view.canvas.size[1]} {where}, GL: software (Mesa llvmpipe) under "
          f"Xvfb; torch threads {torch.get_num_threads()}; current default budget {DEFAULT_DISPLAY_BUDGET:,}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    rows = []
    train = TrainingLoad()
    with train:
        quiet_gap = float(np.median([measure(app, None, lambda: None, 0, args.seconds, train).gap_ms
                                     for _ in range(args.repeat)]))
    print(f"longest GUI stall while training with no redraw (median of {args.repeat}): {quiet_gap:.0f} ms")
    train_time = 0.0
    for budget in args.budgets:
        t_build = time.perf_counter()
        view.set_display_budget(budget)
        build_ms = 1000 * (time.perf_counter() - t_build)
        for label, step, change, interval in cells(view, tel, batches):
            segments, heads = drawn_counts(view, step, tel.num_steps if label == "play steps" else None)
            seconds = args.batch_seconds if interval else args.seconds
            idle = [measure(app, view, change, interval, seconds, train) for _ in range(args.repeat)]
            t_train = time.perf_counter()
            with train:
                busy = [measure(app, view, change, interval, seconds, train) for _ in range(args.repeat)]
            train_time += time.perf_counter() - t_train
            i, b = (Measured(*np.median([list(vars(m).values()) for m in ms], axis=0)) for ms in (idle, busy))
            rows.append((budget, view.shown_flows, label, segments, heads, i, b))
            unit = "batch" if interval else "frame"
            print(f"  measured budget {budget:>6,} {label:>15}: idle {i.fps:5.1f} fps ({i.cpu_ms:5.1f} CPU ms/{unit}), "
                  f"training {b.fps:5.1f} fps ({b.cpu_ms:5.1f} CPU ms/{unit}), max stall {b.gap_ms:5.0f} ms, "
                  f"{b.per_event:.2f} frames per change (batch upload {build_ms:.0f} ms; "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"training thread: {train.steps} debug-preset steps in {train_time:.0f} s "
          f"({train.steps / train_time:.2f} steps/s while the view redrew)")

    print(f"\nmedian of {args.repeat} runs of {args.seconds:g} s per cell ({args.batch_seconds:g} s for "
          f"{NEW_BATCHES}); view CPU ms per frame ({NEW_BATCHES}: per batch shown, rebuild and frame)")
    print("| budget | drawn flows | cell | line segments | heads | idle fps | idle view CPU ms | idle max gap (ms) "
          "| training fps | training view CPU ms | training max gap (ms) | frames per change |")
    print("|" + "|".join("---" for _ in range(12)) + "|")
    for budget, shown, label, segments, heads, i, b in rows:
        print(f"| {budget:,} | {shown:,} | {label} | {segments} | {heads} | {i.fps:.1f} | {i.cpu_ms:.1f} | "
              f"{i.gap_ms:.0f} | {b.fps:.1f} | {b.cpu_ms:.1f} | {b.gap_ms:.0f} | {b.per_event:.2f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other processes share these cores)")
    continuous = [r for r in rows if r[2] != NEW_BATCHES]
    ok = [b for b in args.budgets if all(r[6].fps > DEFAULT_RULE_FPS for r in continuous if r[0] == b)]
    print()
    print(f"largest budget above {DEFAULT_RULE_FPS:g} fps while training (every continuous cell): {max(ok):,}" if ok
          else f"no budget stays above {DEFAULT_RULE_FPS:g} fps while training in every continuous cell")
    aim = [r[6].fps for r in continuous if r[0] == AIM[0]]
    if aim:
        print(f"aim {AIM[1]:g} fps at {AIM[0]:,} flows while training: {'met' if min(aim) >= AIM[1] else 'not met'} "
              f"(slowest cell {min(aim):.1f} fps)")
    if window is not None:
        window.close()
    else:
        view.close()


if __name__ == "__main__":
    main()
