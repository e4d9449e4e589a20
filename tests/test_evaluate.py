"""Held-out metrics, baselines, the contrastive loss and ``python -m energy_flow.evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from energy_flow.config import create_tiny_config
from energy_flow.evaluate import main as evaluate_main
from energy_flow.config import parse_overrides
from energy_flow.training import baselines
from energy_flow.training.data import PairDataset
from energy_flow.training.metrics import score, spread
from energy_flow.training.report import DataProvenance
from energy_flow.training.text_bridge import TextBridge
from energy_flow.training.trainer import embedding_losses, info_nce
from tests.conftest import unit_rows


def dataset(inputs: torch.Tensor, targets: torch.Tensor, texts: bool = True) -> PairDataset:
    n = len(inputs)
    return PairDataset(inputs, targets, [f"in {i}" for i in range(n)] if texts else None,
                       [f"out {i}" for i in range(n)] if texts else None,
                       DataProvenance("test", n, "none", inputs.shape[1]))


def test_spread_matches_the_pairwise_definition() -> None:
    """Guards against counting the diagonal (which would hide collapse) or a wrong normaliser."""
    x = (unit_rows(7, dim=5, seed=3) * torch.arange(1, 8).unsqueeze(1)).double()  # norms must not matter
    cos = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
    brute = 1 - (cos.sum() - cos.diagonal().sum()) / (7 * 6)
    assert spread(x) == pytest.approx(float(brute), abs=1e-9)
    assert spread(torch.ones(5, 3)) == 0.0
    assert spread(torch.eye(4)) == pytest.approx(1.0)


def test_ranks_count_ties_against_the_output() -> None:
    """Guards against a constant output scoring a perfect top-1 through ties."""
    bridge = TextBridge(["a", "b", "c"], torch.eye(3))
    outputs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    assert bridge.ranks(outputs, [0, 1, 2]).tolist() == [1, 2, 3]


def test_score_of_a_perfect_and_of_a_collapsed_predictor() -> None:
    targets = unit_rows(20, dim=16, seed=5)
    split = dataset(unit_rows(20, dim=16, seed=6), targets)
    perfect = score(targets * 3.0, split)
    assert perfect.top1 == perfect.top5 == perfect.mrr == 1.0
    assert perfect.mean_cosine == pytest.approx(1.0) and perfect.spread == pytest.approx(spread(targets))
    collapsed = score(targets.mean(0, keepdim=True).expand(20, -1), split)
    assert collapsed.spread == 0.0 and collapsed.top1 <= 0.1
    # MRR from the ranks, computed independently
    sims = F.normalize(targets.mean(0, keepdim=True), dim=1) @ targets.T
    order = torch.argsort(-sims[0])
    rank = torch.empty(20, dtype=torch.long)
    rank[order] = torch.arange(1, 21)
    assert collapsed.mrr == pytest.approx(float((1.0 / rank.double()).mean()))
    # precomputed embeddings (no texts) are scored the same way
    assert score(targets, dataset(split.inputs, targets, texts=False)).top1 == 1.0


def test_least_squares_recovers_a_linear_map_and_picks_its_ridge_on_train_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    w, b = torch.randn(8, 6, generator=g), torch.randn(6, generator=g)
    fit = baselines.least_squares(x, x @ w + b)
    assert fit.ridge == min(baselines.RIDGE_GRID)  # exact data: the least shrinkage wins
    new = torch.randn(10, 8, generator=g)
    torch.testing.assert_close(fit.predict(new), new @ w + b, atol=1e-3, rtol=1e-3)


def test_info_nce_matches_a_hand_computation_and_ignores_duplicate_targets() -> None:
    out, tgt = unit_rows(4, dim=8, seed=1), unit_rows(4, dim=8, seed=2)
    logits = (out @ tgt.T) / 0.1
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    assert float(info_nce(out, tgt, 0.1)) == pytest.approx(float(expected), rel=1e-5)
    dup = tgt.clone()
    dup[1] = dup[0]  # pair 1 has the same target as pair 0: not a negative for either
    logits = (out @ dup.T) / 0.1
    logits[0, 1] = logits[1, 0] = -math.inf
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    assert float(info_nce(out, dup, 0.1)) == pytest.approx(float(expected), rel=1e-5)


def test_loss_choice_is_a_config_field_with_the_old_behaviour_as_default() -> None:
    out, tgt = unit_rows(4, dim=8, seed=1), unit_rows(4, dim=8, seed=2)
    plain = create_tiny_config()
    assert plain.loss == "mse_cosine"
    total, mse, cos = embedding_losses(out, tgt, plain)
    assert float(total) == pytest.approx(float(F.mse_loss(out, tgt) + (1 - F.cosine_similarity(out, tgt)).mean()))
    contrastive = create_tiny_config(loss="contrastive", contrastive_weight=2.0, contrastive_temperature=0.1)
    total_c, _, _ = embedding_losses(out, tgt, contrastive)
    assert float(total_c) == pytest.approx(float(total + 2.0 * info_nce(out, tgt, 0.1)), rel=1e-6)
    with pytest.raises(ValueError, match="loss"):
        create_tiny_config(loss="hinge")
    with pytest.raises(ValueError, match="contrastive_temperature"):
        create_tiny_config(contrastive_temperature=0.0)


def test_overrides_are_parsed_and_unknown_fields_named() -> None:
    assert parse_overrides(["loss=contrastive", "learning_rate=0.001", "trace_enabled=false"]) == {
        "loss": "contrastive", "learning_rate": 0.001, "trace_enabled": False}
    with pytest.raises(ValueError, match="'lr' is not one"):
        parse_overrides(["lr=0.1"])


def test_evaluate_trains_saves_and_reevaluates_a_checkpoint(tmp_path: Path, capsys) -> None:
    """End to end on precomputed embeddings: one table with every predictor, the split and seed
    printed, and a reloaded checkpoint scoring exactly what the trained model scored."""
    g = torch.Generator().manual_seed(0)
    inputs = F.normalize(torch.randn(60, 384, generator=g), dim=1)
    targets = F.normalize(inputs + 0.3 * torch.randn(60, 384, generator=g), dim=1)
    data = tmp_path / "emb.npz"
    np.savez(data, inputs=inputs.numpy(), targets=targets.numpy())
    ckpt, first, second = tmp_path / "m.pt", tmp_path / "a.json", tmp_path / "b.json"
    common = ["--data", str(data), "--quiet", "--set", "max_active_flows=400"]
    assert evaluate_main(common + ["--preset", "tiny", "--batches", "3", "--seed", "4",
                                   "--save-checkpoint", str(ckpt), "--json", str(first)]) == 0
    text = capsys.readouterr().out
    assert "split: seed 4, validation fraction 0.1 → 54 train / 6 validation pairs" in text
    for row in ("mean target", "identity (input as output)", "ridge → 0 (λ", "ridge → identity (λ",
                "best simple (per figure)", "energy flow, 3 batches"):
        assert row in text, row
    assert evaluate_main(common + ["--checkpoint", str(ckpt), "--json", str(second)]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["seed"] == b["seed"] == 4 and a["sizes"] == b["sizes"] == {"train": 54, "validation": 6,
                                                                          "train_eval": 6}
    assert a["diagnostics"]["edge_cell_share"] == pytest.approx(20 / 36)  # tiny: 6×6, 20 edge cells
    assert 0.0 <= a["diagnostics"]["edge_energy_share"] <= 1.0
    row = "energy flow, 3 batches"
    for split in ("train", "validation"):
        assert b["rows"][row][split] == pytest.approx(a["rows"][row][split], abs=1e-6)
    assert a["rows"]["identity (input as output)"]["validation"]["mean_cosine"] == pytest.approx(
        float(F.cosine_similarity(inputs, targets).mean()), abs=0.05)
    simple = [name for name in a["rows"] if not name.startswith("energy flow")]
    assert len(simple) == 4
    for f in ("mean_cosine", "top1", "top5", "mrr"):  # the best simple row is each column's maximum
        best = max(a["rows"][name]["validation"][f] for name in simple)
        assert a["best_simple"]["validation"][f]["value"] == best
        assert a["model_vs_best_simple"][f]["beats"] == (a["rows"]["energy flow, 3 batches"]["validation"][f] > best)


def test_a_learning_curve_scores_on_the_way_without_changing_the_run(tmp_path: Path, capsys) -> None:
    """``--curve N``: a point every N batches on both splits, the last equal to the final table's
    row, and the run trains exactly as it does without a curve (scoring draws no random numbers,
    so readout dropout sees the same masks). Guards against a curve that perturbs what it measures."""
    g = torch.Generator().manual_seed(1)
    inputs = F.normalize(torch.randn(60, 384, generator=g), dim=1)
    targets = F.normalize(inputs + 0.3 * torch.randn(60, 384, generator=g), dim=1)
    data = tmp_path / "emb.npz"
    np.savez(data, inputs=inputs.numpy(), targets=targets.numpy())
    common = ["--data", str(data), "--quiet", "--preset", "tiny", "--batches", "6", "--set",
              "max_active_flows=400", "--set", "readout_dropout=0.3"]
    with_curve, without = tmp_path / "c.json", tmp_path / "n.json"
    assert evaluate_main(common + ["--curve", "2", "--json", str(with_curve)]) == 0
    assert "curve: batch 4: val cosine" in capsys.readouterr().out
    assert evaluate_main(common + ["--json", str(without)]) == 0
    a, b = json.loads(with_curve.read_text()), json.loads(without.read_text())
    assert [p["batch"] for p in a["curve"]] == [2, 4, 6] and b["curve"] == []
    row = "energy flow, 6 batches"
    assert a["rows"][row]["validation"] == b["rows"][row]["validation"] == a["curve"][-1]["validation"]
    assert a["training"]["last_loss"] == b["training"]["last_loss"]
    assert a["curve"][0]["validation"] != a["curve"][1]["validation"]  # the model moved between points
    with pytest.raises(SystemExit):
        evaluate_main(common + ["--curve", "-1"])
    assert "--curve" in capsys.readouterr().err


@pytest.mark.parametrize("readout_init", ["random", "tied"])
def test_the_deposit_probe_reads_the_pooled_planes_whatever_the_readout(readout_init) -> None:
    """``--probe`` fits a ridge map on what the output mapper's projection reads. The tied
    readout applies its weights with a gain, bypassing the Linear module's call, and a hook on
    that module saw nothing: the probe failed on every tied model (the debug preset)."""
    from energy_flow.evaluate import plane_features
    from energy_flow.training import EnergyTrainer, build_model

    c = create_tiny_config(readout_init=readout_init, device="cpu", trace_enabled=False)
    trainer = EnergyTrainer(build_model(c), c)
    x = unit_rows(6, seed=5)
    features = plane_features(trainer, x)
    g = c.resolved_mapper_grid
    assert features.shape == (6, c.num_output_planes * (c.energy_dim + 1) * g * g)
    mapper = trainer.processor.output_mapper
    weight = mapper.proj.weight * mapper.gain
    torch.testing.assert_close(features @ weight.T + mapper.proj.bias, trainer.predict(x), rtol=1e-4, atol=1e-5)
