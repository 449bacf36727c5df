"""Tests of the mmoe technique: golden patch, and the multi-gate mixture of the paper."""

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, build_model, build_probe, probe_spec, random_batch

HERE = Path(__file__).parent
BATCH = 4
OBJECTIVES = ["click", "conversion", "install"]


def spec(**params: Any) -> dict[str, Any]:
    """The probe model with three objectives, mmoe applied with `params`."""
    return probe_spec("mmoe", params, objectives=[{"name": name, "weight": 1.0} for name in OBJECTIVES])


def build(tmp_path: Path, **params: Any) -> tuple[ModuleType, torch.nn.Module]:
    return build_probe(spec(**params), tmp_path)


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_single_objective_model(tmp_path: Path) -> None:
    single = {**spec(), "objectives": [{"name": "click", "weight": 1.0}]}
    with pytest.raises(SmtError, match="mmoe.*at least 2 objectives"):
        build_model(single, tmp_path)


def test_defaults_and_params(tmp_path: Path) -> None:
    pkg, model = build(tmp_path / "defaults")
    params = pkg.config.ModelConfig().mmoe
    assert (params.num_experts, params.expert_dim, tuple(params.expert_layers)) == (4, 64, (64,))

    pkg, model = build(tmp_path / "custom", num_experts=3, expert_dim=8, expert_layers=[16, 12])
    towers = model.task_towers
    assert len(towers.experts) == 3
    assert [expert.output_dim for expert in towers.experts] == [8, 8, 8]
    linears = [m for m in towers.experts[0].modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 12, 8]  # expert_layers, then expert_dim


def test_model_returns_one_logit_per_objective(tmp_path: Path) -> None:
    pkg, model = build(tmp_path, num_experts=3, expert_dim=8)
    batch = random_batch(pkg.config.ModelConfig(), BATCH)
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (BATCH, len(OBJECTIVES))
    assert list(model.task_towers.gates) == OBJECTIVES
    assert list(model.task_towers.towers) == OBJECTIVES


def test_gate_weights_are_a_distribution_per_example_and_objective(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_experts=3, expert_dim=8)
    towers = model.task_towers
    shared = torch.randn(BATCH, model.over_arch.output_dim) * 5
    weights = towers.gate_weights(shared)
    assert weights.shape == (BATCH, len(OBJECTIVES), 3)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(BATCH, len(OBJECTIVES)))
    # Each objective has its own gate: the mixtures differ between objectives.
    assert not torch.allclose(weights[:, 0], weights[:, 1])


def test_each_logit_is_its_tower_over_its_gated_mixture(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_experts=3, expert_dim=8)
    towers = model.task_towers
    shared = torch.randn(BATCH, model.over_arch.output_dim)
    experts = [expert(shared) for expert in towers.experts]
    logits = towers(shared)
    for t, name in enumerate(OBJECTIVES):
        gate = torch.softmax(towers.gates[name](shared), dim=-1)
        mixture = sum(gate[:, e : e + 1] * experts[e] for e in range(3))
        torch.testing.assert_close(logits[:, t : t + 1], towers.towers[name](mixture))


def test_experts_are_shared_by_all_objectives(tmp_path: Path) -> None:
    _, model = build(tmp_path, num_experts=3, expert_dim=8)
    towers = model.task_towers
    # One set of experts, not one per objective.
    assert len(towers.experts) == 3
    shared = torch.randn(BATCH, model.over_arch.output_dim)
    for t in range(len(OBJECTIVES)):
        towers.zero_grad()
        towers(shared)[:, t].sum().backward()
        for expert in towers.experts:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.parameters())
