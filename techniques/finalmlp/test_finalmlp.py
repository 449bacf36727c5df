"""Tests of the finalmlp technique: golden patch, feature gating and the bilinear fusion of the paper."""

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.testing import assert_golden, assert_serves, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4
F, D = 3, 16
IN_DIM = D + F * D  # [dense arch output, flattened sparse]


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    """The probe model (F = 3, D = 16, N = 2, T = 1) with finalmlp applied with `params`."""
    return build_probe(probe_spec("finalmlp", params), tmp_path)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp_count(widths: list[int]) -> int:
    """Parameters of Linear layers with bias through widths[0] -> widths[1] -> ..."""
    return sum(i * o + o for i, o in zip(widths, widths[1:]))


def fusion_by_hand(fusion: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """b + w1 . x + w2 . y + sum_k x_k^T W_k y_k, one output unit and head at a time."""
    heads, x_width, y_width, outputs = fusion.bilinear.shape
    out = x @ fusion.linear_x.weight.T + fusion.linear_x.bias + y @ fusion.linear_y.weight.T
    for o in range(outputs):
        for k in range(heads):
            x_k = x[:, k * x_width : (k + 1) * x_width]
            y_k = y[:, k * y_width : (k + 1) * y_width]
            out[:, o] += ((x_k @ fusion.bilinear[k, :, :, o]) * y_k).sum(-1)
    return out


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_defaults_and_params(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    params = pkg.config.ModelConfig().finalmlp
    assert (tuple(params.stream1_layers), tuple(params.stream2_layers)) == ((64, 32), (32,))
    assert (tuple(params.stream1_context), tuple(params.stream2_context)) == ((), ())
    assert (tuple(params.gate_layers), params.num_heads, params.fusion_dim) == ((64,), 4, 16)
    assert model.interaction_arch.output_dim == 16
    assert model.interaction_arch.fusion.bilinear.shape == (4, 8, 8, 16)

    _, model = build(
        tmp_path / "custom", stream1_layers=[32], stream2_layers=[16, 16], num_heads=2, fusion_dim=8
    )
    arch = model.interaction_arch
    assert (arch.stream1.output_dim, arch.stream2.output_dim, arch.output_dim) == (32, 16, 8)
    assert arch.fusion.bilinear.shape == (2, 16, 8, 8)


def test_model_runs_and_trains_every_parameter(tmp_path: Path) -> None:
    for context in ([], [0]):
        pkg, model = build(tmp_path / str(len(context)), stream1_context=context)
        batch = random_batch(pkg.config.ModelConfig(), BATCH)
        logits = model(batch.dense, batch.sparse)
        assert logits.shape == (BATCH, 1)
        logits.sum().backward()
        assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_parameter_count(tmp_path: Path) -> None:
    heads, fusion_dim = 2, 8
    _, model = build(
        tmp_path,
        stream1_layers=[32],
        stream2_layers=[16],
        stream2_context=[0, 2],
        num_heads=heads,
        fusion_dim=fusion_dim,
    )
    arch = model.interaction_arch
    # Gate 1: a learned D-wide context, MLP D -> 64, Linear 64 -> IN_DIM. Gate 2: two fields of context.
    assert count(arch.gate1) == D + mlp_count([D, 64, IN_DIM])
    assert count(arch.gate2) == mlp_count([2 * D, 64, IN_DIM])
    assert count(arch.stream1) == mlp_count([IN_DIM, 32])
    assert count(arch.stream2) == mlp_count([IN_DIM, 16])
    # w1 and b, w2, and one (32 / K) X (16 / K) matrix per head and output.
    bilinear = heads * (32 // heads) * (16 // heads) * fusion_dim
    assert bilinear == 32 * 16 * fusion_dim // heads
    assert count(arch.fusion) == (32 + 1) * fusion_dim + 16 * fusion_dim + bilinear


def test_feature_gate_scales_every_feature_by_two_sigmoid_of_its_context(tmp_path: Path) -> None:
    _, model = build(tmp_path, stream2_context=[1])
    arch = model.interaction_arch
    features, sparse = torch.randn(BATCH, IN_DIM), torch.randn(BATCH, F, D)

    # Learned context: one gate vector, the same for every example.
    gate = 2 * torch.sigmoid(arch.gate1.gate(arch.gate1.learned_context))
    assert gate.shape == (1, IN_DIM)
    torch.testing.assert_close(arch.gate1(features, sparse), features * gate)
    assert ((gate > 0.75) & (gate < 1.25)).all()  # the zero context starts every gate near 1

    # Field context: the gate reads the embedding of field 1, and only that field.
    gate = 2 * torch.sigmoid(arch.gate2.gate(sparse[:, 1]))
    torch.testing.assert_close(arch.gate2(features, sparse), features * gate)
    assert ((gate > 0) & (gate < 2)).all()
    other = sparse.clone()
    other[:, 0] += 1.0
    other[:, 2] -= 1.0
    torch.testing.assert_close(arch.gate2.gate_values(other), arch.gate2.gate_values(sparse))
    other[:, 1] += 1.0
    assert not torch.allclose(arch.gate2.gate_values(other), arch.gate2.gate_values(sparse))


def test_fusion_is_multi_head_bilinear(tmp_path: Path) -> None:
    _, model = build(tmp_path, stream1_layers=[32], stream2_layers=[16], num_heads=4, fusion_dim=3)
    fusion = model.interaction_arch.fusion
    x, y = torch.randn(BATCH, 32), torch.randn(BATCH, 16)
    torch.testing.assert_close(fusion(x, y), fusion_by_hand(fusion, x, y))
    # Bilinear: for a fixed y the fusion is affine in x (equal steps give equal changes) ...
    zero = torch.zeros_like(x)
    torch.testing.assert_close(fusion(2 * x, y) - fusion(x, y), fusion(x, y) - fusion(zero, y))
    # ... and without W only the linear terms are left.
    with torch.no_grad():
        fusion.bilinear.zero_()
    torch.testing.assert_close(fusion(x, y), fusion.linear_x(x) + fusion.linear_y(y))


def test_arch_fuses_the_two_gated_streams(tmp_path: Path) -> None:
    _, model = build(tmp_path, stream2_context=[0])
    arch = model.interaction_arch
    dense, sparse = torch.randn(BATCH, D), torch.randn(BATCH, F, D)
    features = torch.cat([dense, sparse.flatten(1)], dim=1)
    stream1 = arch.stream1(features * arch.gate1.gate_values(sparse))
    stream2 = arch.stream2(features * arch.gate2.gate_values(sparse))
    torch.testing.assert_close(arch(dense, sparse), fusion_by_hand(arch.fusion, stream1, stream2))


def test_bad_heads_and_context_fields_are_refused(tmp_path: Path) -> None:
    pkg, _ = build(tmp_path)
    config = pkg.config.ModelConfig()
    with pytest.raises(ValueError, match="num_heads 3 must divide"):
        pkg.model.InteractionArch(replace(config, finalmlp=replace(config.finalmlp, num_heads=3)), D)
    with pytest.raises(ValueError, match=r"context fields \[3\] must lie in \[0, 3\)"):
        pkg.model.InteractionArch(replace(config, finalmlp=replace(config.finalmlp, stream1_context=(3,))), D)


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert_serves(model, pkg.config.ModelConfig(), tmp_path)
