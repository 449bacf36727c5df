"""Tests of the grad_clip technique: golden patch, and global gradient-norm clipping."""

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.testing import assert_golden, build_model

HERE = Path(__file__).parent


def spec(**params: Any) -> dict[str, Any]:
    """A small two-objective model with grad_clip applied with `params`."""
    return {
        "model_name": "grad_clip_probe",
        "description": "Probe model of the grad_clip technique tests.",
        "objectives": [{"name": "click", "weight": 1.0}, {"name": "conversion", "weight": 0.5}],
        "sparse_features": [
            {"name": "user_id", "cardinality": 500, "embedding_dim": 8, "multi_valued": False},
            {"name": "ad_id", "cardinality": 200, "embedding_dim": 8, "multi_valued": False},
        ],
        "dense_features": [{"name": "user_age_days"}, {"name": "ad_ctr_7d"}],
        "serving": {"max_params": 500000, "max_mflops_per_example": 1.0},
        "techniques": [{"name": "grad_clip", "params": params}],
        "hyperparameters": {},
    }


def dense_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients of every parameter but the embedding tables (whose gradients are sparse)."""
    return {
        name: p.grad for name, p in model.named_parameters() if p.grad is not None and not p.grad.is_sparse
    }


def total_norm(model: torch.nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in dense_grads(model).values()])))


def backward_once(pkg: ModuleType, config: Any) -> torch.nn.Module:
    """A fresh model with the gradients of one batch's loss."""
    model = pkg.train.build_model(config)
    table = pkg.data.generate_synthetic(config, 256, seed=0)
    batch = next(pkg.data.table_to_batches(table, 256))
    logits = model(batch.dense, batch.sparse_values, batch.sparse_offsets)
    loss, _ = pkg.train.MultiTaskLoss(config)(logits, batch.labels)
    loss.backward()
    return model


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_default_max_norm(tmp_path: Path) -> None:
    assert build_model(spec(), tmp_path).config.ModelConfig().grad_clip.max_norm == 10.0


def test_large_gradients_are_scaled_to_max_norm(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=0.05), tmp_path)
    config = pkg.config.ModelConfig()
    model = backward_once(pkg, config)
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    norm = total_norm(model)
    assert norm > 0.05  # so the hook has something to clip
    pkg.train.after_backward(model, config)
    assert total_norm(model) == pytest.approx(0.05, rel=1e-4)
    scale = 0.05 / (norm + 1e-6)  # clip_grad_norm_'s coefficient
    dense = dense_grads(model)
    assert dense and len(dense) < len(before)  # the embedding tables are left out
    for name, p in model.named_parameters():
        expected = before[name] * scale if name in dense else before[name]
        torch.testing.assert_close(p.grad.to_dense(), expected.to_dense())  # same direction, shorter


def test_small_gradients_are_left_alone(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=1.0e6), tmp_path)
    config = pkg.config.ModelConfig()
    model = backward_once(pkg, config)
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    pkg.train.after_backward(model, config)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad.to_dense(), before[name].to_dense(), rtol=0, atol=0)


def test_every_optimizer_step_sees_clipped_gradients(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=0.05), tmp_path)
    config = replace(pkg.config.ModelConfig(), train_examples=512, batch_size=64)
    train = pkg.train
    model = train.build_model(config)
    loss_fn = train.MultiTaskLoss(config)
    optimizer = train.build_optimizer(model, loss_fn, config)
    norms: list[float] = []
    optimizer.dense.register_step_pre_hook(lambda opt, args, kwargs: norms.append(total_norm(model)))
    table = pkg.data.generate_synthetic(config, config.train_examples, seed=0)
    train.fit(model, loss_fn, optimizer, table, config, 10)
    assert len(norms) == 10
    assert max(norms) <= 0.05 * (1 + 1e-4)
    # Raw gradients of these steps are far larger, so every step was clipped to the cap.
    assert min(norms) == pytest.approx(0.05, rel=1e-3)
