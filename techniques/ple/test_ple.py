"""Tests of the ple technique: golden patch, and the progressive layered extraction of the paper."""

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, assert_serves, build_model, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4
OBJECTIVES = ["click", "conversion", "install"]


def spec(**params: Any) -> dict[str, Any]:
    """The probe model with three objectives, ple applied with `params`."""
    return probe_spec("ple", params, objectives=[{"name": name, "weight": 1.0} for name in OBJECTIVES])


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    return build_probe(spec(**params), tmp_path)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mix(gate: torch.nn.Linear, x: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """sum_e softmax(gate(x))[e] * experts[e], written out."""
    weights = torch.softmax(gate(x), dim=-1)
    return sum(weights[:, e : e + 1] * expert for e, expert in enumerate(experts))


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_single_objective_model(tmp_path: Path) -> None:
    single = {**spec(), "objectives": [{"name": "click", "weight": 1.0}]}
    with pytest.raises(SmtError, match="ple.*at least 2 objectives"):
        build_model(single, tmp_path)


def test_defaults_and_params(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    params = pkg.config.ModelConfig().ple
    assert (params.num_levels, params.experts_per_task, params.shared_experts) == (2, 1, 1)
    assert (params.expert_dim, tuple(params.expert_layers)) == (32, (64,))

    pkg, model = build(tmp_path / "custom", num_levels=3, experts_per_task=2, shared_experts=3, expert_dim=8)
    levels = model.task_towers.levels
    assert len(levels) == 3
    for level in levels:
        assert [len(experts) for experts in level.task_experts] == [2, 2, 2]
        assert len(level.shared_experts) == 3
        assert [gate.out_features for gate in level.task_gates] == [2 + 3] * 3
    # Only the layers below the last feed a next layer's shared experts.
    assert [level.shared_gate is not None for level in levels] == [True, True, False]
    assert levels[0].shared_gate.out_features == 3 * 2 + 3


def test_model_returns_one_logit_per_objective_and_trains_every_parameter(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, experts_per_task=2, shared_experts=2, expert_dim=8)
    batch = random_batch(pkg.config.ModelConfig(), BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, len(OBJECTIVES))
    assert list(model.task_towers.towers) == OBJECTIVES
    logits.sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_parameter_count(tmp_path: Path) -> None:
    T, E, S, H, hidden = 3, 2, 1, 8, 16
    _, model = build(
        tmp_path, num_levels=2, experts_per_task=E, shared_experts=S, expert_dim=H, expert_layers=[hidden]
    )
    in_dim = model.over_arch.output_dim
    towers = model.task_towers

    def expert(width: int) -> int:  # MLP(width, (hidden, H)): two Linear layers with bias
        return width * hidden + hidden + hidden * H + H

    def gate(width: int, choices: int) -> int:
        return width * choices + choices

    first = (T * E + S) * expert(in_dim) + T * gate(in_dim, E + S) + gate(in_dim, T * E + S)
    last = (T * E + S) * expert(H) + T * gate(H, E + S)  # no shared gate in the last layer
    assert count(towers.levels[0]) == first
    assert count(towers.levels[1]) == last
    assert count(towers) == first + last + sum(count(tower) for tower in towers.towers.values())


def test_extraction_layer_gates_own_and_shared_experts(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_levels=2, experts_per_task=2, shared_experts=2, expert_dim=8)
    layer = model.task_towers.levels[0]
    inputs = torch.randn(BATCH, len(OBJECTIVES) + 1, model.over_arch.output_dim)
    out = layer(inputs)
    assert out.shape == (BATCH, len(OBJECTIVES) + 1, 8)

    x_s = inputs[:, -1]
    shared = [expert(x_s) for expert in layer.shared_experts]
    own = [[expert(inputs[:, t]) for expert in experts] for t, experts in enumerate(layer.task_experts)]
    for t in range(len(OBJECTIVES)):
        expected = mix(layer.task_gates[t], inputs[:, t], own[t] + shared)
        torch.testing.assert_close(out[:, t], expected)
    every_expert = [e for experts in own for e in experts] + shared
    torch.testing.assert_close(out[:, -1], mix(layer.shared_gate, x_s, every_expert))


def test_towers_read_their_objectives_output_of_the_stacked_layers(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_levels=2, expert_dim=8)
    towers = model.task_towers
    shared = torch.randn(BATCH, model.over_arch.output_dim)
    x = torch.stack([shared] * (len(OBJECTIVES) + 1), dim=1)  # every row starts from the over arch output
    x = towers.levels[1](towers.levels[0](x))
    expected = torch.cat([towers.towers[name](x[:, t]) for t, name in enumerate(OBJECTIVES)], dim=1)
    torch.testing.assert_close(towers(shared), expected)


def expert_grads(experts: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in experts.parameters()]


def test_one_level_keeps_other_objectives_experts_out_of_a_logit(tmp_path: Path) -> None:
    """CGC: objective t sees only its own and the shared experts; a second level lets the
    shared gate carry every expert's knowledge upward."""
    for levels, leaks in ((1, False), (2, True)):
        _, model = build(tmp_path / str(levels), num_levels=levels, expert_dim=8)
        towers = model.task_towers
        towers(torch.randn(BATCH, model.over_arch.output_dim))[:, 0].sum().backward()
        first = towers.levels[0]
        for experts in (first.task_experts[0], first.shared_experts):
            assert all(g is not None and g.abs().sum() > 0 for g in expert_grads(experts))
        for other in first.task_experts[1:]:
            if leaks:
                assert all(g is not None and g.abs().sum() > 0 for g in expert_grads(other))
            else:
                assert all(g is None or not g.any() for g in expert_grads(other))


def test_capacity_report_and_export(tmp_path: Path) -> None:
    pkg, model = build(tmp_path)
    assert_serves(model, pkg.config.ModelConfig(), tmp_path)
