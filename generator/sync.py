"""Compare a model's generated folder with a fresh render, and replace it atomically."""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .engine.paths import LOCAL_TECHNIQUES_DIR
from .fleet import ANSWERS_FILE
from .render import RenderedTree

# Training runs of `python -m <model> train` (checkpoints, metrics.json) by default; kept as they are
# by `smt generate`, never part of the generated code.
RUNS_DIR = "runs"
# Left behind by running a model's tests or tools; never part of the generated code.
IGNORED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".smt", RUNS_DIR})
# A model's inputs, kept as they are by `smt generate`: its spec and its own techniques.
INPUTS = (ANSWERS_FILE, LOCAL_TECHNIQUES_DIR)


@dataclass(frozen=True)
class FileChange:
    """One file that differs between a model's folder and its fresh render."""

    path: str
    kind: str  # "added", "modified" or "removed"
    old: str | None
    new: str | None

    def unified_diff(self, model: str) -> str:
        name = f"generated/{model}/{self.path}"
        lines = difflib.unified_diff(
            (self.old or "").splitlines(keepends=True),
            (self.new or "").splitlines(keepends=True),
            fromfile=f"a/{name}" if self.old is not None else "/dev/null",
            tofile=f"b/{name}" if self.new is not None else "/dev/null",
        )
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _ignored(relative: Path) -> bool:
    return any(part in IGNORED_PARTS for part in relative.parts) or relative.suffix == ".pyc"


def read_tree(directory: Path) -> RenderedTree:
    """A model folder's generated files (the spec and tool droppings excluded)."""
    if not directory.is_dir():
        return {}
    tree = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not _ignored(relative) and relative.parts[0] not in INPUTS:
            try:
                tree[relative.as_posix()] = path.read_text()
            except UnicodeDecodeError:
                tree[relative.as_posix()] = "<binary file>"
    return tree


class LinkedFolder(Exception):
    """A model folder holds a link to a folder: ``tree_files`` cannot vouch for what read_tree sees."""


def tree_files(directory: Path) -> Iterator[tuple[str, str]]:
    """(relative path, path) of every file ``read_tree`` would read, in no particular order.

    Raises LinkedFolder on a symbolic link to a folder (callers then compare with ``read_tree``).
    Plain ``os.scandir``: a thousand model folders are walked in a fraction of a second.
    """
    if not directory.is_dir():
        return
    stack = [("", str(directory))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name in IGNORED_PARTS or (not prefix and name in INPUTS):
                    continue
                if entry.is_dir():
                    if entry.is_symlink():
                        raise LinkedFolder(entry.path)
                    stack.append((f"{prefix}{name}/", entry.path))
                elif entry.is_file() and not name.endswith(".pyc"):
                    yield prefix + name, entry.path


def file_digest(path: Path | str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return "<unreadable>"


def digest_tree(directory: Path) -> dict[str, str]:
    """SHA-256 of the bytes of every file ``read_tree`` would read."""
    return {relative: file_digest(path) for relative, path in tree_files(directory)}


def compare(current: RenderedTree, rendered: RenderedTree) -> list[FileChange]:
    """The files to add, modify or remove to turn ``current`` into ``rendered``, in path order."""
    changes = []
    for path in sorted(set(current) | set(rendered)):
        old, new = current.get(path), rendered.get(path)
        if old == new:
            continue
        kind = "added" if old is None else "removed" if new is None else "modified"
        changes.append(FileChange(path, kind, old, new))
    return changes


def write_tree(directory: Path, rendered: RenderedTree, answers_text: str | None = None) -> None:
    """Replace ``directory`` with ``rendered`` plus its inputs (spec, local techniques), all at once;
    training runs in ``directory/runs`` move over to the new tree.

    The new tree is built next to the old one and swapped in with two renames, so an interrupted
    write leaves either the old or the new folder, never a mix. ``answers_text`` replaces the spec;
    by default the existing spec is kept byte for byte.
    """
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{directory.name}.smt-new"
    backup = parent / f".{directory.name}.smt-old"
    for leftover in (staging, backup):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    spec = answers_text if answers_text is not None else (directory / ANSWERS_FILE).read_text()
    (staging / ANSWERS_FILE).write_text(spec)
    if (directory / LOCAL_TECHNIQUES_DIR).is_dir():
        shutil.copytree(directory / LOCAL_TECHNIQUES_DIR, staging / LOCAL_TECHNIQUES_DIR)
    for relative, text in rendered.items():
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if directory.exists():
        directory.rename(backup)
    staging.rename(directory)
    if (backup / RUNS_DIR).is_dir():
        (backup / RUNS_DIR).rename(directory / RUNS_DIR)
    if backup.exists():
        shutil.rmtree(backup)


def count_lines(changes: Iterable[FileChange]) -> tuple[int, int]:
    """(lines added, lines removed) over ``changes``."""
    added = removed = 0
    for change in changes:
        diff = difflib.unified_diff((change.old or "").splitlines(), (change.new or "").splitlines(), n=0, lineterm="")
        for line in diff:
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
    return added, removed
