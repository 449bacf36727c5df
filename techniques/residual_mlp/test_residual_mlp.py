"""Tests of the residual_mlp technique: golden patch, and the pre-LayerNorm residual blocks."""

from pathlib import Path
from types import ModuleType

import torch
from smt_runtime import training

from generator.testing import assert_golden, build_model, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4


def build_pkg(tmp_path: Path) -> ModuleType:
    """The probe model with two objectives and residual_mlp applied."""
    objectives = [{"name": "click", "weight": 1.0}, {"name": "conversion", "weight": 0.5}]
    pkg = build_model(probe_spec("residual_mlp", objectives=objectives), tmp_path)
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
    model = training.build_model(pkg.train.PARTS, config)
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

    batch = random_batch(config, BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, len(config.objectives))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.over_arch.parameters())
