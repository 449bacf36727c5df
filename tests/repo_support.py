"""Helpers for the model-repo and pre-commit tests: throwaway SMT git repos with release tags, and the
real git, copier, smt and pre-commit commands run in them (no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from support import HANG_TIMEOUT, REPO, Result

# What a release of the SMT repo holds, as far as Copier, pip and pre-commit are concerned.
SMT_FILES = (
    "generator",
    "template_repo",
    "techniques",
    "generated",
    "copier.yml",
    ".pre-commit-hooks.yaml",
    "pyproject.toml",
    "README.md",
)
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", ".pytest_cache", "*.pyc", "*.egg-info", ".smt", ".*.smt-new", ".*.smt-old", "runs"
)
MODEL_PY = "template_repo/template/{{ model_name }}/model.py.jinja"
ANSWERS = ".copier-answers.yml"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "SMT tests",
    "GIT_AUTHOR_EMAIL": "smt-tests@example.com",
    "GIT_COMMITTER_NAME": "SMT tests",
    "GIT_COMMITTER_EMAIL": "smt-tests@example.com",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no SMT_ROOT or PYTHONPATH leaking in, a git identity."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SMT_ROOT", "PYTHONPATH"} and not key.startswith("GIT_")
    }
    return {**env, **GIT_IDENTITY, **extra}


def run(
    cwd: Path, *command: str, env: dict[str, str] | None = None, check: bool = True, timeout: int = HANG_TIMEOUT
) -> Result:
    proc = subprocess.run(
        command, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {proc.returncode} in {cwd}\n{proc.stdout}\n{proc.stderr}"
        )
    return result


def git(cwd: Path, *args: str, check: bool = True) -> Result:
    return run(
        cwd,
        "git",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "tag.gpgsign=false",
        "-c",
        "core.hooksPath=/dev/null",
        *args,
        check=check,
    )


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


def copier(cwd: Path, *args: str, check: bool = True) -> Result:
    """The real copier CLI (the one installed next to these tests)."""
    return run(cwd, sys.executable, "-m", "copier", *args, check=check)


def smt(cwd: Path, *args: str, root: Path = REPO, check: bool = False) -> Result:
    """The real `smt` CLI of the generator in ``root`` (default: this checkout), run in ``cwd``."""
    return run(
        cwd, sys.executable, "-m", "generator", *args, env=clean_env(PYTHONPATH=str(root)), check=check
    )


def make_smt_repo(path: Path, models: tuple[str, ...] | None = None) -> Path:
    """A git repo holding a copy of this checkout's SMT sources (optionally only some models of the
    fleet) at template version 0.1.0 (whatever this checkout's is), regenerated with `smt generate`
    and committed on branch main, untagged."""
    path.mkdir(parents=True)
    for name in SMT_FILES:
        source = REPO / name
        if name == "generated" and models is not None:
            for model in models:
                shutil.copytree(source / model, path / name / model, ignore=COPY_IGNORE)
        elif source.is_dir():
            shutil.copytree(source, path / name, ignore=COPY_IGNORE)
        else:
            shutil.copy2(source, path / name)
    (path / "template_repo" / "VERSION").write_text("0.1.0\n")
    smt(path, "generate", root=path, check=True)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "SMT sources")
    return path


def docstring_line(text: str, owner: str | None = None) -> str:
    """The first line of a docstring in ``text``: the module's, or that of the class or function
    whose definition line starts with ``owner`` (e.g. "class MLP(")."""
    if owner is not None:
        index = text.index(owner)
        text = text[index:]
    return text.split('"""', 2)[1].splitlines()[0].strip()


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def bump_minor(path: Path) -> str:
    """Bump the `version: X.Y.Z` line of a technique.yml to X.(Y+1).0; return the new version."""
    data = yaml.safe_load(path.read_text())
    major, minor, _ = (int(part) for part in str(data["version"]).split("."))
    new = f"{major}.{minor + 1}.0"
    replace_once(path, f"version: {data['version']}", f"version: {new}")
    return new


def make_release(
    smt_repo: Path,
    version: str,
    template_edits: dict[str, str] | None = None,
    technique_edits: dict[str, dict[str, str]] | None = None,
) -> None:
    """Commit and tag ``v<version>`` of the SMT repo as a release would be made: text replacements in
    the model.py template and in techniques' model.py patches (each such technique's version bumped
    and recorded), template_repo/VERSION set, generated/ regenerated."""
    for old, new in (template_edits or {}).items():
        replace_once(smt_repo / MODEL_PY, old, new)
    for technique, edits in (technique_edits or {}).items():
        for old, new in edits.items():
            replace_once(smt_repo / "techniques" / technique / "model.py", old, new)
        bump_minor(smt_repo / "techniques" / technique / "technique.yml")
    if technique_edits and (smt_repo / "techniques" / "fingerprints.yml").is_file():
        smt(smt_repo, "techniques", "lock", root=smt_repo, check=True)
    (smt_repo / "template_repo" / "VERSION").write_text(version + "\n")
    smt(smt_repo, "generate", root=smt_repo, check=True)
    commit_all(smt_repo, f"release {version}")
    git(smt_repo, "tag", f"v{version}")


def spec_of(smt_repo: Path, model: str) -> dict:
    """A model's spec (its answers without Copier's private keys) from the SMT repo's fleet."""
    answers = yaml.safe_load((smt_repo / "generated" / model / ANSWERS).read_text())
    return {key: value for key, value in answers.items() if not key.startswith("_")}


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
