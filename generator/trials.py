"""Trials: one ordinary training run of a generated model, cached by what determines its result.

A trial is ``python -m MODEL train --seed S --steps N --run-dir D --no-progress`` in a subprocess,
in a rendered model folder, and its result is that run's ``metrics.json``. So a trial runs wherever
the model trains, and qualification measures exactly what a team would measure by hand.

A trial imports the runtime (``smt_runtime``) of the side it measures: the working tree's
``runtime/``, or for ``--against REF`` that ref's, put first on its PYTHONPATH, so a runtime change
is measured like a template change and an installed runtime of another checkout never stands in.

The cache key hashes the rendered code (every file's path and text), the runtime's code, the data
(the literal ``synthetic``, whose examples derive from config.py and the seed, or the bytes of the
model's data files), the seed and the steps. A finished trial's metrics.json lands in
``.smt/trials/<key>/threads-<T>/`` (git-ignored) atomically, so a rerun or an interrupted run
skips it. T is the torch thread count it ran with: sums split over more threads round
differently, so the same trial on 1 and 2 threads differs in the last digits (app_install's test
logloss by 0.06 %), and a baseline cached at one count must not be compared with a candidate
trained at another.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import SmtError
from .render import RenderedTree

CACHE_DIR = Path(".smt") / "trials"
RUNTIME_DIR = Path("runtime")  # the folder holding the smt_runtime package, in an SMT checkout
METRICS_FILE = "metrics.json"
DATA_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Trial:
    """One training run to do: a rendered model folder, a seed and a step budget."""

    model: str
    variant: str  # "baseline" or "candidate"
    folder: Path
    seed: int
    steps: int
    key: str
    data_files: tuple[Path, ...] = ()  # train, valid, test Parquet files, or () for synthetic data
    runtime: Path | None = None  # the folder holding smt_runtime for this side (None: a package that has none)


class TrialFailed(SmtError):
    """A trial's training process exited non-zero."""


def data_files(model_dir: Path) -> tuple[Path, ...]:
    """The model's own data (``<model>/data/{train,valid,test}.parquet``) when all three exist."""
    paths = tuple(model_dir / "data" / f"{split}.parquet" for split in DATA_SPLITS)
    return paths if all(path.is_file() for path in paths) else ()


def runtime_source(root: Path) -> Path | None:
    """The runtime folder of the SMT checkout at root, or None when it has none (before 0.6.0)."""
    folder = root / RUNTIME_DIR
    return folder if (folder / "smt_runtime" / "__init__.py").is_file() else None


_RUNTIME_DIGESTS: dict[tuple[str, float], str] = {}


def runtime_digest(runtime: Path | None) -> str:
    """sha256 of the runtime's package files (its code decides a trial's result as much as the model's)."""
    if runtime is None:
        return "none"
    package = runtime / "smt_runtime"
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    stamp = (str(package.resolve()), max((p.stat().st_mtime for p in files), default=0.0))
    if stamp not in _RUNTIME_DIGESTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
        _RUNTIME_DIGESTS[stamp] = digest.hexdigest()
    return _RUNTIME_DIGESTS[stamp]


def trial_key(tree: RenderedTree, data: tuple[Path, ...], seed: int, steps: int, runtime: Path | None = None) -> str:
    """sha256 of (rendered code, runtime code, data, seed, steps); equal keys and thread counts give
    equal metrics on one machine."""
    digest = hashlib.sha256()
    for path in sorted(tree):
        digest.update(path.encode() + b"\0" + tree[path].encode() + b"\0")
    digest.update(f"runtime={runtime_digest(runtime)}".encode())
    if data:
        for path in data:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    else:
        digest.update(b"synthetic")
    digest.update(f"seed={seed};steps={steps}".encode())
    return digest.hexdigest()[:32]


def threads_per_trial(jobs: int) -> int:
    """Torch threads for each of ``jobs`` parallel trials, so they never oversubscribe the CPUs."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def _entry(root: Path, key: str, threads: int) -> Path:
    """The cache folder of trial ``key`` run with ``threads`` torch threads."""
    return root / CACHE_DIR / key / f"threads-{threads}"


def cached(root: Path, key: str, threads: int) -> dict[str, Any] | None:
    """A finished trial's metrics when it ran with ``threads`` torch threads, or None."""
    path = _entry(root, key, threads) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn file from a killed run is a miss


def run_trial(root: Path, trial: Trial, threads: int) -> dict[str, Any]:
    """Run (or read from the cache) one trial and return its metrics.json."""
    hit = cached(root, trial.key, threads)
    if hit is not None:
        return hit
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(trial.folder), str(trial.runtime or ""), os.environ.get("PYTHONPATH", "")])
        ),
        "OMP_NUM_THREADS": str(threads),  # torch's intra-op thread count
        "MKL_NUM_THREADS": str(threads),
    }
    with tempfile.TemporaryDirectory(prefix="smt-trial-") as run_dir:
        command = [sys.executable, "-m", trial.model, "train", "--seed", str(trial.seed), "--steps", str(trial.steps), "--run-dir", run_dir, "--no-progress", "--device", "cpu"]
        for split, path in zip(DATA_SPLITS, trial.data_files):
            command += [f"--{split}", str(path)]
        proc = subprocess.run(command, cwd=trial.folder, env=env, capture_output=True, text=True)
        metrics_path = Path(run_dir) / METRICS_FILE
        if proc.returncode != 0 or not metrics_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise TrialFailed(f"{trial.model} ({trial.variant}, seed {trial.seed}): training failed: {tail[0]}")
        target = _entry(root, trial.key, threads)
        target.mkdir(parents=True, exist_ok=True)
        partial = target / (METRICS_FILE + ".part")
        shutil.copyfile(metrics_path, partial)
        os.replace(partial, target / METRICS_FILE)  # atomic: a killed run leaves no half-written hit
        return json.loads((target / METRICS_FILE).read_text())


class Progress:
    """A one-line progress bar on stderr (a line per trial when stderr is not a terminal)."""

    def __init__(self, total: int, cached_count: int) -> None:
        self.total, self.done, self.cached = total, cached_count, cached_count
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()
        if total:
            self._show(f"{cached_count} cached")

    def _show(self, note: str) -> None:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        line = f"trials [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {time.perf_counter() - self.started:5.0f}s {note}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def step(self, note: str) -> None:
        with self.lock:
            self.done += 1
            self._show(note)


def run_trials(root: Path, trials: list[Trial], jobs: int = 1, progress: bool = True) -> dict[str, dict[str, Any] | TrialFailed]:
    """Run every trial (cached ones first, free), ``jobs`` at a time; key -> metrics or the failure."""
    results: dict[str, dict[str, Any] | TrialFailed] = {}
    unique = list({trial.key: trial for trial in trials}.values())
    pending = []
    threads = threads_per_trial(jobs)
    for trial in unique:
        hit = cached(root, trial.key, threads)
        if hit is not None:
            results[trial.key] = hit
        else:
            pending.append(trial)
    bar = Progress(len(unique), len(unique) - len(pending)) if progress else None
    note: Callable[[Trial], str] = lambda t: f"{t.model} {t.variant} seed {t.seed}"  # noqa: E731
    # Each trial is its own training process; the pool only keeps `jobs` of them running.
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        futures = {pool.submit(run_trial, root, trial, threads): trial for trial in pending}
        for future in as_completed(futures):
            trial = futures[future]
            try:
                results[trial.key] = future.result()
            except TrialFailed as failure:
                results[trial.key] = failure
            if bar:
                bar.step(note(trial))
    return results
