"""Tests of the autoint technique: golden patch, and the interacting layers of the paper."""

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from generator.testing import assert_golden, assert_serves, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4
D = 16


def build(tmp_path: Path, dense: bool = True, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    """The probe model (F = 3, D = 16, N = 2; N = 0 without dense) with autoint applied with `params`."""
    return build_probe(probe_spec("autoint", params, **({} if dense else {"dense_features": []})), tmp_path)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def interacting_layer_by_hand(layer: torch.nn.Module, fields: torch.Tensor) -> torch.Tensor:
    """Eq. 5-8 of the paper, one head, field and partner at a time."""
    heads, width = layer.num_heads, layer.output_dim // layer.num_heads
    queries, keys, values = layer.query(fields), layer.key(fields), layer.value(fields)
    out = torch.zeros(fields.shape[0], fields.shape[1], layer.output_dim)
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        for m in range(fields.shape[1]):
            scores = torch.stack(
                [(queries[:, m, cols] * keys[:, k, cols]).sum(-1) for k in range(fields.shape[1])], 1
            )
            alpha = torch.softmax(scores, dim=1)
            out[:, m, cols] = sum(alpha[:, k : k + 1] * values[:, k, cols] for k in range(fields.shape[1]))
    return torch.relu(out + fields @ layer.residual.weight.T)


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_defaults_and_params(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    params = pkg.config.ModelConfig().autoint
    assert (params.num_layers, params.num_heads, params.attention_dim) == (2, 2, 16)
    assert [layer.output_dim for layer in model.interaction_arch.layers] == [32, 32]

    _, model = build(tmp_path / "custom", num_layers=2, num_heads=4, attention_dim=8)
    layers = model.interaction_arch.layers
    assert [(layer.num_heads, layer.output_dim) for layer in layers] == [(4, 32), (4, 32)]
    assert [layer.query.in_features for layer in layers] == [D, 32]


def test_output_dim_and_model_runs(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "dense", num_layers=2, num_heads=2, attention_dim=8)
    # Fields: the dense arch output and 3 sparse fields; each leaves 2 * 8 wide.
    assert model.dense_arch.output_dim == D
    assert model.interaction_arch.output_dim == D + 4 * 16
    batch = random_batch(pkg.config.ModelConfig(), BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, 1)
    logits.sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []

    pkg, model = build(tmp_path / "no_dense", dense=False, num_layers=2, num_heads=2, attention_dim=8)
    assert model.interaction_arch.output_dim == 3 * 16  # no dense field, nothing to concatenate
    batch = random_batch(pkg.config.ModelConfig(), BATCH)
    assert model(batch.dense, batch.sparse).shape == (BATCH, 1)


def test_parameter_count(tmp_path: Path) -> None:
    layers, heads, width = 3, 2, 8
    pkg, model = build(tmp_path / "dense", num_layers=layers, num_heads=heads, attention_dim=width)
    out = heads * width
    # W_Q, W_K, W_V and W_Res of every layer, each in_dim X H * A (layer 1 reads D),
    # and the D X dense_dim projection of the dense field.
    attention = 4 * out * (D + (layers - 1) * out)
    assert count(model.interaction_arch) == attention + D * D
    arch = pkg.model.InteractionArch(pkg.config.ModelConfig(), 5)
    assert count(arch) == attention + D * 5
    assert arch.output_dim == 5 + 4 * out

    _, model = build(
        tmp_path / "no_dense", dense=False, num_layers=layers, num_heads=heads, attention_dim=width
    )
    assert model.interaction_arch.dense_field is None
    assert count(model.interaction_arch) == attention


def test_dense_field_starts_at_zero_and_learns(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_layers=1, num_heads=2, attention_dim=8)
    arch = model.interaction_arch
    dense, sparse = torch.randn(BATCH, D), torch.randn(BATCH, 3, D)
    # At start the dense field is a zero field: the sparse fields attend as if it were 0.
    zero_field = torch.cat([torch.zeros(BATCH, 1, D), sparse], dim=1)
    expected = torch.cat([dense, arch.layers[0](zero_field).flatten(1)], dim=1)
    torch.testing.assert_close(arch(dense, sparse), expected)
    # ... and its projection still receives a gradient, so the field joins in training.
    arch(dense, sparse).sum().backward()
    assert arch.dense_field.weight.grad.abs().sum() > 0


def test_interacting_layer_is_multi_head_attention_plus_residual(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_layers=2, num_heads=2, attention_dim=8)
    for layer, in_dim in zip(model.interaction_arch.layers, (D, 16)):
        fields = torch.randn(BATCH, 4, in_dim)
        torch.testing.assert_close(layer(fields), interacting_layer_by_hand(layer, fields))
        weights = layer.attention_weights(fields)
        assert weights.shape == (BATCH, 2, 4, 4)
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(BATCH, 2, 4))


def test_fields_interact_and_are_permutation_equivariant(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_layers=1, num_heads=2, attention_dim=8)
    layer = model.interaction_arch.layers[0]
    fields = torch.randn(BATCH, 4, D)
    out = layer(fields)
    # Reordering the fields reorders the output the same way: attention has no field order.
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(layer(fields[:, order]), out[:, order])
    # Every output field depends on the other fields (through attention), unlike a per-field MLP.
    changed = fields.clone()
    changed[:, 3] += 1.0
    assert not torch.allclose(layer(changed)[:, 0], out[:, 0])


def test_arch_stacks_layers_over_dense_and_sparse_fields(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_layers=3, num_heads=2, attention_dim=8)
    arch = model.interaction_arch
    with torch.no_grad():
        torch.nn.init.normal_(arch.dense_field.weight)  # as after some training
    dense, sparse = torch.randn(BATCH, D), torch.randn(BATCH, 3, D)
    fields = torch.cat([(dense @ arch.dense_field.weight.T).unsqueeze(1), sparse], dim=1)
    for layer in arch.layers:
        fields = interacting_layer_by_hand(layer, fields)
    torch.testing.assert_close(arch(dense, sparse), torch.cat([dense, fields.flatten(1)], dim=1))


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert_serves(model, pkg.config.ModelConfig(), tmp_path)
