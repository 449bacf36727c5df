"""Tests of the field_dropout technique: golden patch, and whole fields dropped with inverted scaling."""

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from smt_runtime.batch import sparse_input
from torchrec import KeyedJaggedTensor

from generator.engine import SmtError
from generator.testing import assert_golden, assert_serves, build_model, build_probe, probe_spec

HERE = Path(__file__).parent
F, D = 3, 16


def spec(**params: Any) -> dict[str, Any]:
    """The probe model (F = 3, D = 16, N = 2, T = 1) with field_dropout applied with `params`."""
    return probe_spec("field_dropout", params)


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    return build_probe(spec(**params), tmp_path)


def same_example_inputs(config: Any, batch: int) -> KeyedJaggedTensor:
    """One fixed example (two ids for multi-valued features) repeated batch times."""
    ids, lengths = {}, {}
    for feature in config.sparse_features:
        example = [3, 7] if feature.multi_valued else [5]
        ids[feature.name] = torch.tensor(example * batch)
        lengths[feature.name] = torch.full((batch,), len(example))
    return sparse_input(ids, lengths)


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
    sparse = same_example_inputs(pkg.config.ModelConfig(), 64)
    pooled = arch.embedding_tables(sparse)
    expected = torch.stack([project(x) for project, x in zip(arch.projections, pooled)], dim=1)
    torch.testing.assert_close(arch(sparse), expected)
    torch.testing.assert_close(arch(sparse), arch(sparse))


def test_training_drops_whole_fields_per_example_and_rescales_the_rest(tmp_path: Path) -> None:
    rate, batch = 0.3, 20000
    pkg, model = build(tmp_path, rate=rate)
    arch = model.sparse_arch
    sparse = same_example_inputs(pkg.config.ModelConfig(), batch)
    clean = arch.eval()(sparse)
    out = arch.train()(sparse)
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
    sparse = same_example_inputs(pkg.config.ModelConfig(), 32)
    torch.testing.assert_close(arch.train()(sparse), arch.eval()(sparse))


def test_dropped_fields_pass_no_gradient_to_their_embeddings(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, rate=0.5)
    arch = model.sparse_arch.train()
    config = pkg.config.ModelConfig()
    sparse = same_example_inputs(config, 1)
    tables = arch.embedding_tables.collection.embedding_bags
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        arch.zero_grad()
        out = arch(sparse)
        out.sum().backward()
        for field, feature in enumerate(config.sparse_features):
            was_dropped = bool((out[0, field] == 0).all())
            grad = tables[feature.name].weight.grad
            assert bool(grad.abs().sum() == 0) == was_dropped
            seen.add(was_dropped)
    assert seen == {True, False}


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert_serves(model, pkg.config.ModelConfig(), tmp_path)
