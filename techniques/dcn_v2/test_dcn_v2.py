"""Tests of the dcn_v2 technique: golden patch, and the cross network of the paper."""

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from generator.testing import assert_golden, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    """The probe model (F = 3, D = 16, N = 2, T = 1) with dcn_v2 applied with `params`."""
    return build_probe(probe_spec("dcn_v2", params), tmp_path)


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_params_reach_config(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, num_cross_layers=2, low_rank=4)
    config = pkg.config.ModelConfig()
    assert (config.dcn_v2.num_cross_layers, config.dcn_v2.low_rank) == (2, 4)
    assert len(model.interaction_arch.cross_layers) == 2


def test_defaults(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert len(model.interaction_arch.cross_layers) == 3
    assert pkg.config.ModelConfig().dcn_v2.low_rank == 0


def test_output_dim_is_width_of_x0_and_model_runs(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, num_cross_layers=2)
    config = pkg.config.ModelConfig()
    x0_width = model.dense_arch.output_dim + len(config.sparse_features) * config.embedding_dim
    assert x0_width == 16 + 3 * 16
    assert model.interaction_arch.output_dim == x0_width

    batch = random_batch(config, BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, 1)
    logits.sum().backward()
    for layer in model.interaction_arch.cross_layers:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_parameter_count_full_and_low_rank(tmp_path: Path) -> None:
    d, layers, rank = 64, 2, 4
    _, full = build(tmp_path / "full", num_cross_layers=layers, low_rank=0)
    _, low = build(tmp_path / "low", num_cross_layers=layers, low_rank=rank)

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.interaction_arch.parameters())

    assert count(full) == layers * (d * d + d)  # W and b
    assert count(low) == layers * (2 * d * rank + d)  # U, V and b


def cross_matrix(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """W and b of a CrossLayer (W = U V^T for the low-rank layer)."""
    projection = layer.projection
    if isinstance(projection, torch.nn.Linear):
        return projection.weight, projection.bias
    down, up = projection  # V^T, then U with bias b
    return up.weight @ down.weight, up.bias


def test_cross_layer_is_x0_times_affine_x_plus_x(tmp_path: Path) -> None:
    for low_rank in (0, 4):
        _, model = build(tmp_path / str(low_rank), num_cross_layers=2, low_rank=low_rank)
        layer = model.interaction_arch.cross_layers[0]
        x0, x = torch.randn(BATCH, 64), torch.randn(BATCH, 64)
        weight, bias = cross_matrix(layer)
        assert weight.shape == (64, 64)
        if low_rank:
            assert torch.linalg.matrix_rank(weight) == low_rank
        expected = x0 * (x @ weight.T + bias) + x
        torch.testing.assert_close(layer(x0, x), expected)


def test_interaction_stacks_cross_layers_on_concatenated_input(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_cross_layers=3)
    arch = model.interaction_arch
    dense, sparse = torch.randn(BATCH, 16), torch.randn(BATCH, 3, 16)

    x0 = torch.cat([dense, sparse.flatten(1)], dim=1)
    x = x0
    for layer in arch.cross_layers:
        weight, bias = cross_matrix(layer)
        x = x0 * (x @ weight.T + bias) + x
    torch.testing.assert_close(arch(dense, sparse), x)
