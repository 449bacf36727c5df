"""A fleet's regeneration: which models need rendering, rendering them in parallel, their changes.

A model whose inputs have a cache entry (``cache.RenderCache.model_key``) and whose folder's files
hash to it is in sync and is not rendered; every other model is rendered, in a pool of ``jobs``
processes when there are several, and compared with its folder. Rendering is a pure function of
the inputs, so the result does not depend on ``jobs`` or on what the cache holds.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import engine
from .cache import RenderCache
from .engine import SmtError
from .fleet import ModelEntry
from .render import RenderedTree, render_model  # light: Copier and the engine load on first render
from .sync import FileChange, compare, read_tree

Progress = Callable[[int, int], None]  # (models rendered so far, models to render)
MIN_MODELS_PER_POOL = 4  # fewer than this render faster in-process than a pool starts


@dataclass
class ModelResult:
    """One model's outcome: its fresh render (None when the cache showed it in sync) and changes."""

    entry: ModelEntry
    tree: RenderedTree | None
    changes: list[FileChange]


@dataclass
class FleetRun:
    results: list[ModelResult] = field(default_factory=list)
    cached: int = 0  # in sync by the cache, not rendered
    rendered: int = 0
    jobs: int = 1
    seconds: float = 0.0


def default_jobs() -> int:
    """One process per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_WORKER: dict[str, object] = {}


def _start_worker(root: str, cache_enabled: bool) -> None:
    _WORKER["root"] = Path(root)
    engine.use_store(RenderCache(Path(root), cache_enabled))


def _render_in_worker(job: tuple[str, dict, str]) -> tuple[str, RenderedTree | str]:
    name, answers, directory = job
    try:
        return "ok", render_model(_WORKER["root"], answers, name, Path(directory))  # type: ignore[arg-type]
    except SmtError as error:
        return "error", str(error)


def render_models(
    root: Path, entries: Sequence[ModelEntry], jobs: int, cache: RenderCache, progress: Progress | None = None
) -> list[RenderedTree]:
    """Every entry's fresh render, in order; raise the first (in order) SmtError after all finish."""
    engine.use_store(cache)
    total = len(entries)
    if jobs <= 1 or total < MIN_MODELS_PER_POOL:
        trees = []
        for index, entry in enumerate(entries, 1):
            trees.append(render_model(root, entry.answers, entry.name, entry.directory))
            if progress:
                progress(index, total)
        return trees
    # fork: workers start with this process's imports and memo; nothing here runs threads yet
    context = multiprocessing.get_context("fork")
    outcomes: list[tuple[str, RenderedTree | str]] = []
    with ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=context, initializer=_start_worker, initargs=(str(root), cache.enabled)) as pool:
        chunk = max(1, min(16, total // (jobs * 8)))
        for index, outcome in enumerate(pool.map(_render_in_worker, [(e.name, e.answers, str(e.directory)) for e in entries], chunksize=chunk), 1):
            outcomes.append(outcome)
            if progress:
                progress(index, total)
    for status, value in outcomes:
        if status == "error":
            raise SmtError(str(value))
    return [value for _, value in outcomes]  # type: ignore[misc]


def fleet_changes(
    root: Path, entries: Sequence[ModelEntry], jobs: int, cache: RenderCache, progress: Progress | None = None
) -> FleetRun:
    """Each entry's changes against a fresh regeneration, rendering only what the cache cannot vouch for."""
    started = time.perf_counter()
    run = FleetRun(jobs=jobs)
    by_name: dict[str, ModelResult] = {}
    pending: list[tuple[ModelEntry, str]] = []
    for entry in entries:
        key = cache.model_key(entry.name, entry.directory, entry.answers)
        if cache.in_sync(entry.directory, key):
            by_name[entry.name] = ModelResult(entry, None, [])
            run.cached += 1
        else:
            pending.append((entry, key))
    trees = render_models(root, [entry for entry, _ in pending], jobs, cache, progress)
    for (entry, key), tree in zip(pending, trees):
        cache.put_model(key, tree)
        by_name[entry.name] = ModelResult(entry, tree, compare(read_tree(entry.directory), tree))
    cache.flush()
    run.rendered = len(pending)
    run.results = [by_name[entry.name] for entry in entries]
    run.seconds = time.perf_counter() - started
    return run
