"""The harness's own trials (teams' candidates, the final evaluation) on the generator's trial path.

A trial is what ``smt qualify`` runs: ``python -m MODEL train --seed S --steps N`` in a rendered
folder, cached in ``.smt/trials/<key>/threads-1/`` under the key of (rendered code, runtime,
data, seed, steps). Every trial here trains with one torch thread, as the ``smt`` commands of the
experiment do (``SMT_THREADS=1``), so both draw on one cache. The calls into ``generator.trials``
adapt to its signature (the runtime argument came with runtime 0.6.0).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator import trials
from generator.engine import SmtError
from generator.impact import measure_folders
from generator.render import render_model
from generator.sync import write_tree

THREADS = 1


@dataclass(frozen=True)
class Rendered:
    """One spec rendered into a folder, ready to train."""

    model: str
    folder: Path
    tree_key: Callable[[int, int], str]
    runtime: Path | None


def runtime_of(root: Path) -> Path | None:
    """The runtime folder trials of the checkout at root import (None before runtime 0.6.0)."""
    source = getattr(trials, "runtime_source", None)
    return source(root) if source else None


def render(root: Path, model: str, answers: dict[str, Any], folder: Path) -> Rendered:
    """Render ``answers`` with the workspace's template and techniques into ``folder`` (raises SmtError)."""
    tree = render_model(root, answers, model, root / "generated" / model)
    write_tree(folder, tree, yaml.safe_dump(answers, sort_keys=False))  # always: the key names this tree, so the folder must hold it
    runtime = runtime_of(root)
    takes_runtime = "runtime" in inspect.signature(trials.trial_key).parameters

    def key(seed: int, steps: int) -> str:
        if takes_runtime:
            return trials.trial_key(tree, (), seed, steps, runtime)
        return trials.trial_key(tree, (), seed, steps)

    return Rendered(model, folder, key, runtime)


def trial(rendered: Rendered, seed: int, steps: int, side: str) -> Any:
    """The generator's Trial for one seed of a rendered spec."""
    extra = {"runtime": rendered.runtime} if "runtime" in {f.name for f in dataclasses.fields(trials.Trial)} else {}
    return trials.Trial(rendered.model, side, rendered.folder, seed, steps, rendered.tree_key(seed, steps), (), **extra)


@dataclass
class Pool:
    """Runs trials ``jobs`` at a time and remembers how long the fresh ones took."""

    root: Path
    jobs: int
    seconds: dict[str, float]  # key -> wall seconds of its first training (kept across runs)
    on_done: Callable[[int, int], None] | None = None  # (fresh, cached) after each batch

    def run(self, items: list[Any]) -> dict[str, dict[str, Any] | Exception]:
        """Metrics (or the failure) of every trial, by key; cached ones are read, the rest trained."""
        unique = list({t.key: t for t in items}.values())
        results: dict[str, dict[str, Any] | Exception] = {}
        pending = []
        for t in unique:
            hit = trials.cached(self.root, t.key, THREADS)
            if hit is not None:
                results[t.key] = hit
            else:
                pending.append(t)

        def one(t: Any) -> tuple[Any, dict[str, Any] | Exception, float]:
            started = time.perf_counter()
            try:
                return t, trials.run_trial(self.root, t, THREADS), time.perf_counter() - started
            except trials.TrialFailed as failure:
                return t, failure, time.perf_counter() - started

        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            for future in as_completed([pool.submit(one, t) for t in pending]):
                t, outcome, seconds = future.result()
                results[t.key] = outcome
                if not isinstance(outcome, Exception):
                    self.seconds.setdefault(t.key, round(seconds, 2))
                else:
                    print(f"  trial failed: {outcome}", file=sys.stderr)
        if self.on_done:
            self.on_done(len(pending), len(unique) - len(pending))
        return results


def capacity(folders: list[Path], doing: str, runtime: Path | None) -> dict[str, dict[str, float] | None]:
    """Parameters and MFLOPs per example of each rendered folder (one PyTorch process), or None for
    a model that does not build (then each is measured alone, so one failure spoils no other)."""
    try:
        return measure_folders(folders, doing, runtime)
    except SmtError:
        out: dict[str, dict[str, float] | None] = {}
        for folder in folders:
            try:
                out.update(measure_folders([folder], doing, runtime))
            except SmtError as error:
                print(f"  {folder.name}: does not build: {error}", file=sys.stderr)
                out[str(folder)] = None
        return out


def weighted_logloss(metrics: dict[str, Any] | Exception, weights: dict[str, float], split: str) -> float:
    """Objective-weighted logloss of one trial on ``split`` (nan for a failed or diverged trial)."""
    if isinstance(metrics, Exception):
        return math.nan
    total = sum(weights.values())
    value = sum(w / total * float(metrics["metrics"][split][name]["logloss"]) for name, w in weights.items())
    return value if math.isfinite(value) else math.nan


def objective_weights(spec: dict[str, Any]) -> dict[str, float]:
    return {o["name"]: float(o.get("weight", 1.0)) for o in spec["objectives"]}
