"""energy_flow/ never imports a GUI toolkit: it must run headless, in tests and on GPU boxes."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import energy_flow

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
