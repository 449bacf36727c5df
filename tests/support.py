"""Helpers for the generator tests: a throwaway copy of the SMT repository and the real `smt` CLI in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COPIED = ("generator", "template_repo", "techniques", "generated")
IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc", "runs")
# A render cache filled once per test session by `smt check` on a copy of the committed repository
# (conftest.py). The cache is content-addressed (generator/cache.py: its keys hash every input,
# never a path), so in a copy it only answers for models and files exactly as committed; any change
# a test makes is a miss and renders as it would with an empty cache.
WARM_CACHE_ENV = "SMT_TEST_WARM_CACHE"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_smt(cwd: Path, *args: str, timeout: int = 300, env: dict[str, str] | None = None) -> Result:
    """Run the real `smt` CLI (this checkout's generator) in ``cwd`` (``env``: extra variables)."""
    env = {**{key: value for key, value in os.environ.items() if key != "SMT_ROOT"}, **(env or {})}
    env["PYTHONPATH"] = str(cwd)  # the copy's own generator package, not the installed checkout
    proc = subprocess.run(
        [sys.executable, "-m", "generator", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def make_repo_copy(tmp_path: Path) -> Path:
    """A private copy of the repository (generator, template, techniques, fleet) to mutate freely."""
    root = tmp_path / "smt"
    root.mkdir()
    for name in COPIED:
        shutil.copytree(REPO / name, root / name, ignore=IGNORE)
    warm = os.environ.get(WARM_CACHE_ENV)
    if warm and (Path(warm) / "cache").is_dir():
        (root / ".smt").mkdir()
        shutil.copy(Path(warm) / ".gitignore", root / ".smt" / ".gitignore")
        shutil.copytree(Path(warm) / "cache", root / ".smt" / "cache")
    return root


def warm_render_cache() -> Path | None:
    """Run `smt check` once on a fresh copy of the repository; its ``.smt`` folder, or None when the
    committed fleet is not in sync (then copies start cold, and the sync tests say why)."""
    import tempfile  # noqa: PLC0415

    root = make_repo_copy(Path(tempfile.mkdtemp(prefix="smt-warm-cache-")))
    done = run_smt(root, "check", timeout=900)
    return root / ".smt" if done.code == 0 and (root / ".smt" / "cache").is_dir() else None


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root/generated, byte for byte."""
    base = root / "generated"
    return {
        path.relative_to(base).as_posix(): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".pytest_cache" not in path.parts
    }
