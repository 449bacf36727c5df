"""The hooks of .pre-commit-hooks.yaml, run by the real pre-commit framework in temporary git repos.

The hook repository is a git repo of this checkout's SMT sources (two example models, tags v0.1.0 and
v0.2.0). pre-commit installs its environment from PyPI (network access needed) once for the module,
in a shared PRE_COMMIT_HOME; `pre-commit try-repo` always installs into a throwaway store.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from repo_support import (
    ANSWERS,
    MODEL_PY,
    clean_env,
    commit_all,
    copier,
    docstring_line,
    git,
    make_release,
    make_smt_repo,
    run,
    spec_of,
    write_spec,
)
from support import HANG_TIMEOUT, Result

MODELS = ("feed_ctr", "app_install")


@pytest.fixture(scope="module")
def hooks_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_smt_repo(tmp_path_factory.mktemp("hooks") / "smt", MODELS)
    git(root, "tag", "v0.1.0")
    line = docstring_line((root / MODEL_PY).read_text())
    make_release(root, "0.2.0", template_edits={line: line.rstrip(".") + " (release 0.2.0)."})
    return root


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


def pre_commit(cwd: Path, home: Path, *args: str) -> Result:
    return run(
        cwd,
        sys.executable,
        "-m",
        "pre_commit",
        *args,
        env=clean_env(PRE_COMMIT_HOME=str(home)),
        check=False,
        timeout=HANG_TIMEOUT,
    )


def commit_with_hooks(cwd: Path, home: Path, message: str) -> Result:
    """`git commit` as a person runs it, with the hooks that `pre-commit install` put in .git/hooks;
    ``out`` holds both streams (git hands the hook's output to stderr)."""
    result = run(
        cwd,
        "git",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        message,
        env=clean_env(PRE_COMMIT_HOME=str(home)),
        check=False,
        timeout=HANG_TIMEOUT,
    )
    return Result(result.code, result.out + result.err, result.err)


def use_hooks(repo: Path, hooks_repo: Path, home: Path, *hook_ids: str, args: list[str] | None = None) -> None:
    """Commit a .pre-commit-config.yaml using ``hook_ids`` from the SMT repo at v0.2.0 (each with
    ``args`` when given); install them."""
    extra = f"        args: {args}\n" if args is not None else ""
    hooks = "".join(f"      - id: {hook}\n{extra}" for hook in hook_ids)
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks_repo}\n    rev: v0.2.0\n    hooks:\n{hooks}"
    )
    commit_all(repo, "use SMT's pre-commit hooks")
    assert pre_commit(repo, home, "install").code == 0


def monorepo(hooks_repo: Path, path: Path) -> Path:
    git(path.parent, "clone", "-q", str(hooks_repo), str(path))
    return path


def change_template(repo: Path) -> str:
    """Edit the model.py template's module docstring in ``repo`` and stage it; return the new line."""
    template = repo / MODEL_PY
    line = docstring_line(template.read_text())
    new = line.rstrip(".") + " (edited in the monorepo)."
    template.write_text(template.read_text().replace(line, new, 1))
    git(repo, "add", MODEL_PY)
    return new


def test_try_repo_installs_without_torch_and_passes_an_in_sync_monorepo(
    hooks_repo: Path, tmp_path: Path
) -> None:
    repo = monorepo(hooks_repo, tmp_path / "mono")
    started = time.perf_counter()
    result = pre_commit(
        repo, tmp_path / "unused-home", "try-repo", str(hooks_repo), "smt-check", "--all-files"
    )
    elapsed = time.perf_counter() - started
    print(
        f"pre-commit try-repo smt-check (fresh hook environment + check of {len(MODELS)} models): {elapsed:.1f}s"
    )
    assert result.code == 0, result
    assert "Installing environment" in result.out
    assert "smt check (generated/ in sync" in result.out and "Passed" in result.out
    # The time is printed, not asserted: on a shared machine it measures the load (67 s once under load 9).


def test_check_hook_blocks_a_commit_whose_generated_code_is_stale(
    hooks_repo: Path, pre_commit_home: Path, tmp_path: Path
) -> None:
    repo = monorepo(hooks_repo, tmp_path / "mono")
    started = time.perf_counter()
    use_hooks(repo, hooks_repo, pre_commit_home, "smt-check")
    assert pre_commit(repo, pre_commit_home, "install-hooks").code == 0
    print(f"pre-commit install-hooks (smt hook environment): {time.perf_counter() - started:.1f}s")
    assert not list(pre_commit_home.glob("repo*/py_env-*/lib/python*/site-packages/torch"))
    assert list(pre_commit_home.glob("repo*/py_env-*/lib/python*/site-packages/libcst"))

    change_template(repo)
    blocked = commit_with_hooks(repo, pre_commit_home, "template change without regenerating")
    assert blocked.code != 0
    for model in MODELS:
        assert f"generated/{model}/{model}/model.py: modified" in blocked.out
    assert "then run `smt generate`" in blocked.out
    assert git(repo, "rev-list", "--count", "HEAD").out.strip() == "3"  # nothing committed

    git(repo, "reset", "-q", "--hard")
    (repo / "NOTES.md").write_text("not part of generated/\n")
    git(repo, "add", "NOTES.md")
    assert commit_with_hooks(repo, pre_commit_home, "unrelated change").code == 0


