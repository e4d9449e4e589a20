"""Error texts are one short line: no repeated "[Errno N]", no HDF5 internals, no "at at
column", and random bytes named for what they are not (issue 9, item 12)."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest

from energy_flow.files.atomic import write_bytes_atomic
from energy_flow.files.errors import reason
from energy_flow.training.data import DataFileError, load_embedding_pairs, load_pairs


@pytest.mark.parametrize("suffix, expected", [(".npz", "not a valid .npz file"), (".npy", "not a valid .npy file")])
def test_random_bytes_are_not_called_pickled_data(tmp_path, suffix, expected):
    """Guards against numpy's "pickled (object) data" for a file that is simply not an npz/npy."""
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096).replace(b"\x80", b"\x00"))
    with pytest.raises(DataFileError) as err:
        load_embedding_pairs(path)
    assert expected in str(err.value) and "pickle" not in str(err.value) and str(path) in str(err.value)


def test_an_unterminated_string_says_at_once(tmp_path):
    """Guards against "Unterminated string starting at at column 15"."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"input": "a", "target": "b\n')
    with pytest.raises(DataFileError) as err:
        load_pairs(path)
    assert "at at" not in str(err.value) and "column" in str(err.value)
    path.write_text('{"input": "abc')  # no newline: json says "Unterminated string starting at"
    with pytest.raises(DataFileError) as err:
        load_pairs(path)
    assert "Unterminated string starting at column" in str(err.value), str(err.value)


def test_hdf5_internals_are_cut_to_the_os_reason(tmp_path):
    with pytest.raises(OSError) as err:
        h5py.File(tmp_path, "r")  # a directory
    assert "file descriptor" in str(err.value)  # what h5py says...
    text = reason(err.value)
    assert text.endswith("Is a directory") and "file descriptor" not in text and "synchronously" not in text


def test_a_failed_atomic_write_names_the_file_once_without_errno(tmp_path):
    target = tmp_path / "missing" / "s.json"
    with pytest.raises(OSError) as err:
        write_bytes_atomic(target, b"{}", "summary")
    assert str(err.value) == f"cannot write summary {target}: No such file or directory"
    assert err.value.errno == errno.ENOENT
