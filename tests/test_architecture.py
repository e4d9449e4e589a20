"""The project's shape: energy_flow/ never imports a GUI toolkit (it must run headless, in tests
and on GPU boxes), and no import circles, oversized modules or private names across modules."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import energy_flow
from tests.architecture import (MAX_LINES, attribute_reads, import_cycles, import_graph, layer_violations,
                                long_modules, private_imports, project_modules)

GUI = ("PyQt6", "PySide6", "vispy", "pyqtgraph")


def test_importing_every_energy_flow_module_loads_no_gui_toolkit():
    names = [m.name for m in pkgutil.walk_packages(energy_flow.__path__, "energy_flow.")
             if not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            f"print([m for m in sys.modules if m.split('.')[0] in {GUI!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(names) > 10


def test_no_gui_import_statement_in_the_library_source():
    root = Path(energy_flow.__file__).parent
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert not any(stripped.split()[1].startswith(g) for g in GUI), f"{path}: {line}"


# ---------------------------------------------------------------------------- structure
# The rules and why: tests/architecture.py. Tests themselves are left out: a test may import a
# private helper to test it, and a long test module is a list of cases, not a second concept.
ROOT = Path(__file__).resolve().parents[1]
PROJECT = project_modules(ROOT, ("app", "energy_flow", "benchmarks", "scripts"), ("main.py",))


def test_the_structure_checks_see_the_whole_project():
    assert {"app.main", "energy_flow.config", "benchmarks.bench_view", "main"} <= set(PROJECT)
    assert len(PROJECT) > 100
    graph = import_graph(PROJECT)
    assert "energy_flow.config" in graph["energy_flow.training.trainer"]


def test_no_import_circles_among_project_modules():
    assert import_cycles(PROJECT) == []


def test_no_module_over_the_line_limit():
    assert long_modules(PROJECT) == {}, f"split these into packages (limit {MAX_LINES} lines)"


def test_no_private_name_imported_from_another_module():
    assert private_imports(PROJECT) == []


# -- each rule fails on a constructed violation (a check that cannot fail guards nothing)
def _write(root: Path, files: dict[str, str]) -> dict:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_modules(root, ("pkg",))


def test_a_circle_through_a_deferred_and_a_type_checking_import_is_found(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.b import g\n    return g()\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from .. import b\nfrom ..sub import d\n",
        "pkg/sub/d.py": "import pkg.sub.c\n",
        "pkg/e.py": "import pkg.a\n",       # imports into a circle, is not part of one
    })
    assert import_cycles(modules) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]
    (tmp_path / "pkg/b.py").write_text("X = 1\n")
    (tmp_path / "pkg/sub/d.py").write_text("Y = 2\n")
    assert import_cycles(modules) == []


def test_a_module_one_line_over_the_limit_is_reported(tmp_path):
    modules = _write(tmp_path, {"pkg/__init__.py": "", "pkg/long.py": "x = 1\n" * (MAX_LINES + 1),
                                "pkg/fits.py": "x = 1\n" * MAX_LINES})
    assert long_modules(modules) == {"pkg.long": MAX_LINES + 1}


def test_private_names_taken_from_another_module_are_reported(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def _helper():\n    return 1\n\ndef public():\n    return _helper()\n",
        "pkg/b.py": "from pkg.a import _helper\n",
        "pkg/c.py": "from pkg import a\n\nVALUE = a._helper()\n",
        "pkg/d.py": "from pkg.a import public\nfrom pkg import a\n\nVALUE = a.public() + a.__name__.count('a')\n",
    })
    assert private_imports(modules) == ["pkg.b:1 takes _helper from pkg.a", "pkg.c:3 takes _helper from pkg.a"]


# ---------------------------------------------------------------------------- the app's layers
def test_the_app_imports_only_downward_through_its_layers():
    """Guards against a panel or view that reaches into the window (or into each other): the
    window depends on panels through their registry and protocol, never the other way round."""
    assert layer_violations(PROJECT) == []


def test_the_gui_thread_never_reads_the_workers_trainer_or_dataset():
    """The worker's trainer and dataset change under a running batch in the worker's thread; the
    window and main learn of them through signals only (app/window/live_run.py)."""
    for prefix in ("app.window", "app.main"):
        assert attribute_reads(PROJECT, prefix, "worker", ("trainer", "dataset", "text_bridge")) == []


def test_an_upward_import_and_a_read_of_the_workers_trainer_are_reported(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "", "pkg/low/__init__.py": "", "pkg/mid/__init__.py": "", "pkg/side/__init__.py": "",
        "pkg/top.py": "from pkg.low import a\n\ndef f(window):\n    return window.worker.trainer.step_count\n",
        "pkg/low/a.py": "X = 1\n",
        "pkg/mid/b.py": "from pkg.low.a import X\nfrom pkg import top\n",
        "pkg/side/c.py": "from pkg.mid import b\n",
    })
    layers = (("pkg.low",), ("pkg.mid", "pkg.side"), ("pkg.top",))
    assert layer_violations(modules, layers) == ["pkg.mid.b:2 imports pkg.top", "pkg.side.c:1 imports pkg.mid.b"]
    assert attribute_reads(modules, "pkg.top", "worker", ("trainer",)) == ["pkg.top:4 reads window.worker.trainer"]
    assert attribute_reads(modules, "pkg.low", "worker", ("trainer",)) == []


def _window_members_read(path: Path) -> set[str]:
    """Attributes a controller reads of its window: ``self.window.X``, and ``w.X`` / ``window.X``
    where those names hold the window."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            v = node.value
            if (isinstance(v, ast.Attribute) and v.attr == "window" and isinstance(v.value, ast.Name)
                    and v.value.id == "self"):
                names.add(node.attr)
            if isinstance(v, ast.Name) and v.id in ("w", "window"):
                names.add(node.attr)
    return names


def test_the_recording_controller_reads_only_its_declared_interface_of_the_window():
    """Issue 27: controllers get the interface they use, not the whole window. What the recording
    controller may read is declared in RecordingHost; reading anything else fails here."""
    from app.window.recording_controls import RecordingHost

    declared = {n for n in dir(RecordingHost) if not n.startswith("_")} | set(RecordingHost.__annotations__)
    used = _window_members_read(ROOT / "app" / "window" / "recording_controls.py")
    assert used, "the scan found no window member: it is broken"
    assert used <= declared, f"read but not declared in RecordingHost: {sorted(used - declared)}"
    import ast

    from app.window.main_window import MainWindow
    targets = [t for node in ast.walk(ast.parse((ROOT / "app" / "window" / "main_window.py").read_text()))
               if isinstance(node, ast.Assign) for t in node.targets]
    targets += [e for t in targets if isinstance(t, ast.Tuple) for e in t.elts]
    assigned = {t.attr for t in targets
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    missing = [n for n in declared if not hasattr(MainWindow, n) and n not in assigned]
    assert not missing, f"declared in RecordingHost but the window has no such member: {missing}"
