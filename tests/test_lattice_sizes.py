"""Every preset takes another lattice size through every config entry point (issue 21).

A preset's mapper grid follows the lattice unless the user sets it: shrinking the debug preset
to 8 × 8 used to be refused because its grid was a fixed 20. Each case below builds the config
the way a user would — the Python factory, ``main.py --set``, a TOML or JSON file holding the
preset with the lattice edited — checks the grid in use, and trains one batch through the seed
design's own example API (EnergyLattice, SimpleNeuron, FlowProcessor, EnergyTrainer.train).

The larger presets also get ``CHEAP`` overrides (a smaller carrier, fewer steps, one sample),
so that a 104 × 104 lattice trains a batch on two CPU cores in seconds: they change nothing the
grid or the lattice's size depends on.
"""

from __future__ import annotations

import json

import pytest
import torch

from app import launcher
from energy_flow.config import EnergyConfig, create_debug_config, create_preset
from energy_flow.core import EnergyLattice, FlowProcessor, SimpleNeuron
from energy_flow.training import EnergyTrainer
from tests.conftest import unit_rows

CHEAP = {
    "tiny": {},
    "debug": {"batch_size": 2, "max_steps": 6},
    "experiment": {"batch_size": 1, "max_steps": 4, "carrier_hidden_size": 32, "carrier_num_layers": 1},
    "optimized": {"batch_size": 1, "max_steps": 3, "carrier_hidden_size": 32, "carrier_num_layers": 1},
}
#: (width, height, depth) smaller and larger than each preset's own lattice (non-square, so the
#: grid must follow the smaller side), and the grid each should use: the smaller side, up to the
#: preset's cap (``mapper_grid_max``).
SIZES = {
    "tiny": [((4, 3, 4), 3), ((9, 10, 6), 3)],
    "debug": [((8, 8, 6), 8), ((5, 7, 4), 5), ((26, 24, 12), 24)],
    "experiment": [((8, 6, 6), 6), ((54, 56, 22), 10)],
    "optimized": [((8, 6, 6), 6), ((104, 102, 50), 16)],
}
CASES = [pytest.param(preset, size, grid, id=f"{preset}-{'x'.join(map(str, size))}")
         for preset, sizes in SIZES.items() for size, grid in sizes]
ENTRY_POINTS = ("python", "--set", "toml", "json")


def lattice(size: tuple[int, int, int]) -> dict[str, int]:
    return dict(zip(("lattice_width", "lattice_height", "lattice_depth"), size))


def build(entry: str, preset: str, size: tuple[int, int, int], tmp_path) -> EnergyConfig:
    changes = {**CHEAP[preset], **lattice(size), "device": "cpu"}
    if entry == "python":
        return create_preset(preset, **changes)
    if entry == "--set":
        argv = ["--preset", preset] + [a for k, v in changes.items() for a in ("--set", f"{k}={v}")]
        return launcher.build_config(launcher.parse_args(argv))
    # a file holding the preset (as the app and --config write it), with the lattice edited
    path = tmp_path / f"run.{entry}"
    create_preset(preset).save(path)
    if entry == "toml":
        text = path.read_text(encoding="utf-8")
        for key, value in changes.items():
            old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
            text = text.replace(old, f"{key} = {json.dumps(value)}")
        path.write_text(text, encoding="utf-8")
    else:
        path.write_text(json.dumps(json.loads(path.read_text()) | changes), encoding="utf-8")
    return EnergyConfig.load(path)


def train_one_batch(config: EnergyConfig) -> float:
    """The seed design's example, on one batch of random unit embeddings."""
    lattice_ = EnergyLattice(config)
    neuron = SimpleNeuron(config)
    processor = FlowProcessor(lattice_, neuron, config)
    trainer = EnergyTrainer(processor, config)
    n = config.batch_size
    history = trainer.train(unit_rows(n, seed=1), unit_rows(n, seed=2), epochs=1, progress=False)
    assert len(history.loss) == 1
    return history.loss[0]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("preset,size,grid", CASES)
def test_each_preset_takes_another_lattice_through_each_entry_point(preset, size, grid, entry, tmp_path):
    config = build(entry, preset, size, tmp_path)
    assert (config.lattice_width, config.lattice_height, config.lattice_depth) == size
    assert config.mapper_grid == 0 and config.resolved_mapper_grid == grid
    if entry == "python":  # the same config whichever way it came; training it once is enough
        loss = train_one_batch(config)
        assert torch.isfinite(torch.tensor(loss)), loss
    else:
        assert config == build("python", preset, size, tmp_path)


def test_the_seed_example_on_a_smaller_debug_lattice():
    """The issue's own reproduction, as written in it."""
    config = create_debug_config(lattice_width=8, lattice_height=8, lattice_depth=6, device="cpu")
    assert config.resolved_mapper_grid == 8
    model = FlowProcessor(EnergyLattice(config), SimpleNeuron(config), config)
    assert model.input_mapper.proj.out_features == 8 * 8 * (1 + config.energy_dim)
    train_one_batch(config)


def test_a_grid_set_by_the_user_is_kept_and_checked_by_name(tmp_path):
    assert create_debug_config(mapper_grid=5).resolved_mapper_grid == 5
    with pytest.raises(ValueError, match=r"mapper_grid = 20 .*≤ min\(lattice_width, lattice_height\) = 8"):
        create_debug_config(lattice_width=8, lattice_height=8, mapper_grid=20)
    with pytest.raises(ValueError, match=r"mapper_grid = -1"):
        launcher.build_config(launcher.parse_args(["--set", "mapper_grid=-1"]))
    path = tmp_path / "run.toml"
    path.write_text("lattice_width = 6\nlattice_height = 6\nmapper_grid = 7\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mapper_grid = 7"):
        EnergyConfig.load(path)


def test_a_file_naming_only_the_lattice_follows_it(tmp_path):
    """Field defaults follow too (up to their cap of 8): a 6 × 6 lattice used to need a grid."""
    path = tmp_path / "run.toml"
    path.write_text("lattice_width = 6\nlattice_height = 6\nlattice_depth = 4\nbatch_size = 2\n"
                    "max_active_flows = 200\n", encoding="utf-8")
    assert EnergyConfig.load(path).resolved_mapper_grid == 6
    assert EnergyConfig().resolved_mapper_grid == 8  # 20 × 20: the field defaults are unchanged


def test_replace_follows_the_new_lattice_as_the_app_config_panel_uses_it():
    config = create_debug_config()
    assert config.resolved_mapper_grid == 20
    assert config.replace(lattice_width=12, lattice_height=10).resolved_mapper_grid == 10
    assert config.replace(mapper_grid=4).replace(lattice_width=12).resolved_mapper_grid == 4
