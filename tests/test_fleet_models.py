"""Every generated model of the example fleet imports, runs forward and backward, and passes its own tests."""

from __future__ import annotations

import pytest
from smt_runtime import training

from support import REPO, assert_model_tests_pass
from generator.testing import import_model, random_batch

MODELS = sorted(path.parent.name for path in (REPO / "generated").glob("*/.copier-answers.yml"))
TRAINED_MODEL = "feed_ctr"


@pytest.mark.parametrize("name", MODELS)
def test_forward_and_backward(name: str) -> None:
    pkg = import_model(REPO / "generated" / name)
    config = pkg.config.ModelConfig()
    model = training.build_model(pkg.train.PARTS, config)
    batch = random_batch(config, 64, seed=3)

    logits = model(batch.dense, batch.sparse)
    assert tuple(logits.shape) == (64, len(config.objectives))
    loss, per_task = pkg.train.PARTS.loss(config)(logits, batch.labels)
    assert tuple(per_task.shape) == (len(config.objectives),)
    loss.backward()

    without_grad = [param_name for param_name, param in model.named_parameters() if param.grad is None]
    assert without_grad == []


@pytest.mark.parametrize("name", MODELS)
def test_generated_tests_pass(name: str) -> None:
    assert_model_tests_pass(REPO / "generated" / name)


def test_short_training_run_learns() -> None:
    pkg = import_model(REPO / "generated" / TRAINED_MODEL)
    config = pkg.config.ModelConfig()
    metrics = pkg.train.train(config, steps=300).metrics["test"]
    for objective, values in metrics.items():
        assert values["ne"] < 0.95, (objective, values)
        assert values["auc"] > 0.6, (objective, values)
