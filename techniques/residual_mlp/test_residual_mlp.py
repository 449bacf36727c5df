"""Tests of the residual_mlp technique: golden patch, and the pre-LayerNorm residual blocks."""

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from generator.testing import assert_golden, build_model

HERE = Path(__file__).parent
BATCH = 4


def spec() -> dict[str, Any]:
    """A small two-objective model with residual_mlp applied."""
    return {
        "model_name": "residual_mlp_probe",
        "description": "Probe model of the residual_mlp technique tests.",
        "objectives": [{"name": "click", "weight": 1.0}, {"name": "conversion", "weight": 0.5}],
        "sparse_features": [
            {"name": "user_id", "cardinality": 500, "embedding_dim": 16, "multi_valued": False},
            {"name": "ad_id", "cardinality": 200, "embedding_dim": 8, "multi_valued": False},
        ],
        "dense_features": [{"name": "user_age_days"}, {"name": "ad_ctr_7d"}],
        "serving": {"max_params": 500000, "max_mflops_per_example": 1.0},
        "techniques": [{"name": "residual_mlp", "params": {}}],
        "hyperparameters": {},
    }


def build_pkg(tmp_path: Path) -> ModuleType:
    pkg = build_model(spec(), tmp_path)
    torch.manual_seed(0)
    return pkg


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_output_dim_and_identity_when_empty(tmp_path: Path) -> None:
    mlp_class = build_pkg(tmp_path).model.MLP
    mlp = mlp_class(8, (8, 4), 0.0)
    assert mlp.output_dim == 4
    assert mlp(torch.randn(BATCH, 8)).shape == (BATCH, 4)

    empty = mlp_class(8, (), 0.0)
    assert empty.output_dim == 8
    x = torch.randn(BATCH, 8)
    torch.testing.assert_close(empty(x), x)


def test_every_layer_is_a_layernorm_then_linear(tmp_path: Path) -> None:
    mlp = build_pkg(tmp_path).model.MLP(8, (8, 4, 4), 0.0)
    assert len(mlp.blocks) == 3
    for block, (in_dim, out_dim) in zip(mlp.blocks, [(8, 8), (8, 4), (4, 4)]):
        assert isinstance(block.norm, torch.nn.LayerNorm)
        assert block.norm.normalized_shape == (in_dim,)
        assert (block.linear.in_features, block.linear.out_features) == (in_dim, out_dim)


def test_block_computes_relu_linear_layernorm_plus_skip(tmp_path: Path) -> None:
    block = build_pkg(tmp_path).model.MLP(8, (4,), 0.0).blocks[0]
    x = torch.randn(BATCH, 8)
    normed = torch.nn.functional.layer_norm(x, (8,))  # fresh LayerNorm: weight 1, bias 0
    expected = torch.relu(block.linear(normed)) + x @ block.skip.weight.T
    torch.testing.assert_close(block(x), expected)
    assert block.skip.bias is None  # the projection shortcut is bias-free


def test_zeroed_linear_makes_same_width_block_the_identity(tmp_path: Path) -> None:
    mlp = build_pkg(tmp_path).model.MLP(8, (8,), 0.0)
    block = mlp.blocks[0]
    x = torch.randn(BATCH, 8)
    with torch.no_grad():
        block.linear.weight.zero_()
        block.linear.bias.fill_(0.5)
    torch.testing.assert_close(mlp(x), x + 0.5)  # x + ReLU(b)
    with torch.no_grad():
        block.linear.bias.fill_(-0.5)
    torch.testing.assert_close(mlp(x), x)  # ReLU cuts the negative bias: exactly x


def test_model_uses_residual_blocks_everywhere_and_runs(tmp_path: Path) -> None:
    pkg = build_pkg(tmp_path)
    config = pkg.config.ModelConfig()
    model = pkg.model.RankingModel(config)
    # Dense arch, over arch and every tower are built from the residual MLP.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    expected_layers = (
        len(config.dense_arch_layers)
        + 1
        + len(config.over_arch_layers)
        + len(config.objectives) * len(config.tower_layers)
    )
    assert len(norms) == expected_layers
    assert model.dense_arch.output_dim == config.embedding_dim
    assert model.over_arch.output_dim == config.over_arch_layers[-1]

    dense = torch.randn(BATCH, len(config.dense_features))
    values = {f.name: torch.randint(f.cardinality, (BATCH,)) for f in config.sparse_features}
    offsets = {f.name: torch.arange(BATCH) for f in config.sparse_features}
    logits = model(dense, values, offsets)
    assert logits.shape == (BATCH, len(config.objectives))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.over_arch.parameters())
