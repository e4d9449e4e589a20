"""The README's two set-up commands exist, and CI runs the README's test command verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = "bash scripts/install.sh && .venv/bin/python main.py"
TEST = "bash scripts/install.sh && .venv/bin/python -m pytest"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert RUN in readme and TEST in readme
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST in ci
