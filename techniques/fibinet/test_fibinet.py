"""Tests of the fibinet technique: golden patch, SENET and the bilinear interaction of the paper."""

from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, assert_serves, build_model, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4
F, D = 4, 16
PAIRS = list(combinations(range(F), 2))  # (0, 1), (0, 2), .., (2, 3): P = 6


def spec(**params: Any) -> dict[str, Any]:
    """The probe model with a fourth sparse feature (F = 4, D = 16, N = 2, T = 1), fibinet applied with `params`."""
    sparse = probe_spec()["sparse_features"]
    advertiser = {"name": "advertiser_id", "cardinality": 50, "embedding_dim": 8, "multi_valued": False}
    return probe_spec("fibinet", params, sparse_features=[*sparse[:2], advertiser, sparse[2]])


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    return build_probe(spec(**params), tmp_path)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bilinear_by_hand(layer: torch.nn.Module, fields: torch.Tensor, bilinear_type: str) -> torch.Tensor:
    """p_ij = (v_i W) * v_j for every pair i < j, with the pair's W picked as the paper says."""
    crosses = []
    for pair, (i, j) in enumerate(PAIRS):
        matrix = {"field_all": 0, "field_each": i, "field_interaction": pair}[bilinear_type]
        crosses.append((fields[:, i] @ layer.weight[matrix]) * fields[:, j])
    return torch.stack(crosses, dim=1)


def senet_by_hand(layer: torch.nn.Module, fields: torch.Tensor) -> torch.Tensor:
    squeeze = fields.sum(dim=-1) / fields.shape[-1]
    down, _, up, _ = layer.excitation
    weights = torch.sigmoid(torch.relu(squeeze @ down.weight.T) @ up.weight.T)
    return weights[:, :, None] * fields


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_single_sparse_feature_model(tmp_path: Path) -> None:
    single = spec()
    single["sparse_features"] = single["sparse_features"][:1]
    with pytest.raises(SmtError, match="fibinet.*at least 2 sparse"):
        build_model(single, tmp_path)


def test_defaults_and_params(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    params = pkg.config.ModelConfig().fibinet
    assert (params.reduction_ratio, params.bilinear_type) == (3, "field_interaction")
    assert model.interaction_arch.senet.excitation[0].out_features == 1  # F // 3

    pkg, model = build(tmp_path / "custom", reduction_ratio=2, bilinear_type="field_all")
    assert model.interaction_arch.senet.excitation[0].out_features == 2
    assert model.interaction_arch.bilinear.weight.shape == (1, D, D)

    with pytest.raises(SmtError, match="bilinear_type: must be one of"):
        build(tmp_path / "bad", bilinear_type="field_pair")


def test_output_dim_and_model_runs(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert model.interaction_arch.output_dim == D + 2 * len(PAIRS) * D
    batch = random_batch(pkg.config.ModelConfig(), BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, 1)
    logits.sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize(
    ("bilinear_type", "matrices"),
    [("field_all", 1), ("field_each", F - 1), ("field_interaction", len(PAIRS))],
)
def test_parameter_count(tmp_path: Path, bilinear_type: str, matrices: int) -> None:
    _, model = build(tmp_path, reduction_ratio=2, bilinear_type=bilinear_type)
    arch = model.interaction_arch
    assert count(arch.senet) == 2 * F * (F // 2)  # W_1 and W_2, no biases
    assert count(arch.bilinear) == count(arch.senet_bilinear) == matrices * D * D
    assert count(arch) == 2 * F * (F // 2) + 2 * matrices * D * D


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_bilinear_interaction_crosses_every_pair_through_its_matrix(
    tmp_path: Path, bilinear_type: str
) -> None:
    _, model = build(tmp_path, bilinear_type=bilinear_type)
    layer = model.interaction_arch.bilinear
    fields = torch.randn(BATCH, F, D)
    torch.testing.assert_close(layer(fields), bilinear_by_hand(layer, fields, bilinear_type))


def test_bilinear_with_identity_is_the_hadamard_product(tmp_path: Path) -> None:
    _, model = build(tmp_path, bilinear_type="field_each")
    layer = model.interaction_arch.bilinear
    with torch.no_grad():
        layer.weight.copy_(torch.eye(D).expand_as(layer.weight))
    fields = torch.randn(BATCH, F, D)
    hadamard = torch.stack([fields[:, i] * fields[:, j] for i, j in PAIRS], dim=1)
    torch.testing.assert_close(layer(fields), hadamard)
    # ... and summing it over D gives the inner product <v_i, v_j> of FM.
    torch.testing.assert_close(layer(fields).sum(-1)[:, 0], (fields[:, 0] * fields[:, 1]).sum(-1))


def test_senet_reweights_each_field_by_its_excitation(tmp_path: Path) -> None:
    _, model = build(tmp_path, reduction_ratio=2)
    senet = model.interaction_arch.senet
    # Enough examples that some reach a live ReLU of the excitation whatever its initial weights
    # (a ReLU unit is dead for a given example with probability 1/2).
    examples = 64
    fields = torch.randn(examples, F, D)
    torch.testing.assert_close(senet(fields), senet_by_hand(senet, fields))
    # One weight in (0, 1) per field and example: every field keeps its direction.
    weights = senet.field_weights(fields)
    assert weights.shape == (examples, F)
    assert ((weights > 0) & (weights < 1)).all()
    torch.testing.assert_close(senet(fields), weights[:, :, None] * fields)
    # The weights depend on the example (the squeeze), not only on the field.
    assert not torch.allclose(weights, weights[:1].expand_as(weights))


def test_arch_concatenates_dense_and_both_crosses(tmp_path: Path) -> None:
    _, model = build(tmp_path)
    arch = model.interaction_arch
    dense, sparse = torch.randn(BATCH, D), torch.randn(BATCH, F, D)
    p = bilinear_by_hand(arch.bilinear, sparse, "field_interaction")
    q = bilinear_by_hand(arch.senet_bilinear, senet_by_hand(arch.senet, sparse), "field_interaction")
    expected = torch.cat([dense, p.flatten(1), q.flatten(1)], dim=1)
    torch.testing.assert_close(arch(dense, sparse), expected)
    # The two crosses have their own weights.
    assert not torch.equal(arch.bilinear.weight, arch.senet_bilinear.weight)


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert_serves(model, pkg.config.ModelConfig(), tmp_path)