def test_generate_hook_regenerates_and_fails_until_restaged(
    hooks_repo: Path, pre_commit_home: Path, tmp_path: Path
) -> None:
    repo = monorepo(hooks_repo, tmp_path / "mono")
    use_hooks(repo, hooks_repo, pre_commit_home, "smt-generate")
    new_line = change_template(repo)

    first = commit_with_hooks(repo, pre_commit_home, "template change")
    assert first.code != 0
    assert "regenerate: rewrote generated/" in first.out and "git add generated/" in first.out
    for model in MODELS:
        assert new_line in (repo / "generated" / model / model / "model.py").read_text()
    unstaged = git(repo, "diff", "--name-only").out.split()
    assert sorted(unstaged) == sorted(f"generated/{model}/{model}/model.py" for model in MODELS)

    git(repo, "add", "generated")
    second = commit_with_hooks(repo, pre_commit_home, "template change, regenerated")
    assert second.code == 0, second
    assert not git(repo, "status", "--porcelain").out.strip()


def _model_repo(hooks_repo: Path, tmp_path: Path) -> Path:
    spec = write_spec(tmp_path / "spec.yml", spec_of(hooks_repo, "feed_ctr"))
    repo = tmp_path / "feed_ctr"
    copier(
        tmp_path,
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        "--vcs-ref",
        "v0.1.0",
        "--data-file",
        str(spec),
        str(hooks_repo),
        str(repo),
    )
    assert (repo / ANSWERS).is_file()
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "model repo from SMT v0.1.0")
    return repo


def test_model_repo_hook_fails_on_conflict_markers_and_stays_offline(
    hooks_repo: Path, pre_commit_home: Path, tmp_path: Path
) -> None:
    """The default hook never contacts the SMT repo (here: moved out of reach after the hook was
    installed) and blocks a half-resolved update; the time of each commit is printed."""
    repo = _model_repo(hooks_repo, tmp_path)
    use_hooks(repo, hooks_repo, pre_commit_home, "smt-model-repo")
    assert pre_commit(repo, pre_commit_home, "install-hooks").code == 0
    answers = repo / ANSWERS
    answers.write_text(answers.read_text().replace(str(hooks_repo), str(tmp_path / "smt-out-of-reach")))
    git(repo, "add", "-A")

    times = []
    for number in range(3):
        (repo / "NOTES.md").write_text(f"note {number}\n")
        git(repo, "add", "NOTES.md")
        started = time.perf_counter()
        clean = commit_with_hooks(repo, pre_commit_home, f"note {number}")
        times.append(time.perf_counter() - started)
        assert clean.code == 0, clean
        assert "conflicts: none" in clean.out
        assert not any(words in clean.out for words in ("update check", "update available", "up to date"))
    print(f"git commit with the smt-model-repo hook (offline): {', '.join(f'{t:.2f}' for t in times)} s")

    train = repo / "feed_ctr" / "train.py"
    lines = train.read_text().splitlines(keepends=True)
    lines[10:10] = [
        "<<<<<<< before updating\n",
        "LR = 0.1\n",
        "=======\n",
        "LR = 0.2\n",
        ">>>>>>> after updating\n",
    ]
    train.write_text("".join(lines))
    git(repo, "add", "-A")
    blocked = commit_with_hooks(repo, pre_commit_home, "half-resolved update")
    assert blocked.code != 0
    assert "feed_ctr/train.py:11: leftover conflict marker '<<<<<<< before updating'" in blocked.out
    assert "feed_ctr/train.py:15: leftover conflict marker '>>>>>>> after updating'" in blocked.out


def test_model_repo_hook_reports_updates_when_asked(
    hooks_repo: Path, pre_commit_home: Path, tmp_path: Path
) -> None:
    repo = _model_repo(hooks_repo, tmp_path)
    use_hooks(repo, hooks_repo, pre_commit_home, "smt-model-repo", args=["--check-update"])
    clean = pre_commit(repo, pre_commit_home, "run", "smt-model-repo", "--all-files")
    assert clean.code == 0, clean
    assert "conflicts: none" in clean.out
    assert "update available: SMT template 0.2.0 (this repo is on 0.1.0)" in clean.out
