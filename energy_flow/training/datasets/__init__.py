"""Named datasets: public text-pair datasets that install as packages, selected by name.

``--data wordnet`` (every pair) or ``--data wordnet:3000`` (a deterministic cap) instead of a
file path. A name resolves to text pairs plus a provenance label that says the source, the
files read, the licence and how many pairs were taken of how many; that label travels into
reports, summaries and recordings like a file path does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from energy_flow.training.pairs import TextPair

NAMED_DATASETS = ("wordnet",)
_NAME = re.compile(r"(?P<name>[a-z]+)(?::(?P<limit>[^:]*))?")


@dataclass(frozen=True)
class NamedSource:
    """A parsed ``NAME`` or ``NAME:LIMIT``."""

    name: str
    limit: int | None


def parse_named_source(source: str | Path | None) -> NamedSource | None:
    """The named dataset ``source`` asks for, or None when it is a path (or None).

    A string that looks like ``NAME[:LIMIT]`` with a known NAME is a named dataset even if a
    file of that name exists: names win, so ``--data wordnet`` means the same everywhere.
    """
    if source is None or isinstance(source, Path):
        return None
    m = _NAME.fullmatch(source.strip())
    if m is None or m["name"] not in NAMED_DATASETS:
        return None
    limit_text = m["limit"]
    if limit_text is None:
        return NamedSource(m["name"], None)
    if not limit_text.isdigit() or int(limit_text) < 2:
        raise ValueError(f"--data {source}: the size cap after ':' must be an integer ≥ 2, "
                         f"got {limit_text!r} (e.g. {m['name']}:3000)")
    return NamedSource(m["name"], int(limit_text))


def load_named_pairs(named: NamedSource) -> tuple[list[TextPair], str]:
    """(pairs, provenance label) of a named dataset."""
    if named.name == "wordnet":
        from energy_flow.training.datasets.wordnet import (WORDNET_DIR, WORDNET_FILES,
                                                           WORDNET_LICENCE, load_wordnet_pairs)

        pairs, total = load_wordnet_pairs(named.limit)
        files = ", ".join(str(WORDNET_DIR / f) for f in WORDNET_FILES)
        label = (f"wordnet: WordNet 3.0, Debian package wordnet-base ({files}); {WORDNET_LICENCE}; "
                 f"first example sentence → definition, {len(pairs)} of {total} pairs")
        return pairs, label
    raise ValueError(f"unknown dataset name {named.name!r}; known: {', '.join(NAMED_DATASETS)}")
