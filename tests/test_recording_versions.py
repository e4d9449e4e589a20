"""docs/recording-format.md's version rule for what this reader does not know: a file of its own
schema version holding datasets or attributes added later (without a version change) opens and
reads as if they were not there. (Older and newer versions: tests/test_recording.py.)"""

from __future__ import annotations

import h5py
import numpy as np

from energy_flow.trace import open_recording
from energy_flow.trace.__main__ import main as trace_main
from tests.test_recorder import write_research_like


def test_datasets_and_attributes_unknown_to_this_reader_are_ignored(tmp_path, capsys):
    plain, extended = tmp_path / "plain.h5", tmp_path / "extended.h5"
    write_research_like(plain)
    extended.write_bytes(plain.read_bytes())
    with h5py.File(extended, "a") as f:
        f.attrs["a_later_attribute"] = "added by a later writer"
        f["steps"].create_dataset("a_later_statistic", data=np.arange(13, dtype=np.float32))
        f["batches"].create_dataset("a_later_column", data=np.ones(1, dtype=np.int64))
        f.create_group("a_later_group").create_dataset("x", data=np.zeros(3))
    with open_recording(plain) as a, open_recording(extended) as b:
        assert b.num_batches == a.num_batches == 1 and b.schema_version == a.schema_version
        ta, tb = a.batch(0), b.batch(0)
        for name in ("active", "landed", "timed_out", "coverage", "still_fraction"):
            np.testing.assert_array_equal(getattr(tb.aggregates, name), getattr(ta.aggregates, name))
        np.testing.assert_array_equal(tb.flows.positions, ta.flows.positions)
        assert b.provenance == a.provenance
    assert trace_main(["inspect", str(extended)]) == 0
    assert "1 complete" in capsys.readouterr().out
