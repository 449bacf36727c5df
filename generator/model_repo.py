"""Model repos: a model kept in its own git repository, created by ``copier copy`` from the SMT repo
and kept current by ``copier update``. What Copier leaves to us:

- ``copier update --conflict inline`` exits 0 even when conflicts remain: ``find_conflicts`` lists
  leftover conflict markers and paths still unmerged in git's index;
- ``check_update`` asks ``copier check-update`` (the copier installed next to this package) whether
  the SMT repo has tagged a newer release than the one recorded in ``.copier-answers.yml``;
- ``smt adopt``/``smt drop`` in a model repo: ``plan_technique_change`` edits the techniques answer
  (the whole list, so nobody restates it by hand), ``release_evidence`` reads the qualification
  record at the repo's release (the gate), and ``update_answers`` runs ``copier update`` at the
  current release with the new list.

Nothing here renders or needs PyTorch; errors are ``SmtError`` values with one line for people.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .engine import SmtError
from .engine.paths import TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import ANSWERS_FILE, ModelAnswers
from .qualification.gate import RECORDS_DIR, Evidence, change_label

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


# --- smt adopt / smt drop in a model repo ------------------------------------------------------


def model_repo_of(start: Path) -> Path | None:
    """The top of the git work tree holding ``start`` when it is a model repo (its answers file
    names the SMT repo it came from), else None."""
    try:
        repo = repo_root(start)
    except SmtError:
        return None
    answers = repo / ANSWERS_FILE
    if not answers.is_file():
        return None
    try:
        data = yaml.safe_load(answers.read_text())
    except yaml.YAMLError:
        return None
    return repo if isinstance(data, dict) and data.get("_src_path") else None


def local_source(src: str) -> Path | None:
    """The folder of an SMT repo given as a path, ``file://`` or ``git+file://`` URL; None for a remote URL."""
    path = src.removeprefix("git+").removeprefix("file://")
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() and folder.is_dir() else None


def release_file(src: str, ref: str, path: str) -> str | None:
    """The text of ``path`` in the SMT repo ``src`` at release ``ref`` (None when it has no such
    file); a remote repo is fetched shallowly. Raises SmtError when the release is out of reach."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    folder = local_source(src)
    with tempfile.TemporaryDirectory(prefix="smt-release-") as tmp:
        if folder is None:
            url = src.removeprefix("git+")
            clone = subprocess.run(
                ["git", "clone", "--quiet", "--bare", "--depth", "1", "--branch", ref, url, tmp],
                capture_output=True, text=True, env=env, check=False,
            )
            if clone.returncode != 0:
                detail = clone.stderr.strip().splitlines()[-1:] or ["no output"]
                raise SmtError(f"{src} at {ref}: cannot fetch the SMT release this repo is on ({detail[0]})")
            folder = Path(tmp)
        shown = subprocess.run(["git", "-C", str(folder), "show", f"{ref}:{path}"], capture_output=True, text=True, env=env, check=False)
    if shown.returncode == 0:
        return shown.stdout
    if "exists on disk, but not in" in shown.stderr or "does not exist in" in shown.stderr:
        return None
    detail = shown.stderr.strip().splitlines()[-1:] or ["no output"]
    raise SmtError(f"{src} at {ref}: cannot read {path} of the SMT release this repo is on ({detail[0]})")


@dataclass(frozen=True)
class TechniqueChange:
    """A model repo's techniques answer before and after ``smt adopt``/``smt drop``."""

    repo: Path
    model: str
    src: str
    release: str  # the answers file's _commit: the SMT release the repo is on
    old: list[dict[str, Any]]
    new: list[dict[str, Any]]

    def params_of(self, technique: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The params the answer gives ``technique`` before and after, when it used it before and
        still does (a change of params), else None."""
        before = next((use for use in self.old if use["name"] == technique), None)
        after = next((use for use in self.new if use["name"] == technique), None)
        if before is None or after is None:
            return None
        return dict(before.get("params") or {}), dict(after.get("params") or {})


def plan_technique_change(repo: Path, technique: str, params: dict[str, Any], drop: bool) -> TechniqueChange:
    """The techniques answer with ``technique`` (and ``params``) added, or removed; for a
    technique it already uses, the params named change and the others keep their values (as
    ``adoption.plan_adoption`` does)."""
    answers = yaml.safe_load((repo / ANSWERS_FILE).read_text()) or {}
    model = str(answers.get("model_name") or repo.name)
    spec = ModelAnswers(model, answers)
    merged = {**spec.params_of(technique), **params}
    changed = spec.without_technique(technique) if drop else spec.with_technique(technique, merged)
    return TechniqueChange(repo, model, str(answers["_src_path"]), str(answers.get("_commit") or "HEAD"), spec.uses, changed.uses)


def release_evidence(change: TechniqueChange, technique: str, params: dict[str, Any]) -> Evidence:
    """What the SMT release the repo is on records about ``technique`` with ``params`` (the gate)."""
    meta = release_file(change.src, change.release, f"{TECHNIQUES_DIR}/{technique}/technique.yml")
    if meta is None:
        raise SmtError(f"{technique}: unknown technique at SMT release {change.release} (see `smt techniques` there)")
    version = str((yaml.safe_load(meta) or {}).get("version", ""))
    template_version = (release_file(change.src, change.release, f"{TEMPLATE_DIR}/VERSION") or "").strip()
    label = change_label(technique, params)
    text = release_file(change.src, change.release, f"{RECORDS_DIR.as_posix()}/{technique}.json")
    runs = (json.loads(text) if text else {}).get(f"{version}@template-{template_version}") or {}
    record = runs.get(label)
    return Evidence(label, technique, dict(params), version, template_version, record if isinstance(record, dict) else None)


def update_answers(change: TechniqueChange) -> list[Conflict]:
    """``copier update`` at the repo's current release with the new techniques answer (the same
    merge a release update does, so local edits stay); the conflicts it left. Refuses a dirty work
    tree before anything runs, as Copier does."""
    dirty = _git(change.repo, "status", "--porcelain").splitlines()
    if dirty:
        raise SmtError(f"{dirty[0][3:]}: uncommitted changes; `copier update` needs a clean work tree: commit or stash them first")
    command = [
        sys.executable, "-m", "copier", "update", "--trust", "--defaults", "--conflict", "inline", "--quiet",
        "--vcs-ref=:current:", "--data", f"techniques={json.dumps(change.new)}",
    ]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(command, cwd=change.repo, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        last = lines[-1].removeprefix("ValueError: ") if lines else f"exit code {proc.returncode}"
        if last.startswith("Validation error for question 'techniques': "):  # the release's own validator
            raise SmtError(f"{change.model}: {last.split(': ', 1)[1]}; nothing changed")
        raise SmtError(f"copier update failed: {last}")
    return find_conflicts(change.repo)
