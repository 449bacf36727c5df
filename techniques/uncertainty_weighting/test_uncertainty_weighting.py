"""Tests of the uncertainty_weighting technique: golden patch, Kendall et al.'s loss and its gradients."""

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, build_model, probe_spec

HERE = Path(__file__).parent
BATCH = 64
WEIGHTS = [1.0, 0.5, 2.0]


def spec() -> dict[str, Any]:
    """The probe model with three objectives of weights WEIGHTS and uncertainty_weighting applied."""
    names = ["click", "conversion", "install"]
    return probe_spec(
        "uncertainty_weighting", objectives=[{"name": n, "weight": w} for n, w in zip(names, WEIGHTS)]
    )


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return build_model(spec(), tmp_path_factory.mktemp("uncertainty_weighting"))


def logits_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, 3, generator=generator) * 2
    labels = (torch.rand(BATCH, 3, generator=generator) < 0.3).float()
    return logits, labels


def bce_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -[y log p + (1 - y) log(1 - p)], p = sigmoid(logit): shape T."""
    p = torch.sigmoid(logits.double())
    return -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean(dim=0)


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_single_objective_model(tmp_path: Path) -> None:
    single = {**spec(), "objectives": [{"name": "click", "weight": 1.0}]}
    with pytest.raises(SmtError, match="uncertainty_weighting.*at least 2 objectives"):
        build_model(single, tmp_path)


def test_starts_as_the_weighted_sum(pkg: ModuleType) -> None:
    loss_fn = pkg.train.MultiTaskLoss(pkg.config.ModelConfig())
    assert loss_fn.log_variances.shape == (3,)
    assert [p is loss_fn.log_variances for p in loss_fn.parameters()] == [True]
    torch.testing.assert_close(loss_fn.log_variances.detach(), torch.zeros(3))
    logits, labels = logits_and_labels()
    total, per_task = loss_fn(logits, labels)
    bce = bce_by_hand(logits, labels)
    torch.testing.assert_close(per_task.double(), bce)
    torch.testing.assert_close(total.double(), (torch.tensor(WEIGHTS).double() * bce).sum())


def test_total_is_kendall_classification_form(pkg: ModuleType) -> None:
    loss_fn = pkg.train.MultiTaskLoss(pkg.config.ModelConfig())
    s = torch.tensor([0.7, -1.2, 0.3])
    with torch.no_grad():
        loss_fn.log_variances.copy_(s)
    logits, labels = logits_and_labels()
    total, per_task = loss_fn(logits, labels)
    bce = bce_by_hand(logits, labels)
    torch.testing.assert_close(per_task.double(), bce)  # per-task stays the unweighted BCE
    # sum_t (1 / sigma_t^2) w_t bce_t + log sigma_t, with sigma_t^2 = exp(s_t).
    sigma = torch.exp(s.double() / 2)
    expected = sum(WEIGHTS[t] * bce[t] / sigma[t] ** 2 + torch.log(sigma[t]) for t in range(3))
    torch.testing.assert_close(total.double(), expected)


def test_gradients_reach_every_log_variance(pkg: ModuleType) -> None:
    loss_fn = pkg.train.MultiTaskLoss(pkg.config.ModelConfig())
    s = torch.tensor([0.5, -0.5, 0.0])
    with torch.no_grad():
        loss_fn.log_variances.copy_(s)
    logits, labels = logits_and_labels()
    logits.requires_grad_(True)
    total, per_task = loss_fn(logits, labels)
    total.backward()
    # d total / d s_t = -exp(-s_t) w_t bce_t + 1/2
    expected = -torch.exp(-s) * torch.tensor(WEIGHTS) * per_task.detach() + 0.5
    torch.testing.assert_close(loss_fn.log_variances.grad, expected)
    assert (loss_fn.log_variances.grad.abs() > 1e-3).all()
    # Each task's logits get its BCE gradient scaled by its precision exp(-s_t) w_t.
    p = torch.sigmoid(logits.detach())
    scale = torch.exp(-s) * torch.tensor(WEIGHTS)
    torch.testing.assert_close(logits.grad, scale * (p - labels) / BATCH)


def test_log_variance_converges_to_its_optimum(pkg: ModuleType) -> None:
    # With the task losses fixed, the minimum over s_t is at exp(s_t) = 2 w_t bce_t.
    loss_fn = pkg.train.MultiTaskLoss(pkg.config.ModelConfig())
    logits, labels = logits_and_labels()
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        loss_fn(logits, labels)[0].backward()
        optimizer.step()
    bce = bce_by_hand(logits, labels).float()
    torch.testing.assert_close(
        loss_fn.log_variances.detach(), torch.log(2 * torch.tensor(WEIGHTS) * bce), atol=1e-3, rtol=1e-3
    )


def test_training_learns_the_log_variances(pkg: ModuleType) -> None:
    config = replace(pkg.config.ModelConfig(), train_examples=1024, eval_examples=256, batch_size=64)
    result = pkg.train.train(config, steps=20)
    assert set(result.metrics["test"]) == {"click", "conversion", "install"}
    loss_fn = result.prepared.loss_fn
    assert isinstance(loss_fn, pkg.train.MultiTaskLoss)
    # The runtime hands the loss's parameters to the dense optimizer: s_t moved off 0.
    assert (loss_fn.log_variances.detach().abs() > 1e-3).all()
