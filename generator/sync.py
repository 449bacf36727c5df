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


STAGING_SUFFIX = ".smt-new"
BACKUP_SUFFIX = ".smt-old"
# What a swap carries from the old folder to the new one: paths smt does not own. Generated files
# and the inputs are smt's (rewritten from the render and the spec); these are the user's.
PRESERVED = frozenset({RUNS_DIR, ".smt"})


def swap_folders(directory: Path) -> tuple[Path, Path]:
    """(staging, backup) of a model folder: ``generated/.NAME.smt-new`` and ``.NAME.smt-old``."""
    return directory.parent / f".{directory.name}{STAGING_SUFFIX}", directory.parent / f".{directory.name}{BACKUP_SUFFIX}"


def _preserved_paths(folder: Path) -> list[Path]:
    """Paths under ``folder`` smt does not own (training runs, tools' state), outermost only."""
    found = []
    for current, dirs, _ in os.walk(folder):
        for name in list(dirs):
            if name in PRESERVED:
                found.append(Path(current) / name)
                dirs.remove(name)
    return sorted(found)


def _carry_over(backup: Path, directory: Path) -> None:
    """Move every preserved path of ``backup`` to the same place in ``directory`` (idempotent)."""
    for source in _preserved_paths(backup):
        target = directory / source.relative_to(backup)
        if target.exists():  # an earlier, interrupted carry-over got this far: keep both
            index = 1
            while target.with_name(f"{target.name}.recovered-{index}").exists():
                index += 1
            target = target.with_name(f"{target.name}.recovered-{index}")
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)


def _remove_backup(backup: Path) -> None:
    """Delete the old folder, which by now holds only smt's own files (and tool caches)."""
    if _preserved_paths(backup):
        raise OSError(f"{backup} still holds runs or tool state; not deleting it")
    shutil.rmtree(backup)


def recover_swap(directory: Path) -> str | None:
    """Finish or undo an interrupted ``write_tree`` of ``directory``; a one-line notice, or None.

    The protocol, step by step (``write_tree``), and what each interrupted state means:

    1. build ``.NAME.smt-new`` (the complete new folder) next to ``NAME``
       -> staging only: the old folder is intact; staging is deleted (rolled back).
    2. rename ``NAME`` to ``.NAME.smt-old``
       -> backup and staging, no ``NAME``: the backup is renamed back (rolled back).
    3. rename ``.NAME.smt-new`` to ``NAME``
    4. move runs and tool state from ``.NAME.smt-old`` into ``NAME``
    5. delete ``.NAME.smt-old``
       -> backup and ``NAME``: steps 4 and 5 are completed (the new folder stays).
    Staging only ever holds smt's own files; nothing preserved is deleted at any step.
    """
    staging, backup = swap_folders(directory)
    name = directory.name
    if backup.exists() and directory.exists():
        if staging.exists():
            shutil.rmtree(staging)
        _carry_over(backup, directory)
        _remove_backup(backup)
        return f"{name}: completed an interrupted regeneration (new files kept, runs carried over)"
    if backup.exists():
        backup.rename(directory)
        if staging.exists():
            shutil.rmtree(staging)
        return f"{name}: rolled back an interrupted regeneration (old files restored)"
    if staging.exists():
        shutil.rmtree(staging)
        return f"{name}: rolled back an interrupted regeneration (unfinished new files removed)"
    return None


def recover_swaps(generated: Path) -> list[str]:
    """``recover_swap`` for every leftover swap folder under ``generated/``; the notices."""
    if not generated.is_dir():
        return []
    names = set()
    for path in generated.iterdir():
        for suffix in (STAGING_SUFFIX, BACKUP_SUFFIX):
            if path.name.startswith(".") and path.name.endswith(suffix) and path.is_dir():
                names.add(path.name[1 : -len(suffix)])
    return [notice for name in sorted(names) if (notice := recover_swap(generated / name))]


def write_tree(directory: Path, rendered: RenderedTree, answers_text: str | None = None) -> None:
    """Replace ``directory`` with ``rendered`` plus its inputs (spec, local techniques), all at once;
    training runs (``runs/``) and tool state (``.smt/``) move over to the new tree.

    The new tree is built next to the old one and swapped in with two renames (the protocol is in
    ``recover_swap``), so an interrupted write leaves either the old or the new folder, and the
    next ``smt generate``/``smt check`` finishes or undoes it. On an OSError (permission, disk
    full) this model is rolled back before the error propagates.
    """
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_swap(directory)  # a swap interrupted earlier is finished or undone first
    staging, backup = swap_folders(directory)
    try:
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
    except OSError:
        recover_swap(directory)
        raise
    if backup.exists():
        _carry_over(backup, directory)
        _remove_backup(backup)


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
