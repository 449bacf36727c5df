"""Re-adopting a technique with other params (issue 21, item 3): `smt adopt` of a technique a
model already uses changes the params it names, keeps the others, and prints
`model: technique old params -> new params`; the same params again change nothing. Also the
generated Params records carry technique.yml's bounds for `--set TECHNIQUE.PARAM`.

Each test works in a private copy of this repository (the real CLI, real git). Adoption is
gated on qualification evidence; these tests give a person's decision (--force --reason)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from support import run_smt, snapshot

FORCE = ("--force", "--reason", "a test of re-adoption")


@pytest.fixture
def repo(repo_copy: Path) -> Path:
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-qm", "fleet")):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo_copy, check=True, capture_output=True)
    return repo_copy


def _uses(root: Path, model: str) -> dict[str, dict]:
    spec = yaml.safe_load((root / "generated" / model / ".copier-answers.yml").read_text())
    return {use["name"]: use.get("params") or {} for use in spec["techniques"]}


def test_readopting_with_other_params_prints_old_and_new_params(repo: Path) -> None:
    result = run_smt(repo, "adopt", "field_dropout", "--models", "feed_ctr,search_ads_ctr", "--param", "rate=0.2", *FORCE)
    assert result.code == 0, result.err
    assert "feed_ctr: field_dropout {rate: 0.1} -> {rate: 0.2}" in result.out.splitlines()
    assert "search_ads_ctr: adopted field_dropout" in result.out.splitlines()
    assert result.out.splitlines()[-1] == "adopt: 1 model(s) adopted field_dropout, 1 changed its params, 0 not applicable, 0 unchanged"
    assert _uses(repo, "feed_ctr")["field_dropout"] == {"rate": 0.2}
    assert "rate: float = field(default=0.2, " in (repo / "generated/feed_ctr/feed_ctr/config.py").read_text()
    assert run_smt(repo, "check").code == 0


def test_params_not_named_keep_their_values(repo: Path) -> None:
    """app_install sets mmoe's num_experts 3 and expert_dim 32: changing num_experts leaves
    expert_dim at 32 (not mmoe's default 64), and the line shows every param on both sides."""
    result = run_smt(repo, "adopt", "mmoe", "--models", "app_install", "--param", "num_experts=2", *FORCE)
    assert result.code == 0, result.err
    assert "app_install: mmoe {num_experts: 3, expert_dim: 32, expert_layers: [64]} -> {num_experts: 2, expert_dim: 32, expert_layers: [64]}" in result.out
    assert _uses(repo, "app_install")["mmoe"] == {"num_experts": 2, "expert_dim": 32}


def test_the_same_params_again_change_nothing(repo: Path) -> None:
    before = snapshot(repo)
    result = run_smt(repo, "adopt", "dcn_v2", "--models", "feed_ctr", "--param", "num_cross_layers=2", *FORCE)
    assert result.code == 0, result.err
    assert "feed_ctr: unchanged (already uses it with {num_cross_layers: 2, low_rank: 0})" in result.out
    assert snapshot(repo) == before


def test_params_carry_their_bounds_into_config_py(repo: Path) -> None:
    """What `--set TECHNIQUE.PARAM` checks: min, max and choices of technique.yml, as metadata."""
    config = (repo / "generated/feed_ctr/feed_ctr/config.py").read_text()
    assert "from dataclasses import dataclass, field\n" in config
    assert 'num_cross_layers: int = field(default=2, metadata={"min": 1})' in config
    assert 'rate: float = field(default=0.1, metadata={"min": 0.0, "max": 0.9})' in config
    mmoe = (repo / "generated/app_install/app_install/config.py").read_text()
    assert "expert_layers: tuple[int, ...] = (64,)" in mmoe  # no bounds in technique.yml: a plain default
