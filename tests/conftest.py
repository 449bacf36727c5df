"""Fixtures shared by the generator tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import WARM_CACHE_ENV, make_repo_copy, warm_render_cache


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A private copy of the repository (generator, template, techniques, fleet) to mutate freely."""
    return make_repo_copy(tmp_path)


# Generated models' tests and training runs started from these tests use one torch thread:
# the suite shares its CPUs with other work, and oversubscribed cores run many times slower.
os.environ["OMP_NUM_THREADS"] = "1"
try:
    import torch
except ImportError:  # the generator's own tests need no torch
    pass
else:
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    """Fill the render cache that repository copies start with, once, before any worker starts
    (pytest-xdist workers inherit the environment variable; support.WARM_CACHE_ENV says why it is
    safe). Without it each test's first `smt` command re-renders all seven models (~15 s)."""
    if hasattr(config, "workerinput") or os.environ.get(WARM_CACHE_ENV):
        return
    warm = warm_render_cache()
    if warm is not None:
        os.environ[WARM_CACHE_ENV] = str(warm)
        config._smt_warm_cache = warm.parent  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    warm = getattr(config, "_smt_warm_cache", None)
    if warm is not None:
        os.environ.pop(WARM_CACHE_ENV, None)
        shutil.rmtree(warm.parent, ignore_errors=True)  # the mkdtemp folder holding the copy
