"""The WordNet dataset (Debian package wordnet-base): pairs, caps, strict parsing, provenance.

These tests read the real package files. They fail, not skip, where the package is missing:
scripts/install.sh installs it, so a missing package means a broken set-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_flow.training.data import DataFileError, build_dataset
from energy_flow.training.datasets import NamedSource, load_named_pairs, parse_named_source
from energy_flow.training.datasets.wordnet import (WORDNET_DIR, WORDNET_FILES, load_wordnet_pairs,
                                                   read_wordnet_file)

REPO = Path(__file__).resolve().parents[1]
# data.noun, synset 00045646 ("rally"), as WordNet 3.0 ships it: definition; "example"; "example"
RALLY_INPUT = "he singled to start a rally in the 9th inning"
RALLY_TARGET = "the feat of mustering strength for a renewed effort"


def test_the_package_is_installed_and_install_sh_installs_it() -> None:
    """Guards against tests silently losing their data set: install.sh must list the package,
    and it must be there."""
    assert "wordnet-base" in (REPO / "scripts" / "install.sh").read_text()
    missing = [f for f in WORDNET_FILES if not (WORDNET_DIR / f).is_file()]
    assert not missing, (f"WordNet files {missing} missing under {WORDNET_DIR}: run scripts/install.sh "
                         "(apt-get install wordnet-base)")


def test_pairs_are_first_example_to_definition() -> None:
    """Guards against mis-splitting glosses (definition/example swapped, quotes kept, attribution
    or the second example taken)."""
    pairs = read_wordnet_file(WORDNET_DIR / "data.noun")
    rally = [p for p in pairs if p.target == RALLY_TARGET]
    assert len(rally) == 1 and rally[0].input == RALLY_INPUT
    assert all(p.input and p.target and '"' not in p.input + p.target for p in pairs)


def test_the_full_set_has_thousands_of_distinct_pairs_and_a_cap_is_evenly_spaced() -> None:
    """Guards against a cap that takes only nouns (file order) or differs between runs."""
    full, total = load_wordnet_pairs()
    assert total == len(full) > 30_000
    assert len({p.input for p in full}) == len({p.target for p in full}) == total
    capped, total2 = load_wordnet_pairs(100)
    assert total2 == total and len(capped) == 100
    assert capped[0] == full[0] and capped[-1] == full[-1]
    assert capped[50] == full[round(50 * (total - 1) / 99)]
    assert load_wordnet_pairs(100)[0] == capped


def _write_wordnet(directory: Path, noun_lines: list[str]) -> None:
    header = "  1 This software and database is being provided to you, the LICENSEE  \n"
    ok = '00001740 03 v 01 run 0 000 | move fast; "she runs every day"  \n'
    for name in WORDNET_FILES:
        body = noun_lines if name == "data.noun" else [ok]
        (directory / name).write_text(header + "".join(body), encoding="utf-8")


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    _write_wordnet(tmp_path, ['00001740 03 n 01 dog 0 000 | a pet; "the dog barked"  \n',
                              "this is not a synset record\n"])
    with pytest.raises(DataFileError, match=r"data\.noun, line 3: not a WordNet synset record"):
        load_wordnet_pairs(directory=tmp_path)
    _write_wordnet(tmp_path, ["00001740 03 n 01 dog 0 000 a pet without a gloss separator\n"])
    with pytest.raises(DataFileError, match=r"data\.noun, line 2: synset record has no gloss"):
        load_wordnet_pairs(directory=tmp_path)


def test_glosses_without_a_complete_example_give_no_pair(tmp_path: Path) -> None:
    """WordNet 3.0 has ~20 glosses with a quote never closed; half a sentence is no example."""
    _write_wordnet(tmp_path, ['00001740 03 n 01 dog 0 000 | a pet; "the dog barked"; "woof"  \n',
                              "00001741 03 n 01 cat 0 000 | a pet that purrs  \n",
                              '00001742 03 n 01 owl 0 000 | a bird; "the owl hooted  \n'])
    pairs, total = load_wordnet_pairs(directory=tmp_path)
    assert [(p.input, p.target) for p in pairs] == [("the dog barked", "a pet"),
                                                    ("she runs every day", "move fast")]


def test_missing_package_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        load_wordnet_pairs(directory=tmp_path)


def test_names_parse_and_bad_caps_are_named() -> None:
    assert parse_named_source("wordnet") == NamedSource("wordnet", None)
    assert parse_named_source("wordnet:3000") == NamedSource("wordnet", 3000)
    assert parse_named_source("pairs.jsonl") is None and parse_named_source(None) is None
    assert parse_named_source(Path("wordnet")) is None
    for bad in ("wordnet:abc", "wordnet:1", "wordnet:"):
        with pytest.raises(ValueError, match="size cap"):
            parse_named_source(bad)


def test_provenance_names_source_files_licence_and_size() -> None:
    pairs, label = load_named_pairs(NamedSource("wordnet", 40))
    assert len(pairs) == 40
    for part in ("WordNet 3.0", "wordnet-base", str(WORDNET_DIR / "data.adv"), "licence", "40 of 3"):
        assert part in label, part


def test_build_dataset_runs_a_small_slice_through_the_teacher() -> None:
    from energy_flow.training.teacher import TeacherEncoder

    ds = build_dataset("wordnet:12", teacher=TeacherEncoder())
    assert len(ds) == 12 and ds.dim == 384 and ds.input_texts is not None
    assert ds.provenance.source.startswith("wordnet: WordNet 3.0") and ds.provenance.num_pairs == 12
    # the embeddings are the teacher's for these very texts (row order kept)
    again = TeacherEncoder().encode([ds.input_texts[5], ds.target_texts[7]])
    assert abs(float(ds.inputs[5].numpy() @ again[0]) - 1) < 1e-5
    assert abs(float(ds.targets[7].numpy() @ again[1]) - 1) < 1e-5
