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
trained at another. Next to it lies the run's ``predictions.npz`` (each split's logits and labels),
which qualification resamples for its intervals; an entry without it (made before runs wrote it)
is a miss, so it is trained again.

One thread policy for every command that trains (qualify, adopt/preview --verify, tune):
``--threads`` (else ``$SMT_THREADS``, else 1) torch threads per trial and ``--jobs`` (else the
usable cores divided by the threads) trials at a time. Interrupting a run (Ctrl-C, SIGTERM) ends
every trial process it started and starts no more.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import SmtError
from .render import RenderedTree

CACHE_DIR = Path(".smt") / "trials"
RUNTIME_DIR = Path("runtime")  # the folder holding the smt_runtime package, in an SMT checkout
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"  # written by the model's train() next to metrics.json
THREADS_ENV = "SMT_THREADS"
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


class TrialCancelled(KeyboardInterrupt):
    """A trial not started, or stopped, because the run was interrupted."""


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Parallelism:
    """How trials share the machine: ``jobs`` at a time, each with ``threads`` torch threads."""

    jobs: int
    threads: int

    def __str__(self) -> str:
        return f"{self.jobs} at a time, {self.threads} torch thread(s) each"


def parallelism(jobs: int | None = None, threads: int | None = None) -> Parallelism:
    """``--jobs``/``--threads`` as given; threads default to ``$SMT_THREADS``, else 1 (one thread per
    trial is the fastest use of a shared machine: oversubscribed cores run many times slower); jobs
    default to the usable cores divided by the threads. Raises SmtError on a bad value."""
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if text and not (text.isdigit() and int(text) >= 1):
            raise SmtError(f"{THREADS_ENV}={text!r}: give a whole number of torch threads per trial (at least 1), or unset it")
        threads = int(text) if text else 1
    if threads < 1 or (jobs is not None and jobs < 1):
        raise SmtError("--jobs and --threads must be at least 1")
    return Parallelism(jobs if jobs is not None else max(1, usable_cores() // threads), threads)


def _entry(root: Path, key: str, threads: int) -> Path:
    """The cache folder of trial ``key`` run with ``threads`` torch threads."""
    return root / CACHE_DIR / key / f"threads-{threads}"


def cached(root: Path, key: str, threads: int) -> dict[str, Any] | None:
    """A finished trial's metrics when it ran with ``threads`` torch threads (and its predictions
    are there too), or None."""
    entry = _entry(root, key, threads)
    if not (entry / PREDICTIONS_FILE).is_file():
        return None  # made before runs wrote predictions, or torn: train it again
    try:
        return json.loads((entry / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing, or a torn file from a killed run: a miss


def predictions(root: Path, key: str, threads: int) -> Path:
    """The predictions.npz of a finished trial (see ``cached``)."""
    return _entry(root, key, threads) / PREDICTIONS_FILE


_LIVE: set[subprocess.Popen[str]] = set()  # trial processes running now, in any thread
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_children() -> None:
    """End every running trial process and start no more (the run was interrupted)."""
    _STOPPING.set()
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def stopped_on_interrupt() -> Iterator[None]:
    """Run a block that starts trials; on Ctrl-C (or SIGTERM, turned into one in the main thread)
    end every trial process before the interrupt goes on."""
    _STOPPING.clear()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except BaseException:
        stop_children()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _train(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run one training process, registered so that an interrupt can end it; (exit code, output)."""
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            raise TrialCancelled("the run was interrupted")
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _LIVE.add(proc)
    try:
        output, _ = proc.communicate()
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if _STOPPING.is_set():
        raise TrialCancelled("the run was interrupted")
    return proc.returncode, output


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
        code, output = _train(command, trial.folder, env)
        produced = Path(run_dir)
        if code != 0 or not (produced / METRICS_FILE).is_file() or not (produced / PREDICTIONS_FILE).is_file():
            tail = output.strip().splitlines()[-1:] or ["no output"]
            if code == 0:
                tail = [f"it wrote no {PREDICTIONS_FILE} (a model generated before template runs wrote one: regenerate it)"]
            raise TrialFailed(f"{trial.model} ({trial.variant}, seed {trial.seed}): training failed: {tail[0]}")
        target = _entry(root, trial.key, threads)
        target.mkdir(parents=True, exist_ok=True)
        # Predictions first, metrics.json last and each moved into place atomically: metrics.json
        # present means the entry is whole, so a killed run leaves no half-written hit.
        for name in (PREDICTIONS_FILE, METRICS_FILE):
            partial = target / (name + ".part")
            shutil.copyfile(produced / name, partial)
            os.replace(partial, target / name)
        return json.loads((target / METRICS_FILE).read_text())


def duration(seconds: float) -> str:
    """12m05s, or 1h02m from an hour on."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Trial progress on stderr: a bar redrawn in place on a terminal; otherwise (a log, a pipe) a
    line when the run starts and one per finished trial, each with the elapsed time and an ETA."""

    def __init__(self, total: int, cached_count: int, parallel: Parallelism, what: str = "trials") -> None:
        self.total, self.done, self.cached = total, cached_count, cached_count
        self.what = what
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()
        if total and not self.tty:
            self._write(f"{what}: {total} in all, {cached_count} cached, {total - cached_count} to run ({parallel})")
        elif total:
            self._show(f"{cached_count} cached")

    def eta(self) -> str:
        """Time left at the pace of the trials finished so far (cached ones took no time)."""
        finished = self.done - self.cached
        if finished <= 0:
            return "ETA unknown"
        elapsed = time.perf_counter() - self.started
        return f"ETA {duration(elapsed / finished * (self.total - self.done))}"

    def _write(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def _show(self, note: str) -> None:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        elapsed = duration(time.perf_counter() - self.started)
        line = f"{self.what} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed} {self.eta()} {note}"
        sys.stderr.write("\r" + line[:120].ljust(120) + ("\n" if self.done == self.total else ""))
        sys.stderr.flush()

    def step(self, note: str, seconds: float) -> None:
        """One more trial finished (``note`` names it; it took ``seconds``)."""
        with self.lock:
            self.done += 1
            if self.tty:
                self._show(note)
            else:
                elapsed = duration(time.perf_counter() - self.started)
                self._write(f"{self.what} {self.done}/{self.total} done: {note} in {duration(seconds)}; elapsed {elapsed}, {self.eta()}")


def run_trials(root: Path, trials: list[Trial], jobs: int = 1, progress: bool = True, threads: int = 1) -> dict[str, dict[str, Any] | TrialFailed]:
    """Run every trial (cached ones first, free), ``jobs`` at a time with ``threads`` torch threads
    each; key -> metrics or the failure. An interrupt ends every trial process (``stopped_on_interrupt``)."""
    results: dict[str, dict[str, Any] | TrialFailed] = {}
    unique = list({trial.key: trial for trial in trials}.values())
    pending = []
    for trial in unique:
        hit = cached(root, trial.key, threads)
        if hit is not None:
            results[trial.key] = hit
        else:
            pending.append(trial)
    bar = Progress(len(unique), len(unique) - len(pending), Parallelism(jobs, threads)) if progress else None

    def timed(trial: Trial) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        return run_trial(root, trial, threads), time.perf_counter() - started

    # Each trial is its own training process; the pool only keeps `jobs` of them running.
    pool = ThreadPoolExecutor(max_workers=max(jobs, 1))
    try:
        with stopped_on_interrupt():
            futures = {pool.submit(timed, trial): trial for trial in pending}
            for future in as_completed(futures):
                trial = futures[future]
                seconds = 0.0
                try:
                    results[trial.key], seconds = future.result()
                except TrialFailed as failure:
                    results[trial.key] = failure
                if bar:
                    bar.step(f"{trial.model} {trial.variant} seed {trial.seed}", seconds)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
