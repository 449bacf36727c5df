"""Tests of the dense_log_norm technique: golden patch, and signed log1p with a learned affine."""

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.engine import SmtError
from generator.testing import assert_golden, build_model, probe_spec

HERE = Path(__file__).parent


def spec() -> dict[str, Any]:
    """The probe model with three dense features and dense_log_norm applied."""
    dense = [{"name": "price_usd"}, {"name": "watch_time_s"}, {"name": "balance_delta"}]
    return probe_spec("dense_log_norm", dense_features=dense)


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return build_model(spec(), tmp_path_factory.mktemp("dense_log_norm"))


RAW = torch.tensor(
    [
        [0.0, 1.0, -1.0],
        [math.e - 1, 99.0, -1.0e4],
        [1.0e6, 0.5, 3.0],
    ]
)
# sign(x) * ln(1 + |x|), written out value by value.
LOGGED = torch.tensor(
    [
        [0.0, math.log(2.0), -math.log(2.0)],
        [1.0, math.log(100.0), -math.log(10001.0)],
        [math.log(1000001.0), math.log(1.5), math.log(4.0)],
    ]
)


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_refuses_a_model_without_dense_features(tmp_path: Path) -> None:
    no_dense = {**spec(), "dense_features": []}
    with pytest.raises(SmtError, match="dense_log_norm.*at least 1 dense feature"):
        build_model(no_dense, tmp_path)


def test_starts_as_signed_log1p(pkg: ModuleType) -> None:
    pre = pkg.features.DensePreprocessor(pkg.config.ModelConfig())
    torch.testing.assert_close(pre.scale.detach(), torch.ones(3))
    torch.testing.assert_close(pre.shift.detach(), torch.zeros(3))
    out = pre(RAW)
    assert out.shape == RAW.shape
    torch.testing.assert_close(out, LOGGED)
    torch.testing.assert_close(pre(-RAW), -out)  # odd: negative values mirror positive ones


def test_affine_is_per_feature_and_learned(pkg: ModuleType) -> None:
    pre = pkg.features.DensePreprocessor(pkg.config.ModelConfig())
    with torch.no_grad():
        pre.scale.copy_(torch.tensor([2.0, 0.5, -1.0]))
        pre.shift.copy_(torch.tensor([0.1, -3.0, 0.0]))
    expected = LOGGED * torch.tensor([2.0, 0.5, -1.0]) + torch.tensor([0.1, -3.0, 0.0])
    torch.testing.assert_close(pre(RAW), expected)
    pre(RAW).sum().backward()
    torch.testing.assert_close(pre.scale.grad, LOGGED.sum(dim=0))  # d/d a_n = sum_b log-feature
    torch.testing.assert_close(pre.shift.grad, torch.full((3,), 3.0))  # d/d b_n = B


def test_same_function_in_training_and_serving(pkg: ModuleType) -> None:
    pre = pkg.features.DensePreprocessor(pkg.config.ModelConfig())
    train_out = pre.train()(RAW)
    torch.testing.assert_close(pre.eval()(RAW), train_out)  # no running statistics
    torch.testing.assert_close(pre.train()(RAW[1:2]), train_out[1:2])  # batch of 1, batch-independent


def test_dense_arch_feeds_the_logged_features_to_its_mlp(pkg: ModuleType) -> None:
    config = pkg.config.ModelConfig()
    torch.manual_seed(0)
    model = pkg.model.RankingModel(config)
    arch = model.dense_arch
    torch.testing.assert_close(arch(RAW), arch.mlp(LOGGED))
    names = {name for name, _ in model.named_parameters()}
    assert {"dense_arch.preprocessor.scale", "dense_arch.preprocessor.shift"} <= names
