"""The README's "Record your own model" example, as the tests take it: the first ``python`` block
of that section, verbatim, so that a test runs exactly what a reader copies."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Record your own model"
#: What the example writes, in the directory it runs in.
RECORDING = "my_model.h5"


def record_your_own_model() -> str:
    """The example's code; fails loudly if the section or its block is gone."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else len(text)]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    if block is None:
        raise AssertionError(f"README.md: no ```python block under {SECTION!r}")
    return block.group(1)
