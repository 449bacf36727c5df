"""Tests of the grad_clip technique: golden patch, and global gradient-norm clipping."""

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from smt_runtime import training
from smt_runtime.distributed import start
from smt_runtime.sparse import table_parameter_names

from generator.testing import assert_golden, build_model, probe_spec, random_batch

HERE = Path(__file__).parent
# Below the raw gradient norm of every step of these runs (0.02 to 0.2), so each step is clipped.
CAP = 0.01


def spec(**params: Any) -> dict[str, Any]:
    """The probe model with two objectives, grad_clip applied with `params`."""
    objectives = [{"name": "click", "weight": 1.0}, {"name": "conversion", "weight": 0.5}]
    return probe_spec("grad_clip", params, objectives=objectives)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradients the model's parameters hold."""
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def total_norm(model: torch.nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients(model).values()])))


def backward_once(pkg: ModuleType, config: Any) -> torch.nn.Module:
    """The model as a training run holds it (training.prepare: tables sharded by TorchRec, their
    optimizer fused into backward), with the gradients of one batch's loss."""
    prepared = training.prepare(pkg.train.PARTS, config, start("cpu"))
    batch = random_batch(config, 256)
    loss, _ = prepared.step_module(batch.dense, batch.sparse, batch.labels)
    loss.backward()
    return prepared.model


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_default_max_norm(tmp_path: Path) -> None:
    assert build_model(spec(), tmp_path).config.ModelConfig().grad_clip.max_norm == 10.0


def test_large_gradients_are_scaled_to_max_norm(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=CAP), tmp_path)
    config = pkg.config.ModelConfig()
    model = backward_once(pkg, config)
    before = {name: grad.clone() for name, grad in gradients(model).items()}
    # The embedding tables are left out: their fused optimizer updated them inside backward,
    # and they hold no gradient for the hook to see.
    tables = table_parameter_names(model)
    assert len(tables) == len(config.sparse_features) and not tables & before.keys()
    assert {name for name, _ in model.named_parameters()} - tables == before.keys()
    norm = total_norm(model)
    assert norm > CAP  # so the hook has something to clip
    pkg.train.after_backward(model, config)
    assert total_norm(model) == pytest.approx(CAP, rel=1e-4)
    scale = CAP / (norm + 1e-6)  # clip_grad_norm_'s coefficient
    after = gradients(model)
    assert after.keys() == before.keys()
    for name, grad in after.items():
        torch.testing.assert_close(grad, before[name] * scale)  # same direction, shorter


def test_small_gradients_are_left_alone(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=1.0e6), tmp_path)
    config = pkg.config.ModelConfig()
    model = backward_once(pkg, config)
    before = {name: grad.clone() for name, grad in gradients(model).items()}
    assert before
    pkg.train.after_backward(model, config)
    after = gradients(model)
    assert after.keys() == before.keys()
    for name, grad in after.items():
        torch.testing.assert_close(grad, before[name], rtol=0, atol=0)


def test_every_optimizer_step_sees_clipped_gradients(tmp_path: Path) -> None:
    pkg = build_model(spec(max_norm=CAP), tmp_path)
    config = replace(pkg.config.ModelConfig(), train_examples=512, eval_examples=256, batch_size=64)
    norms: list[float] = []

    def watch(prepared: training.Prepared) -> None:
        hook = lambda optimizer, args, kwargs: norms.append(total_norm(prepared.model))  # noqa: E731
        prepared.optimizer.dense.register_step_pre_hook(hook)

    pkg.train.train(config, steps=10, on_prepared=watch)
    assert len(norms) == 10
    assert max(norms) <= CAP * (1 + 1e-4)
    # Raw gradients of these steps are far larger, so every step was clipped to the cap.
    assert min(norms) == pytest.approx(CAP, rel=1e-3)
