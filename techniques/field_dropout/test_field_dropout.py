"""Tests of the field_dropout technique: golden patch, and whole fields dropped with inverted scaling."""

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, build_model

HERE = Path(__file__).parent
F, D = 3, 16


def spec(**params: Any) -> dict[str, Any]:
    """A small model with field_dropout applied with `params`: F = 3, D = 16, N = 2, T = 1."""
    return {
        "model_name": "field_dropout_probe",
        "description": "Probe model of the field_dropout technique tests.",
        "objectives": [{"name": "click", "weight": 1.0}],
        "sparse_features": [
            {"name": "user_id", "cardinality": 500, "embedding_dim": 16, "multi_valued": False},
            {"name": "ad_id", "cardinality": 200, "embedding_dim": 16, "multi_valued": False},
            {"name": "user_interests", "cardinality": 30, "embedding_dim": 8, "multi_valued": True},
        ],
        "dense_features": [{"name": "user_age_days"}, {"name": "ad_ctr_7d"}],
        "serving": {"max_params": 500000, "max_mflops_per_example": 1.0},
        "techniques": [{"name": "field_dropout", "params": params}],
        "hyperparameters": {},
    }


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    pkg = build_model(spec(**params), tmp_path)
    torch.manual_seed(0)
    return pkg, pkg.model.RankingModel(pkg.config.ModelConfig())


def same_example_inputs(config: Any, batch: int) -> tuple[dict, dict]:
    """One fixed example (two ids for multi-valued features) repeated batch times."""
    values, offsets = {}, {}
    for feature in config.sparse_features:
        ids = [3, 7] if feature.multi_valued else [5]
        values[feature.name] = torch.tensor(ids * batch)
        offsets[feature.name] = torch.arange(0, batch * len(ids), len(ids))
    return values, offsets


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_single_sparse_feature_model(tmp_path: Path) -> None:
    single = spec()
    single["sparse_features"] = single["sparse_features"][:1]
    with pytest.raises(SmtError, match="field_dropout.*at least 2 sparse"):
        build_model(single, tmp_path)


def test_rate_default_and_param(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    assert pkg.config.ModelConfig().field_dropout.rate == 0.1
    assert model.sparse_arch.postprocessor.rate == 0.1
    pkg, model = build(tmp_path / "custom", rate=0.25)
    assert model.sparse_arch.postprocessor.rate == 0.25
    with pytest.raises(SmtError, match="rate: must be at most 0.9"):
        build(tmp_path / "bad", rate=1.0)


def test_eval_mode_is_the_plain_embedding_lookup(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, rate=0.5)
    arch = model.sparse_arch.eval()
    values, offsets = same_example_inputs(pkg.config.ModelConfig(), 64)
    pooled = arch.embedding_tables(values, offsets)
    expected = torch.stack([project(x) for project, x in zip(arch.projections, pooled)], dim=1)
    torch.testing.assert_close(arch(values, offsets), expected)
    torch.testing.assert_close(arch(values, offsets), arch(values, offsets))


def test_training_drops_whole_fields_per_example_and_rescales_the_rest(tmp_path: Path) -> None:
    rate, batch = 0.3, 20000
    pkg, model = build(tmp_path, rate=rate)
    arch = model.sparse_arch
    values, offsets = same_example_inputs(pkg.config.ModelConfig(), batch)
    clean = arch.eval()(values, offsets)
    out = arch.train()(values, offsets)
    assert out.shape == (batch, F, D)

    dropped = (out == 0).all(dim=-1)  # B X F
    kept = ~dropped
    # Every field is either all zeros or the clean field scaled by 1 / (1 - rate), never anything else.
    torch.testing.assert_close(out[kept], clean[kept] / (1 - rate))
    # Each field of each example is dropped independently, at the rate.
    assert abs(dropped.float().mean().item() - rate) < 0.01
    for field in range(F):
        assert abs(dropped[:, field].float().mean().item() - rate) < 0.02
    drops_per_example = dropped.sum(dim=1)
    assert set(drops_per_example.tolist()) == {0, 1, 2, 3}  # not one mask for the whole batch
    # Inverted scaling: the expected value of every field is the clean value, so eval needs no correction.
    torch.testing.assert_close(out.mean(dim=0), clean[0], atol=0.05 * clean.abs().max().item(), rtol=0)


def test_rate_zero_is_the_identity_in_training(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, rate=0.0)
    arch = model.sparse_arch
    values, offsets = same_example_inputs(pkg.config.ModelConfig(), 32)
    torch.testing.assert_close(arch.train()(values, offsets), arch.eval()(values, offsets))


def test_dropped_fields_pass_no_gradient_to_their_embeddings(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, rate=0.5)
    arch = model.sparse_arch.train()
    config = pkg.config.ModelConfig()
    values, offsets = same_example_inputs(config, 1)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        arch.zero_grad()
        out = arch(values, offsets)
        out.sum().backward()
        for field, feature in enumerate(config.sparse_features):
            was_dropped = bool((out[0, field] == 0).all())
            grad = arch.embedding_tables.tables[feature.name].weight.grad
            assert bool(grad.abs().sum() == 0) == was_dropped
            seen.add(was_dropped)
    assert seen == {True, False}


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    config = pkg.config.ModelConfig()
    assert pkg.serve.capacity_report(model, config)["mflops_per_example"] > 0
    result = pkg.serve.export_model(model, config, tmp_path / "model.pt2")
    assert (result.format, result.fallback_reason) == ("torch.export", "")
    assert result.max_abs_diff <= 1e-5
