"""Fixtures of the runtime's tests: two real generated model packages of this repository, imported
from generated/ (the runtime's behaviour is the same for every model; these two cover one and two
objectives, the template's loss and a technique's, mixed table widths and a multi-valued feature).

    feed_ctr     one objective; dcn_v2, field_dropout
    app_install  two objectives; dcn_v2, mmoe, dense_log_norm, uncertainty_weighting (a loss with
                 parameters)

Tests run on one torch thread, here and in the processes they start: the machines are shared, and
oversubscribed cores run many times slower.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from generator.testing import import_model

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

GENERATED = Path(__file__).resolve().parents[2] / "generated"
MODELS = ("feed_ctr", "app_install")


@pytest.fixture(scope="session")
def packages() -> dict[str, ModuleType]:
    """Every model of MODELS, imported once."""
    return {name: import_model(GENERATED / name) for name in MODELS}


@pytest.fixture(scope="session")
def feed_ctr(packages: dict[str, ModuleType]) -> ModuleType:
    return packages["feed_ctr"]


@pytest.fixture(params=MODELS)
def package(request: pytest.FixtureRequest, packages: dict[str, ModuleType]) -> ModuleType:
    """Each model of MODELS in turn, for behaviour that depends on the model's objectives or loss."""
    return packages[request.param]


# Small data: 2,048 training examples in batches of 128 (16 steps an epoch), 512 validation and
# test examples.
SMALL = {"train_examples": 2048, "eval_examples": 512, "batch_size": 128}


@pytest.fixture
def config(package: ModuleType) -> Any:
    """The spec's config of package, with small data."""
    return replace(package.train.PARTS.config(), **SMALL)


@pytest.fixture
def feed_config(feed_ctr: ModuleType) -> Any:
    """feed_ctr's config with small data."""
    return replace(feed_ctr.train.PARTS.config(), **SMALL)
