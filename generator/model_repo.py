"""Model repos: a model kept in its own git repository, created by ``copier copy`` from the SMT repo
and kept current by ``copier update``. Two things Copier leaves to us:

- ``copier update --conflict inline`` exits 0 even when conflicts remain: ``find_conflicts`` lists
  leftover conflict markers and paths still unmerged in git's index;
- ``check_update`` asks ``copier check-update`` (the copier installed next to this package) whether
  the SMT repo has tagged a newer release than the one recorded in ``.copier-answers.yml``.

Nothing here renders or needs PyTorch; errors are ``SmtError`` values with one line for people.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .engine import SmtError
from .fleet import ANSWERS_FILE

UPDATE_COMMAND = "copier update --trust --conflict inline"
CHECK_UPDATE_TIMEOUT_S = 60.0

# Conflict markers as git and `git merge-file` (used by `copier update`) write them: seven
# characters at the start of a line, then a space and a label or the end of the line. A separator
# ("=======", or "|||||||" in diff3 style) counts only inside a block, so Markdown and reST
# underlines made of "=" are never reported.
_START = re.compile(rb"<{7}(?: |\r?$)")
_END = re.compile(rb">{7}(?: |\r?$)")
_SEPARATOR = re.compile(rb"(?:={7}|\|{7})(?: |\r?$)")


@dataclass(frozen=True)
class Conflict:
    """One problem left by a merge: a marker line (``line`` set) or an unmerged path (``line`` None)."""

    path: str  # relative to the repository root, POSIX separators
    line: int | None
    text: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.text}"
        return f"{self.path}:{self.line}: {self.text}"


@dataclass(frozen=True)
class UpdateStatus:
    """What ``copier check-update`` says about a model repo."""

    available: bool
    current: str
    latest: str


def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SmtError("git is not installed; model repos are git repositories") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SmtError(f"{repo}: git {args[0]} failed ({detail[0]})")
    return proc.stdout


def repo_root(start: Path) -> Path:
    """The top folder of the git work tree holding ``start``; SmtError outside one."""
    if not start.is_dir():
        raise SmtError(f"{start}: no such folder; give the folder of a model repository")
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise SmtError("git is not installed; model repos are git repositories") from None
    if proc.returncode != 0:
        raise SmtError(f"{start.resolve()}: not inside a git work tree; run this in a model repo")
    return Path(proc.stdout.strip())


def unmerged_paths(repo: Path) -> list[str]:
    """Paths with unmerged index entries (stages 1-3), as ``copier update`` leaves conflicted files."""
    paths = []
    for entry in _git(repo, "ls-files", "--unmerged", "-z").split("\0"):
        if "\t" in entry:
            path = entry.split("\t", 1)[1]
            if path not in paths:
                paths.append(path)
    return paths


def marker_lines(data: bytes) -> list[tuple[int, str]]:
    """(line number, marker line) for each conflict marker in a file's bytes; [] for binary data."""
    if b"\0" in data:
        return []
    found = []
    inside = False
    for number, line in enumerate(data.split(b"\n"), 1):
        if _START.match(line):
            inside = True
        elif _END.match(line):
            inside = False
        elif not (inside and _SEPARATOR.match(line)):
            continue
        found.append((number, line.rstrip(b"\r").decode("utf-8", "replace")))
    return found


def find_conflicts(start: Path) -> list[Conflict]:
    """Every leftover of a merge in the git repo holding ``start``: unmerged paths first, then each
    conflict marker line in its tracked and untracked (not ignored) files."""
    repo = repo_root(start)
    unmerged = unmerged_paths(repo)
    conflicts = [
        Conflict(path, None, "unmerged (resolve the markers, then `git add` it)") for path in unmerged
    ]
    listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for path in sorted(dict.fromkeys(filter(None, listed))):
        file = repo / path
        if file.is_symlink() or not file.is_file():
            continue
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise SmtError(f"{path}: cannot read it ({exc.strerror})") from None
        conflicts += [
            Conflict(path, number, f"leftover conflict marker {text!r}")
            for number, text in marker_lines(data)
        ]
    return conflicts


def check_update(start: Path, timeout: float = CHECK_UPDATE_TIMEOUT_S) -> UpdateStatus:
    """Ask ``copier check-update`` whether the SMT repo recorded in the answers file has a newer release.

    The answers file must sit at the top of the git repo holding ``start`` (where ``copier copy``
    put it). Raises SmtError when it is missing or Copier cannot tell (e.g. the SMT repo is out of reach).
    """
    repo = repo_root(start)
    if not (repo / ANSWERS_FILE).is_file():
        raise SmtError(f"{repo}: no {ANSWERS_FILE}; not a model repo created with `copier copy`")
    command = [sys.executable, "-m", "copier", "check-update", "--output-format", "json", str(repo)]
    try:
        # Never wait for a password prompt (e.g. inside a commit hook): fail and say why instead.
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        proc = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SmtError(f"copier check-update took over {timeout:.0f}s (is the SMT repo reachable?)") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise SmtError(f"copier check-update failed: {detail[0]}")
    try:
        data = json.loads(lines[-1])
        return UpdateStatus(
            bool(data["update_available"]), str(data["current_version"]), str(data["latest_version"])
        )
    except (ValueError, KeyError, TypeError):
        raise SmtError(f"copier check-update printed something unexpected: {lines[-1][:200]!r}") from None
