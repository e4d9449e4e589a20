"""No failure loses the last good state, and no path can be turned against the user (issue 31,
items 3 and 4): the lock sidecar is never followed, outputs never replace inputs or files of
another kind, FIFOs and devices are refused, a damaged checkpoint is refused by its checksum,
non-finite state is never resumed from nor saved over a good checkpoint, and losing the
recording mid-run stops only the recording."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_flow import headless
from energy_flow.config import create_tiny_config
from energy_flow.files.filelock import FileLock
from energy_flow.headless import HeadlessOptions, check_outputs
from energy_flow.trace import RecordingWriter, open_recording
from energy_flow.training import EnergyTrainer, build_model
from energy_flow.training.checkpoint import NonFiniteStateError, read_checkpoint
from energy_flow.training.checkpoint_integrity import is_checkpoint_file, state_digest
from tests.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[1]


def make() -> EnergyTrainer:
    c = create_tiny_config()
    return EnergyTrainer(build_model(c), c)


def trained(steps: int = 2) -> EnergyTrainer:
    trainer = make()
    for s in range(steps):
        trainer.train_step((unit_rows(4, seed=s), unit_rows(4, seed=s + 50)))
    return trainer


def embeddings(tmp_path: Path, n: int = 8) -> Path:
    path = tmp_path / "pairs.npz"
    np.savez(path, inputs=unit_rows(n, seed=1).numpy(), targets=unit_rows(n, seed=2).numpy())
    return path


def signed(state: dict) -> dict:
    """A checkpoint whose checksum is right: what is tested is its values, not damage."""
    return {**state, "checksum": state_digest(state)}


# ------------------------------------------------------------------ the lock sidecar
@pytest.mark.parametrize("kind", ("symlink", "dangling-symlink", "hardlink", "fifo"))
def test_the_lock_sidecar_is_never_followed(tmp_path, kind):
    """The sweep's `r.h5.lock` linked to another file: `--record r.h5` replaced that file's
    contents with a process id."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    sidecar = tmp_path / "r.h5.lock"
    if kind == "symlink":
        sidecar.symlink_to(victim)
    elif kind == "dangling-symlink":
        sidecar.symlink_to(tmp_path / "will-be-created")
    elif kind == "hardlink":
        os.link(victim, sidecar)
    else:
        os.mkfifo(sidecar)
    with pytest.raises(OSError) as err:
        RecordingWriter(tmp_path / "r.h5", create_tiny_config().to_dict(), {})
    assert "r.h5.lock" in str(err.value) and "refusing" in str(err.value)
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "will-be-created").exists() and not (tmp_path / "r.h5").exists()


def test_a_plain_stale_sidecar_is_still_taken(tmp_path):
    (tmp_path / "r.h5.lock").write_text("12345\n")
    with FileLock(tmp_path / "r.h5", "recording"):
        assert (tmp_path / "r.h5.lock").read_text() == f"{os.getpid()}\n"


# ------------------------------------------------------------------ outputs and inputs
def options(tmp_path: Path, **kw) -> HeadlessOptions:
    base = dict(config=create_tiny_config(), batches=2, data=str(embeddings(tmp_path)), progress=False)
    base.update(kw)
    return HeadlessOptions(**base)


def test_an_output_may_not_be_an_input_by_any_name(tmp_path):
    """`--config run.json --summary run.json` overwrote the config; a symlink or hard link to
    it is the same file."""
    config = tmp_path / "run.json"
    create_tiny_config().save(config)
    os.symlink(config, tmp_path / "alias.json")
    os.link(config, tmp_path / "hard.json")
    for summary in (config, tmp_path / "alias.json", tmp_path / "hard.json"):
        with pytest.raises(ValueError, match="--summary and --config are the same file"):
            check_outputs(options(tmp_path, config_path=str(config), summary=str(summary)))
    data = tmp_path / "pairs.npz"
    with pytest.raises(ValueError, match="--data"):
        check_outputs(options(tmp_path, checkpoint=str(data)))
    ck = tmp_path / "ck.pt"
    trained(1).save_checkpoint(ck)
    with pytest.raises(ValueError, match="--summary and --resume"):
        check_outputs(options(tmp_path, resume=str(ck), summary=str(ck)))
    # Continuing a run into the checkpoint it resumed from is allowed.
    assert check_outputs(options(tmp_path, resume=str(ck), checkpoint=str(ck))) is None


