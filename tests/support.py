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
# Seconds a subprocess of a test may run: it guards a hang, never a speed (machines are shared and
# noisy; speed targets live in benchmarks/).
HANG_TIMEOUT = 1800
COPIED = ("generator", "runtime", "template_repo", "techniques", "generated")
IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc", "runs", "*.egg-info")
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


def run_smt(cwd: Path, *args: str, timeout: int = HANG_TIMEOUT, env: dict[str, str] | None = None) -> Result:
    """Run the real `smt` CLI (this checkout's generator) in ``cwd`` (``env``: extra variables)."""
    env = {**{key: value for key, value in os.environ.items() if key != "SMT_ROOT"}, **(env or {})}
    env["PYTHONPATH"] = str(cwd)  # the copy's own generator package, not the installed checkout
    proc = subprocess.run(
        [sys.executable, "-m", "generator", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_model_tests_pass(folder: Path, env: dict[str, str] | None = None) -> None:
    """Run a model folder's own tests (the runtime's model contract, smt_runtime.testing) as a team
    would: a subprocess with one torch thread and the spec's seed (SMT_TEST_SEED unset), in the
    environment ``env`` (default: this one); require every one to pass."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(folder)}
    env.pop("SMT_TEST_SEED", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


def make_repo_copy(tmp_path: Path) -> Path:
    """A private copy of the repository (generator, template, techniques, fleet) to mutate freely."""
    root = tmp_path / "smt"
    root.mkdir()
    for name in COPIED:
        # Links stay links: template_repo/VERSION is the runtime's VERSION, as in the repository, so a
        # release written to it in a copy is the runtime's too (and git records it as the link).
        shutil.copytree(REPO / name, root / name, ignore=IGNORE, symlinks=True)
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
    done = run_smt(root, "check")
    return root / ".smt" if done.code == 0 and (root / ".smt" / "cache").is_dir() else None


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root/generated, byte for byte."""
    base = root / "generated"
    return {
        path.relative_to(base).as_posix(): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".pytest_cache" not in path.parts
    }
