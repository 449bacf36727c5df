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


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_smt(cwd: Path, *args: str, timeout: int = 300) -> Result:
    """Run the real `smt` CLI (this checkout's generator) in ``cwd``."""
    env = {key: value for key, value in os.environ.items() if key != "SMT_ROOT"}
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
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root/generated, byte for byte."""
    base = root / "generated"
    return {
        path.relative_to(base).as_posix(): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".pytest_cache" not in path.parts
    }
