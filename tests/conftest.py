"""Fixtures shared by the generator tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import make_repo_copy


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