def test_config_equal_to_summary_exits_2_and_keeps_the_config(tmp_path):
    config = tmp_path / "run.json"
    create_tiny_config().save(config)
    before = config.read_bytes()
    done = subprocess.run([sys.executable, "main.py", "--headless", "--config", str(config), "--summary",
                           str(config), "--data", str(embeddings(tmp_path)), "--batches", "1", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "--summary and --config are the same file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and config.read_bytes() == before


def test_checkpoint_never_replaces_a_file_that_is_not_a_checkpoint(tmp_path):
    """`--checkpoint` replaced any file, a recording included."""
    recording = tmp_path / "run.h5"
    RecordingWriter(recording, create_tiny_config().to_dict(), {}).close()
    text = tmp_path / "notes.txt"
    text.write_text("keep me\n")
    for victim in (recording, text):
        before = victim.read_bytes()
        with pytest.raises(ValueError, match="is not a checkpoint; refusing to replace it"):
            check_outputs(options(tmp_path, checkpoint=str(victim)))
        assert victim.read_bytes() == before
    ck = tmp_path / "ck.pt"
    trained(1).save_checkpoint(ck)
    assert is_checkpoint_file(ck) and not is_checkpoint_file(recording)
    check_outputs(options(tmp_path, checkpoint=str(ck)))   # an old checkpoint is replaced as before
    (tmp_path / "empty.pt").write_bytes(b"")
    check_outputs(options(tmp_path, checkpoint=str(tmp_path / "empty.pt")))


@pytest.mark.parametrize("flag", ("--config", "--resume"))
@pytest.mark.parametrize("kind", ("fifo", "device"))
def test_fifos_and_devices_are_refused_not_read(tmp_path, flag, kind):
    """A FIFO blocked the run forever; /dev/zero was read until memory ran out."""
    path = "/dev/zero" if kind == "device" else str(tmp_path / "pipe")
    if kind == "fifo":
        os.mkfifo(path)
    done = subprocess.run([sys.executable, "main.py", "--headless", "--preset", "tiny", flag, path, "--data",
                           str(embeddings(tmp_path)), "--batches", "1", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    assert path in done.stderr and "not a regular file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ checkpoints
def test_a_flipped_byte_fails_the_checksum_by_name(tmp_path):
    """torch.load checks no CRC: a flipped byte in a weight loaded silently."""
    trainer = trained(1)
    path = tmp_path / "ck.pt"
    trainer.save_checkpoint(path)
    raw = bytearray(path.read_bytes())
    weight = trainer.processor.state_dict()["carrier.gru.weight_ih_l0"]
    at = bytes(raw).find(weight.numpy().tobytes()[:64])
    assert at > 0
    raw[at + 21] ^= 0x10
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    torch.load(damaged, weights_only=True)   # torch itself notices nothing
    with pytest.raises(ValueError, match="fails its checksum") as err:
        make().load_checkpoint(damaged)
    assert str(damaged) in str(err.value)
    assert read_checkpoint(path)["step_count"] == 1   # the intact file loads


def test_non_finite_optimizer_state_is_refused_on_load(tmp_path):
    """The sweep resumed NaN optimizer state; batch 4 went NaN and that model was saved."""
    state = trained(2).state_dict()
    slot = next(iter(state["optimizer"]["state"]))
    state["optimizer"]["state"][slot]["exp_avg_sq"].view(-1)[0] = float("nan")
    path = tmp_path / "nan_opt.pt"
    torch.save(signed(state), path)
    with pytest.raises(ValueError, match=rf"optimizer state.{slot}.exp_avg_sq \(1 non-finite\)"):
        make().load_checkpoint(path)


@pytest.mark.parametrize("where, change", [
    ("optimizer param_groups[0]['lr']", lambda s: s["optimizer"]["param_groups"][0].update(lr="0.001")),
    ("scheduler['patience']", lambda s: s["scheduler"].update(patience="ten")),
    ("plateau_window", lambda s: s["plateau_window"].append("x")),
    ("optimizer state", lambda s: next(iter(s["optimizer"]["state"].values())).update(step="1")),
])
def test_a_string_where_a_number_belongs_is_named(tmp_path, where, change):
    state = trained(2).state_dict()
    change(state)
    path = tmp_path / "typed.pt"
    torch.save(signed(state), path)
    with pytest.raises(ValueError) as err:
        make().load_checkpoint(path)
    assert where in str(err.value) and str(path) in str(err.value)


def test_a_non_finite_model_is_never_saved_over_a_good_checkpoint(tmp_path):
    trainer = trained(1)
    path = tmp_path / "ck.pt"
    trainer.save_checkpoint(path)
    good = path.read_bytes()
    with torch.no_grad():
        trainer.processor.output_mapper.parameters().__next__()[0] = float("inf")
    with pytest.raises(NonFiniteStateError, match="non-finite values in model.output_mapper"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == good


def test_weights_made_non_finite_by_a_step_are_restored_and_named():
    """The finite check after each optimizer step (the step's existing weight norms)."""
    trainer = trained(1)
    before = {k: v.clone() for k, v in trainer.processor.state_dict().items()}
    trainer.optimizer.param_groups[0]["lr"] = float("inf")
    report = trainer.train_step((unit_rows(4, seed=9), unit_rows(4, seed=10)))
    assert report.skipped and "weights became non-finite" in report.nonfinite
    after = trainer.processor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_run_keeps_the_last_good_checkpoint_when_the_state_goes_non_finite(tmp_path, monkeypatch, capsys):
    """After batch 2 the optimizer state turns NaN (as a damaged resume did): the save at batch 3
    is refused, the file keeps step 2, the run stops with 3 and says so."""
    original = EnergyTrainer.train_step

    def poisoning(self, batch):
        report = original(self, batch)
        if self.step_count == 3:
            for entry in self.optimizer.state.values():
                entry["exp_avg"].fill_(float("nan"))
        return report

    monkeypatch.setattr(EnergyTrainer, "train_step", poisoning)
    ck = tmp_path / "ck.pt"
    code = headless.run(options(tmp_path, batches=5, checkpoint=str(ck), checkpoint_every=1,
                                summary=str(tmp_path / "s.json")))
    err = capsys.readouterr().err
    assert code == headless.EXIT_NONFINITE, err
    assert read_checkpoint(ck)["step_count"] == 2
    assert "not written: the model holds non-finite values" in err and "it keeps step 2" in err
    assert json.loads((tmp_path / "s.json").read_text())["checkpoint"]["step"] == 2


def test_losing_the_recording_mid_run_stops_only_the_recording(tmp_path, monkeypatch, capsys):
    """Deleting the recording mid-run stopped the run ("No such file or directory"): no
    checkpoint, no summary."""
    original = RecordingWriter.append_batch

    def then_delete(self, *a, **k):
        index = original(self, *a, **k)
        if index == 1:
            os.unlink(self.path)
        return index

    monkeypatch.setattr(RecordingWriter, "append_batch", then_delete)
    record, ck, summary = tmp_path / "run.h5", tmp_path / "ck.pt", tmp_path / "s.json"
    code = headless.run(options(tmp_path, batches=4, record=str(record), checkpoint=str(ck),
                                summary=str(summary)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"warning: recording {record} was removed or replaced during the run" in err
    assert "after 2 batches" in err
    assert read_checkpoint(ck)["step_count"] == 4
    s = json.loads(summary.read_text())
    assert s["steps"] == 4 and len(s["losses"]) == 4 and "removed or replaced" in s["record"]["lost"]
    assert not record.exists() and not (tmp_path / "run.h5.lock").exists()


def test_a_recording_swapped_mid_run_is_not_written_into(tmp_path, monkeypatch, capsys):
    original = RecordingWriter.append_batch
    other = tmp_path / "other.h5"

    def then_swap(self, *a, **k):
        index = original(self, *a, **k)
        if index == 0:
            RecordingWriter(other, create_tiny_config().to_dict(), {}).close()
            os.replace(other, self.path)
        return index

    monkeypatch.setattr(RecordingWriter, "append_batch", then_swap)
    record = tmp_path / "run.h5"
    assert headless.run(options(tmp_path, batches=3, record=str(record))) == 0
    assert "was removed or replaced" in capsys.readouterr().err
    with open_recording(record) as rec:
        assert rec.num_batches == 0    # the file now there got nothing of this run
