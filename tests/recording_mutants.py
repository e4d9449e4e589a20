"""Crafted recordings for the fuzz tests (issue 31, item 2): a real recording, and many ways of
damaging it — root attributes, dataset dtypes, shapes, chunking, declared sizes, offsets and
counts, and links — each a function applied to the open file with h5py. Made at test time;
nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from energy_flow.config import create_tiny_config
from energy_flow.trace import RecordingWriter
from energy_flow.trace.recording import report_fields_from
from energy_flow.training import EnergyTrainer, build_model
from tests.conftest import unit_rows

Mutation = Callable[[h5py.File], None]


def base_recording(path: Path, batches: int = 2) -> Path:
    """A real recording of the tiny preset (real telemetry, flows traced)."""
    c = create_tiny_config()
    trainer = EnergyTrainer(build_model(c), c)
    with RecordingWriter(path, c.to_dict(), {"source": "fuzz"}) as w:
        for s in range(batches):
            r = trainer.train_step((unit_rows(4, seed=s), unit_rows(4, seed=s + 20)))
            w.append_batch(r.telemetry, report_fields_from(r))
    return path


def _attr(name: str, value) -> Mutation:
    def mutate(f: h5py.File) -> None:
        if value is None:
            del f.attrs[name]
        else:
            f.attrs[name] = value
    return mutate


def _config(change: Callable[[dict], object]) -> Mutation:
    def mutate(f: h5py.File) -> None:
        config = json.loads(f.attrs["config"])
        change(config)
        f.attrs["config"] = json.dumps(config)
    return mutate


def _replace(name: str, make: Callable[[h5py.File, str, h5py.Dataset], None]) -> Mutation:
    def mutate(f: h5py.File) -> None:
        old = f[name]
        del f[name]
        make(f, name, old)
    return mutate


def _retyped(dtype) -> Callable:
    def make(f, name, old):
        data = np.full(old.shape, b"x", dtype=dtype) if np.dtype(dtype).kind == "S" else old[()].astype(dtype)
        f.create_dataset(name, data=data)
    return make


def _declared(rows: int, trailing=None, chunk_rows: int = 64, fill=0) -> Callable:
    """The same dataset declaring ``rows`` rows (and maybe another row shape), data unwritten."""
    def make(f, name, old):
        shape = (rows, *(old.shape[1:] if trailing is None else trailing))
        chunks = (min(chunk_rows, rows), *(min(d, 64) for d in shape[1:]))
        f.create_dataset(name, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks, dtype=old.dtype,
                         fillvalue=fill)
    return make


def _huge_chunk(f, name, old):
    shape = (old.shape[0], *old.shape[1:])
    f.create_dataset(name, shape=(1 << 26, *shape[1:]), maxshape=(None, *shape[1:]),
                     chunks=(1 << 26, *shape[1:]), dtype=old.dtype, compression="gzip")


def _scalar(f, name, old):
    f.create_dataset(name, data=np.int64(1))


def _group(f, name, old):
    f.create_group(name)


def _value(name: str, index, value) -> Mutation:
    def mutate(f: h5py.File) -> None:
        f[name][index] = value
    return mutate


def _soft_loop(f: h5py.File) -> None:
    del f["batches/loss"]
    f["batches/loss"] = h5py.SoftLink("/batches/loss")


def _soft_dangling(f: h5py.File) -> None:
    del f["flows/positions"]
    f["flows/positions"] = h5py.SoftLink("/nowhere")


def _soft_inside(f: h5py.File) -> None:   # harmless: must still read
    f.move("batches/loss", "batches/loss_data")
    f["batches/loss"] = h5py.SoftLink("/batches/loss_data")


def _hard_cycle(f: h5py.File) -> None:
    f["batches/again"] = f["batches"]


def _external(f: h5py.File) -> None:
    del f["batches/loss"]
    f["batches/loss"] = h5py.ExternalLink("/etc/hostname", "/x")


def _external_storage(f: h5py.File) -> None:
    del f["batches/nonfinite"]
    f.create_dataset("batches/nonfinite", shape=(2,), dtype="S256", external=[("/etc/hostname", 0, 512)])


MUTANTS: dict[str, Mutation] = {
    # root attributes
    "format missing": _attr("format", None),
    "format array": _attr("format", np.array([1, 2])),
    "format int": _attr("format", 7),
    "schema_version string": _attr("schema_version", "abc"),
    "schema_version numeric string": _attr("schema_version", "2"),
    "schema_version array": _attr("schema_version", np.array([1, 2])),
    "schema_version negative": _attr("schema_version", -1),
    "schema_version float": _attr("schema_version", 1.5),
    "schema_version huge": _attr("schema_version", np.int64(2**62)),
    "schema_version missing": _attr("schema_version", None),
    "config not json": _attr("config", "{not json"),
    "config array": _attr("config", np.array([1.0, 2.0])),
    "config list": _attr("config", "[1, 2]"),
    "config deeply nested": _attr("config", '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    "config missing": _attr("config", None),
    "config reason_names number": _config(lambda c: c.update(reason_names=5)),
    "config reason_names long": _config(lambda c: c.update(reason_names=["landed", "faded", "timed_out",
                                                                        "still"] + [f"r{i}" for i in range(300)])),
    "config lattice string": _config(lambda c: c.update(lattice_width="8")),
    "provenance array": _attr("provenance", np.array([3])),
    "provenance missing": _attr("provenance", None),
    "percentiles string": _attr("percentiles", "abc"),
    # datasets: dtype, shape, kind
    **{f"{name} as strings": _replace(name, _retyped("S4")) for name in (
        "batches/num_steps", "batches/num_flows", "batches/step_start", "batches/complete", "batches/loss")},
    **{f"{name} as floats": _replace(name, _retyped("f8")) for name in (
        "batches/num_steps", "batches/flow_start", "batches/complete")},
    **{f"{name} missing": _replace(name, lambda f, n, o: None) for name in (
        "batches/complete", "steps/active", "flows/positions", "batches/plane_energy")},
    **{f"{name} scalar": _replace(name, _scalar) for name in ("batches/complete", "steps/landed")},
    **{f"{name} group": _replace(name, _group) for name in ("batches/loss", "flows/energy")},
    "complete declares 10^10 rows": _replace("batches/complete", _declared(10**10, fill=1)),
    "complete declares 10^8 complete": _replace("batches/complete", _declared(10**8, chunk_rows=1 << 20, fill=1)),
    "loss declares 10^10 rows": _replace("batches/loss", _declared(10**10)),
    "steps/active declares 10^10 rows": _replace("steps/active", _declared(10**10)),
    "flows/positions declares 10^10 rows": _replace("flows/positions", _declared(10**10)),
    "energy_hist with 10^9 bins": _replace("steps/energy_hist", _declared(128, trailing=(10**9,))),
    "plane 60000 squared": _replace("batches/plane_energy", lambda f, n, o: _declared(
        2, trailing=(o.shape[1], 60000, 60000), chunk_rows=1)(f, n, o)),
    "plane_reached 60000 squared": _replace("batches/plane_reached", lambda f, n, o: _declared(
        2, trailing=(o.shape[1], 60000, 60000), chunk_rows=1)(f, n, o)),
    "steps/active huge chunk": _replace("steps/active", _huge_chunk),
    "lattice_shape wrong trailing": _replace("batches/lattice_shape", _declared(64, trailing=(5,))),
    # values: offsets and counts
    "num_steps huge, steps declared 10^10": lambda f: (_replace("steps/active", _declared(10**10))(f),
                                                       _value("batches/num_steps", 0, 10**9)(f)),
    "num_steps negative": _value("batches/num_steps", 0, -5),
    "num_steps huge": _value("batches/num_steps", 0, 2**31 - 1),
    "num_flows negative": _value("batches/num_flows", 0, -1),
    "num_flows huge": _value("batches/num_flows", 1, 10**12),
    "step_start negative": _value("batches/step_start", 1, -100),
    "step_start huge": _value("batches/step_start", 0, 10**15),
    "flow_start huge": _value("batches/flow_start", 1, 2**62),
    "point_start negative": _value("batches/point_start", 0, -7),
    "has_flows without flows": _value("batches/num_flows", 0, 0),
    "lattice_shape negative": _value("batches/lattice_shape", 0, [-1, 4, 4]),
    "lattice_shape huge": _value("batches/lattice_shape", 0, [2**30, 2**30, 2**30]),
    "start_mode not utf-8": _value("batches/start_mode", 0, b"\xff\xfe"),
    "nonfinite not utf-8": _value("batches/nonfinite", 0, b"\xff\xfe\xfd"),
    "plane_z NaN": _value("batches/plane_z", 0, np.nan),
    "reason code out of range": _value("flows/reason", 0, 120),
    "complete flag 7": _value("batches/complete", 0, 7),
    "total_flows negative": _value("batches/total_flows", 0, -3),
    "traced_samples negative": _value("batches/traced_samples", 0, -3),
    "skipped flag 9": _value("batches/skipped", 0, 9),
    # links
    "soft link loop": _soft_loop,
    "soft link dangling": _soft_dangling,
    "soft link inside": _soft_inside,
    "hard link cycle": _hard_cycle,
    "external link": _external,
    "external storage": _external_storage,
}


def mutate(base: Path, out: Path, name: str) -> Path:
    out.write_bytes(base.read_bytes())
    with h5py.File(out, "r+") as f:
        MUTANTS[name](f)
    return out


# ---------------------------------------------------------------------------------- the readers
def read_everything(path: Path) -> str:
    """Every reader on ``path``: "read" if all read it, else the one-line refusal. Anything but a
    named refusal (a traceback, a wrong exit status) raises AssertionError with the details."""
    import contextlib
    import io

    from energy_flow.trace.__main__ import main as trace_main
    from energy_flow.trace.recording import RecordingError, open_recording

    refusals = []
    try:
        with open_recording(path) as rec:
            for i in range(min(rec.num_batches, 3)):
                rec.batch(i)
                rec.batch_info(i)
                rec.report_fields(i)
                rec.batch_reasons(i)
            for name in ("loss", "num_steps", "nonfinite", "grad_norms"):
                rec.batch_column(name)
            rec.step_totals("spawn_granted")
            rec.step_starts("active")
    except RecordingError as exc:
        assert str(path) in str(exc), f"refusal does not name the file: {exc}"
        refusals.append(str(exc))
    for command in ("inspect", "health"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = trace_main([command, str(path)])
        lines = err.getvalue().strip().splitlines()
        assert code in ((0, 2) if command == "inspect" else (0, 1, 2)), f"{command}: exit {code}"
        if code == 2:
            assert len(lines) == 1 and str(path) in lines[0], f"{command}: {err.getvalue()!r}"
            refusals.append(lines[0])
    from energy_flow.trace.recording import is_recording

    is_recording(path)   # never raises
    try:
        RecordingWriter(path, create_tiny_config().to_dict(), {}, mode="a").close()
    except (ValueError, OSError) as exc:
        assert str(path) in str(exc), f"append refusal does not name the file: {exc}"
        refusals.append(str(exc))
    return refusals[0] if refusals else "read"


def main(folder: str) -> None:
    """Run every mutant through every reader in this process; print one JSON line of outcomes
    with the process's peak memory before and after (ru_maxrss, KiB) and the slowest mutant."""
    import resource
    import sys
    import time
    import traceback

    base = base_recording(Path(folder) / "base.h5")
    read_everything(base)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes, slowest, raised, high = {}, 0.0, {}, before
    for k, name in enumerate(MUTANTS):
        t0 = time.perf_counter()
        print(name, file=sys.stderr, flush=True)
        try:
            outcomes[name] = read_everything(mutate(base, Path(folder) / f"m{k}.h5", name))
        except BaseException:
            outcomes[name] = "UNEXPECTED: " + traceback.format_exc(limit=-3)
        slowest = max(slowest, time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if peak > high + 10_000:
            raised[name] = peak - high
        high = peak
    print(json.dumps({"outcomes": outcomes, "maxrss_before_kib": before, "maxrss_after_kib": high,
                      "raised_kib": raised, "slowest_s": slowest}))


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
