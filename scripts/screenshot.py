"""Render the whole app after a few real training batches to a PNG (docs/screenshot.png).

Usage (no display needed; the virtual screen must be at least as large as --size):
    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py --size 1600x1000
    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py --size 1280x800 --out small.png

Everything in the picture is real: the bundled corpus through the teacher (embeddings cached
on disk), the debug preset trained for ``--batches`` Step presses, the panels drawn from the
last snapshot. The image is ``QWidget.grab()`` of the window, which captures the OpenGL view
under Xvfb too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from energy_flow.files.atomic import write_bytes_atomic  # noqa: E402
from energy_flow.runtime.broken_pipe import run_cli  # noqa: E402
from energy_flow.runtime.cli_errors import OneLineParser, fails_by_name  # noqa: E402
from energy_flow.files.output_paths import check_output_path  # noqa: E402

#: Give up (and say so) if loading plus training takes longer than this.
TIMEOUT_S = 540


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1600x1000, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected a positive width and height, got {text!r}")
    return width, height


def _step(text: str) -> str:
    if text not in ("middle", "last") and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a step number, 'middle' or 'last', got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="screenshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", help="config preset (default: debug)")
    parser.add_argument("--batches", type=int, default=6, help="training batches before the picture")
    parser.add_argument("--step", default="middle", type=_step,
                        help="propagation step to show: a number, 'middle' (default: flows still in "
                             "flight) or 'last'")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--size", default=(1600, 1000), type=_size, help="window size WxH (default 1600x1000)")
    args = parser.parse_args(argv)
    width, height = args.size
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output_path(out, "--out")   # before the minutes of loading and training

    from app.main import configure_torch_threads

    configure_torch_threads()
    import vispy
    from PyQt6.QtCore import QBuffer, QByteArray, QIODevice, QTimer
    from PyQt6.QtWidgets import QApplication

    vispy.use("pyqt6")
    app = QApplication(sys.argv[:1])

    from app.sources.worker import TrainingWorker
    from app.window.main_window import MainWindow
    from energy_flow.config import create_preset

    window = MainWindow(TrainingWorker(create_preset(args.preset)))
    window.close_guard.discard_unsaved()     # closing after the picture discards the model
    window.resize(width, height)
    window.show()
    outcome: dict[str, object] = {"code": 1}
    received: list[object] = []

    def finish(code: int, message: str) -> None:
        outcome["code"] = code
        print(message, flush=True)
        window.close()
        app.quit()

    def on_state(state: str) -> None:
        if state == "idle" and not received:
            print(f"loaded; training {args.batches} batches…", flush=True)
            for _ in range(args.batches):
                window.step_requested.emit()

    def on_error(message: str) -> None:
        finish(1, f"screenshot: the worker reported an error: {message}")

    def on_snapshot(snapshot) -> None:
        received.append(snapshot)
        print(f"  {snapshot.batch_label}: loss {snapshot.report.loss:.4f}", flush=True)

    def on_shown(snapshot) -> None:
        if len(received) < args.batches or snapshot is not received[-1]:
            return
        steps = snapshot.telemetry.num_steps
        chosen = {"middle": steps // 2, "last": steps}.get(args.step)
        window.step_slider.setValue(int(args.step) if chosen is None else chosen)
        QTimer.singleShot(1500, grab)   # let the last repaint and the FPS readout settle

    def grab() -> None:
        image = window.grab()
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buffer, "PNG"):
            finish(1, f"screenshot: could not encode the image for {out}")
            return
        try:
            write_bytes_atomic(out, bytes(data), "screenshot")   # the old picture stays whole on failure
        except OSError as exc:
            finish(1, f"screenshot: {exc}")
            return
        finish(0, f"wrote {out} ({image.width()}×{image.height()})")

    window.worker.state_changed.connect(on_state)
    window.worker.error.connect(on_error)
    window.worker.snapshot_ready.connect(on_snapshot)
    window.snapshot_shown.connect(on_shown)
    QTimer.singleShot(TIMEOUT_S * 1000, lambda: finish(1, f"screenshot: gave up after {TIMEOUT_S} s"))
    window.start()
    app.exec()
    return int(outcome["code"])


if __name__ == "__main__":
    sys.exit(run_cli(lambda: fails_by_name("screenshot.py", main)))
