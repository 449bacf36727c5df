"""Template releases are git tags: ``v<VERSION>`` (annotated) on the commit that sets
``template_repo/VERSION``. Copier takes the highest such tag for ``copier copy`` and ``copier
update``, records it as a model repo's ``_commit`` and shows it as the template's version.

``smt promote`` and ``smt tune --apply`` make a release: before writing they check that one can be
made (``check_releasable``: a git work tree, a committer identity, no such tag yet, no uncommitted
edits in the files they will write), then commit exactly those files and tag the commit
(``commit_and_tag``). Outside a git work tree they write the files and say so (no tag).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .engine import SmtError


def tag_name(version: str) -> str:
    return f"v{version}"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SmtError("git is not installed; a template release is a git tag") from None


def in_git(root: Path) -> bool:
    """Whether ``root`` is the top of a git work tree with at least one commit."""
    top = _git(root, "rev-parse", "--show-toplevel")
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve() and _git(root, "rev-parse", "--verify", "--quiet", "HEAD").returncode == 0


def check_releasable(root: Path, version: str, paths: list[str]) -> None:
    """Raise SmtError (before anything is written) when release ``version`` cannot be committed
    and tagged in the git work tree ``root``; ``paths`` are the files and folders it will write."""
    tag = tag_name(version)
    if _git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}").returncode == 0:
        raise SmtError(f"tag {tag} already exists: template_repo/VERSION is behind the releases; set it to the latest release's version, or delete the tag if it was never published")
    if _git(root, "var", "GIT_COMMITTER_IDENT").returncode != 0:
        raise SmtError("git has no committer identity here; set user.name and user.email (git config), or pass --no-release")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *paths).stdout.splitlines()
    if dirty:
        path = dirty[0][3:]
        raise SmtError(f"{path}: uncommitted changes; the release commit would take them in: commit or stash them first, or pass --no-release")


def commit_and_tag(root: Path, version: str, paths: list[str], message: str) -> str:
    """Commit exactly ``paths`` (other staged changes stay staged) and tag the commit ``v<version>``
    with ``message``; return the tag. Raises SmtError when git refuses."""
    tag = tag_name(version)
    for args in (
        ["add", "-A", "--", *paths],
        ["commit", "--quiet", "--no-verify", "-m", message, "--", *paths],
        ["tag", "-a", tag, "-m", message],
    ):
        done = _git(root, *args)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise SmtError(f"git {args[0]} failed ({detail[0]}); the release's files are written: commit them and `git tag -a {tag}` yourself")
    return tag
