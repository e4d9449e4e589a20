"""WordNet 3.0 as text pairs: an example sentence → the definition it illustrates.

Debian's ``wordnet-base`` package (installed by ``scripts/install.sh``) ships Princeton's
WordNet 3.0 database files under ``/usr/share/wordnet``; reading them needs no download and no
extra Python package. Every synset line ends in a gloss, ``| definition; "example one";
"example two"``. A synset whose gloss has at least one quoted example gives one pair: its
**first example → its definition**, so every target is a different sense and retrieval among
targets is well posed. Pairs whose example or definition text already occurred (a few senses
share a definition) are dropped, keeping the first, so no target is ambiguous.

The files are read strictly: a line that is not a synset record raises
:class:`~energy_flow.training.pairs.DataFileError` naming the file and the line, since skipping
it would silently change what a run trains on. The licence text Debian ships is at
``/usr/share/doc/wordnet-base/copyright`` (WordNet 3.0 licence, Princeton University); see
``resources/datasets.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from energy_flow.training.pairs import DataFileError, TextPair

WORDNET_DIR = Path("/usr/share/wordnet")
#: Parts of speech in the order their files are read (this order fixes the pair indices).
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_LICENCE = "WordNet 3.0 licence (Princeton University; /usr/share/doc/wordnet-base/copyright)"
_SYNSET_TYPES = {"n", "v", "a", "s", "r"}
_OFFSET = re.compile(r"\d{8}")
_QUOTED = re.compile(r'"([^"]*)"')


def _gloss_pair(gloss: str) -> TextPair | None:
    """``definition; "example"; ...`` → (first example, definition); None without an example."""
    cut = gloss.find('"')
    if cut < 0:
        return None
    definition = gloss[:cut].strip().rstrip(";").strip()
    # Only complete "..." examples count: about 20 glosses of WordNet 3.0 have a quote that is
    # never closed (a known erratum), and half a sentence is not an example.
    examples = [e.strip() for e in _QUOTED.findall(gloss[cut:]) if e.strip()]
    if not examples or not definition:
        return None  # nothing to pair: no example, or a gloss made only of examples
    return TextPair(input=examples[0], target=definition)


def read_wordnet_file(path: Path) -> list[TextPair]:
    """(first example → definition) pairs of one ``data.*`` file, in file order."""
    pairs: list[TextPair] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.startswith(b"  "):
                continue  # the licence header: lines that start with two spaces
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataFileError(path, f"is not valid UTF-8 ({exc.reason})", lineno) from None
            if not line.strip():
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            if len(fields) < 4 or not _OFFSET.fullmatch(fields[0]) or fields[2] not in _SYNSET_TYPES:
                raise DataFileError(path, "not a WordNet synset record (expected 'OFFSET LEXFILE "
                                          "TYPE WORDCOUNT ... | gloss', OFFSET 8 digits, TYPE one of "
                                          "n v a s r)", lineno)
            if not sep or not gloss.strip():
                raise DataFileError(path, "synset record has no gloss (no ' | ' separator)", lineno)
            pair = _gloss_pair(gloss.strip())
            if pair is not None:
                pairs.append(pair)
    return pairs


def load_wordnet_pairs(limit: int | None = None, directory: Path = WORDNET_DIR
                       ) -> tuple[list[TextPair], int]:
    """All WordNet pairs (or ``limit`` of them, evenly spaced), and how many there were in all.

    The cap keeps pairs at evenly spaced positions of the full list (nouns, verbs, adjectives,
    adverbs in file order), so a small slice still spans every part of speech and every
    lexicographer file, and is the same on every machine.
    """
    files = [directory / name for name in WORDNET_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet database file(s) not found: {', '.join(missing)}. Install the Debian package "
            "'wordnet-base' (scripts/install.sh does: apt-get install wordnet-base)")
    pairs: list[TextPair] = []
    seen_inputs: set[str] = set()
    seen_targets: set[str] = set()
    for f in files:
        for pair in read_wordnet_file(f):
            if pair.input in seen_inputs or pair.target in seen_targets:
                continue
            seen_inputs.add(pair.input)
            seen_targets.add(pair.target)
            pairs.append(pair)
    total = len(pairs)
    if total == 0:
        raise DataFileError(directory, "the WordNet files hold no gloss with an example sentence")
    if limit is not None:
        if limit < 2:
            raise ValueError(f"wordnet: the size cap must be at least 2, got {limit}")
        if limit < total:
            keep = np.linspace(0, total - 1, limit).round().astype(np.int64)  # step > 1: distinct
            pairs = [pairs[int(i)] for i in keep]
    return pairs, total
