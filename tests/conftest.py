"""Fixtures shared by the generator tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import make_repo_copy


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A private copy of the repository (generator, template, techniques, fleet) to mutate freely."""
    return make_repo_copy(tmp_path)
