"""What every pair loader shares: a text pair, and the error a malformed data file raises.

Its own module because both the file loaders (:mod:`energy_flow.training.data`) and the named
datasets (:mod:`energy_flow.training.datasets`) use these two, and the loaders dispatch to the
named datasets: kept in either, the other would import it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataFileError(ValueError):
    """A data file is malformed; the message names the file (and the line, for text files)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class TextPair:
    """One training example as text: the teacher embeds ``input`` and ``target``."""

    input: str
    target: str
