"""Fixtures for the GUI tests (run under Xvfb by pytest-xvfb; never the offscreen platform).

* Every test fails if it leaves a QThread running (as napari's test suite does): a training
  thread that outlives its window would keep burning CPU and crash at interpreter exit.
* The teacher (sentence-transformers, ~4 s to import) runs once per session, on a few pairs
  of the bundled corpus; the worker gets that small real dataset through its
  ``dataset_factory``, so each window loads in well under a second.
"""

from __future__ import annotations

import gc
import inspect
from typing import Callable, Iterator
from weakref import WeakKeyDictionary

import pytest
import torch
from PyQt6.QtCore import QCoreApplication, QEvent, QThread

from app.main import configure_torch_threads
from app.sources.worker import TrainingWorker
from app.window.main_window import MainWindow
from energy_flow.config import EnergyConfig, create_tiny_config
from energy_flow.training.data import BUNDLED_CORPUS, BUNDLED_CORPUS_SOURCE, PairDataset, load_pairs
from energy_flow.training.report import DataProvenance
from energy_flow.training.teacher import TeacherEncoder

#: Corpus pairs in the session's small dataset (three tiny batches of 4).
TINY_PAIRS = 12
#: How long a test waits for the worker to load the injected dataset and build the model.
LOAD_TIMEOUT_MS = 20_000


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """The app's thread budget (one core left to the GUI), as run_gui sets it."""
    configure_torch_threads()


@pytest.fixture(autouse=True)
def no_running_qthreads(monkeypatch: pytest.MonkeyPatch, qtbot) -> Iterator[None]:
    """Fail the test if a QThread it started is still running at teardown (then stop it)."""
    started: WeakKeyDictionary[QThread, str] = WeakKeyDictionary()
    base_start = QThread.start

    def start(self: QThread, *args) -> None:
        caller = inspect.stack()[1]
        started[self] = f"{caller.filename}:{caller.lineno}"
        base_start(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    dangling = []
    for thread, where in list(started.items()):
        try:
            if thread.isRunning():
                dangling.append(where)
                thread.quit()
                thread.wait(5000)
        except RuntimeError:  # the C++ object is gone: it cannot be running
            pass
    if dangling:
        pytest.fail(f"QThread(s) left running, started at: {', '.join(dangling)}")


@pytest.fixture(autouse=True)
def deterministic_widget_teardown(qtbot, request: pytest.FixtureRequest) -> Iterator[None]:
    """Destroy each test's widgets at the end of that test, not whenever the GC gets to them.

    pytest-qt closes a test's widgets and calls deleteLater; pyqtgraph scenes whose items were
    left to Python's garbage collector were otherwise torn down part-way through a *later*
    test's event processing, where a half-deleted QGraphicsLayout crashed Qt (segfault in
    QGraphicsLayout::activate). Requested after qtbot, so this teardown runs before its close.
    """
    yield
    # ``qt_widgets`` is where qtbot.addWidget keeps (weakref, before_close) pairs on the item.
    for ref, _ in list(getattr(request.node, "qt_widgets", [])):
        widget = ref()
        if widget is not None:
            widget.close()
            widget.deleteLater()
    request.node.qt_widgets = []
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    gc.collect()
    QCoreApplication.processEvents()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> PairDataset:
    """The first pairs of the bundled corpus, embedded by the real teacher once per session."""
    pairs = load_pairs(BUNDLED_CORPUS)[:TINY_PAIRS]
    teacher = TeacherEncoder(cache_dir=tmp_path_factory.mktemp("embedding-cache"))
    texts_in = [p.input for p in pairs]
    texts_out = [p.target for p in pairs]
    emb = torch.from_numpy(teacher.encode(texts_in + texts_out))
    n = len(pairs)
    return PairDataset(emb[:n].clone(), emb[n:].clone(), texts_in, texts_out,
                       DataProvenance(f"{BUNDLED_CORPUS_SOURCE} [first {n} pairs]", n, teacher.name,
                                      int(emb.shape[1])))


@pytest.fixture
def nan_dataset(tiny_dataset: PairDataset) -> PairDataset:
    """Four real pairs, one with a NaN target: every tiny batch (size 4) contains it."""
    ds = tiny_dataset.subset(range(4), note="row 1's target set to NaN")
    targets = ds.targets.clone()
    targets[1] = float("nan")
    return PairDataset(ds.inputs, targets, ds.input_texts, ds.target_texts, ds.provenance)


@pytest.fixture
def small_config() -> Callable[..., EnergyConfig]:
    """create_tiny_config with overrides, on the CPU (the tests measure CPU behaviour)."""
    def make(**overrides) -> EnergyConfig:
        overrides.setdefault("device", "cpu")
        return create_tiny_config(**overrides)
    return make


@pytest.fixture
def make_window(qtbot, tiny_dataset, small_config) -> Iterator[Callable[..., MainWindow]]:
    """Open a MainWindow with a worker on ``dataset`` (default: the tiny dataset), loaded."""
    windows: list[MainWindow] = []

    def make(config: EnergyConfig | None = None, dataset: PairDataset | None = None) -> MainWindow:
        data = dataset if dataset is not None else tiny_dataset
        worker = TrainingWorker(config or small_config(), dataset_factory=lambda: data)
        window = MainWindow(worker)
        # Closing with trained, unsaved batches asks; at teardown the answer is "close" (a test
        # that checks a question sets its own answer).
        window.confirm = lambda title, text: True
        window.close_guard.choose = lambda title, text: "close"
        qtbot.addWidget(window)
        window.resize(1600, 1000)
        window.show()
        qtbot.waitExposed(window)
        window.start()
        qtbot.waitUntil(lambda: window.worker_state == "idle", timeout=LOAD_TIMEOUT_MS)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()

