"""The SMT repository a command runs in: its fleet read through the render cache, recovery of an
interrupted regeneration, writing a model, rendering the fleet with progress, and what several
command groups share (technique users, report formats)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .. import engine, review
from ..cache import RenderCache
from ..engine import SmtError
from ..fleet import GENERATED_DIR, Fleet, ModelEntry, find_root
from ..lock import fleet_lock, lock_if_free
from ..regeneration import default_jobs, fleet_changes
from ..render import RenderedTree
from ..sync import FileChange, recover_swaps, write_tree
from ._app import say

_CACHES: dict[Path, RenderCache] = {}


def open_fleet(no_cache: bool = False) -> Fleet:
    """The fleet of the current SMT repository, reading specs through the render cache, which is
    also attached to the engine (``--no-cache`` or SMT_NO_CACHE=1: an always-empty cache)."""
    root = find_root()
    cache = _CACHES[root] = RenderCache(root, enabled=not no_cache and not os.environ.get("SMT_NO_CACHE"))
    engine.use_store(cache)
    return Fleet(root, cache.load_answers)


def _cache(fleet: Fleet) -> RenderCache:
    return _CACHES.get(fleet.root) or RenderCache(fleet.root, enabled=not os.environ.get("SMT_NO_CACHE"))


class _ProgressBar:
    """A progress bar on stderr while models render, only when stderr is a terminal."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from rich.progress import Progress  # noqa: PLC0415 - only for terminals

            from rich.console import Console  # noqa: PLC0415

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"{self.verb} models", total=total)
        self.bar.update(self.task, completed=done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """The writer lock of ``generated/``, saying on stderr whom it waits for when another holds it."""
    with fleet_lock(root, waiting=say):
        yield


def recover(fleet: Fleet) -> None:
    """Finish or undo swaps a killed writer left behind (only when no writer is running now)."""
    with lock_if_free(fleet.root) as free:
        if free:
            try:
                notices = recover_swaps(fleet.directory)
            except OSError as exc:
                raise SmtError(f"{GENERATED_DIR}/: cannot recover an interrupted regeneration ({exc}); fix the cause and run the command again") from None
            for notice in notices:
                say(f"note: {notice}")


def write(entry_name: str, directory: Path, tree: RenderedTree, answers_text: str | None = None) -> None:
    """write_tree, with an OS error (permission, disk full) as one line naming the model."""
    try:
        write_tree(directory, tree, answers_text)
    except OSError as exc:
        raise SmtError(
            f"{entry_name}: cannot write {GENERATED_DIR}/{entry_name} ({exc}); it was left as it was, models before it "
            f"were written; fix the cause and run the command again"
        ) from None


def changes(fleet: Fleet, names: list[str] | None, verb: str, jobs: int | None = None) -> list[tuple[ModelEntry, RenderedTree | None, list[FileChange]]]:
    """Render the chosen models (all by default) and compare them with generated/, saying how long it took."""
    recover(fleet)
    entries = fleet.models(names)
    if not entries:
        raise SmtError(f"no models in {GENERATED_DIR}/; create one with `smt new NAME --data-file SPEC.yml`")
    bar = _ProgressBar(verb)
    try:
        run = fleet_changes(fleet.root, entries, jobs or default_jobs(), _cache(fleet), bar)
    finally:
        bar.close()
    say(
        f"{verb} {len(entries)} model(s) in {run.seconds:.1f}s: {run.rendered} rendered "
        f"({run.jobs} job(s)), {run.cached} unchanged since their last render (cache)"
    )
    return [(result.entry, result.tree, result.changes) for result in run.results]


def technique_users(fleet: Fleet, names: list[str]) -> dict[str, list[str]]:
    """For each technique name, the models whose spec uses it."""
    users: dict[str, list[str]] = {name: [] for name in names}
    for entry in fleet.models():
        for name in entry.spec.technique_names:
            if name in users:
                users[name].append(entry.name)
    return users


def report_formatter(name: str) -> Callable[..., str]:
    """The review report formatter called ``name`` (the --format option)."""
    if name not in review.FORMATTERS:
        raise SmtError(f"--format {name!r}: choose one of {', '.join(review.FORMATTERS)}")
    return review.FORMATTERS[name]
