"""Drive an Optuna study: each trial renders the chosen models under one point of the space (the
scratch-render path of ``smt qualify``), trains baseline and candidate (the qualification trial
path and its cache in ``.smt/trials/``) and reports value and constraints.

Storage: ``.smt/studies/<study>.db`` (SQLite, git-ignored) unless ``--storage URL`` names any
SQLAlchemy URL; the study is opened with ``load_if_exists=True``, so rerunning the same command
continues the study and workers on several machines pointed at one database share it.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .. import trials
from ..engine import SmtError
from ..fleet import Fleet, ModelEntry
from ..impact import measure_folders
from ..qualification.criterion import Criterion, paired_result
from ..qualification.run import choose_models
from ..qualification.variants import _write
from ..render import RenderedTree, render_model
from . import objective
from .space import Setting, TuneSpace, suggest, with_defaults

STUDIES_DIR = Path(".smt") / "studies"
# A tuner scores its trials on the validation split and never sees the test split: a study picks
# the best of many points, so the split it picks on is spent, and the test split stays the honest
# measure of the winner (`smt qualify`, which decides one change, judges on qualification.yml's).
TUNING_SPLIT = "valid"


def storage_url(root: Path, study: str, storage: str | None) -> str:
    """``--storage`` as given, else SQLite at ``.smt/studies/<study>.db`` (folder created)."""
    if storage:
        return storage
    if not study or any(ch in study for ch in "/\\") or study.startswith("."):
        raise SmtError(f"--study {study!r}: give a plain name (letters, digits, - and _)")
    folder = root / STUDIES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (study + '.db')}"


def open_study(name: str, url: str, seed: int | None = None) -> Any:
    """Create or load the study: minimize, TPE with the qualification constraints, median pruning."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna >= 5 reads constraints set in the objective (Trial.set_constraint); older ones need constraints_func.
    native = hasattr(optuna.trial.Trial, "set_constraint")
    sampler = optuna.samplers.TPESampler(seed=seed) if native else optuna.samplers.TPESampler(constraints_func=objective.constraints_func, seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    last: Exception | None = None
    # Workers started together on a fresh database race to create Optuna's tables (PostgreSQL:
    # a duplicate key in pg_type): the loser retries once the winner's schema is there.
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180) if "://" in url else url
            return optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=sampler, pruner=pruner, load_if_exists=True)
        except Exception as error:  # a bad URL, a missing driver, a database that refuses us, a race
            last = error
            if type(error).__name__ not in ("IntegrityError", "OperationalError", "DuplicatedStudyError") or attempt == 4:
                break
            time.sleep(0.5 + attempt)
    raise SmtError(f"--storage {url}: cannot open study {name!r}: {type(last).__name__}: {str(last).splitlines()[0][:200]}") from None


@dataclass
class Baseline:
    """A model's current render (its spec at the working tree's template) and its capacity."""

    entry: ModelEntry
    tree: RenderedTree
    folder: Path
    mflops: float


@dataclass
class Evaluator:
    """Measures one setting on the chosen models; baselines are rendered once and trained once (cache)."""

    fleet: Fleet
    entries: list[ModelEntry]
    criterion: Criterion
    steps: int
    seeds: int
    scratch: Path
    threads: int = 1
    progress: bool = True
    baselines: dict[str, Baseline] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)  # the template's hyperparameter defaults

    @property
    def runtime(self) -> Path | None:
        """The working tree's runtime, which every trial of a study imports."""
        return trials.runtime_source(self.fleet.root)

    def prepare(self) -> None:
        from .apply import template_defaults

        self.template = template_defaults(self.fleet.root)
        for entry in self.entries:
            tree = render_model(self.fleet.root, entry.answers, entry.name, entry.directory)
            folder = _write(self.scratch / "baseline" / entry.name, tree, entry.answers)
            self.baselines[entry.name] = Baseline(entry, tree, folder, 0.0)
        capacity = measure_folders([b.folder for b in self.baselines.values()], "measuring the baselines", self.runtime)
        for b in self.baselines.values():
            b.mflops = float(capacity[str(b.folder)]["mflops"])

    def candidates(self, setting: Setting, number: int) -> dict[str, tuple[dict[str, Any], RenderedTree, Path]]:
        """Render every chosen model under the setting (technique params where the technique applies)."""
        from .. import adoption

        specs = {e.name: e.answers for e in self.entries}
        if setting.technique and setting.technique_params:
            outcome = adoption.plan_adoption(self.fleet, self.entries, setting.technique, setting.technique_params, drop=False)
            specs.update({entry.name: answers for entry, answers, _ in outcome.changed})
        out = {}
        for entry in self.entries:
            answers = with_defaults(specs[entry.name], setting, self.template)
            tree = render_model(self.fleet.root, answers, entry.name, entry.directory)
            folder = _write(self.scratch / f"trial-{number}" / entry.name, tree, answers)
            out[entry.name] = (answers, tree, folder)
        return out

    def measure_model(self, name: str, tree: RenderedTree, folder: Path, mflops: float) -> objective.ModelScore:
        base = self.baselines[name]
        serving = base.entry.answers.get("serving") or {}
        max_mflops = float(serving.get("max_mflops_per_example") or 0.0)
        data = trials.data_files(base.entry.directory)
        plan = []
        for side, t, f in (("baseline", base.tree, base.folder), ("candidate", tree, folder)):
            for seed in range(self.seeds):
                key = trials.trial_key(t, data, seed, self.steps, self.runtime)
                plan.append((side, trials.Trial(name, side, f, seed, self.steps, key, data, self.runtime)))
        runs: dict[str, list[Any]] = {"baseline": [], "candidate": []}
        predictions: dict[str, list[Path]] = {"baseline": [], "candidate": []}
        for side, t in plan:
            try:
                runs[side].append(trials.run_trial(self.fleet.root, t, self.threads))
            except trials.TrialFailed as failure:
                runs[side].append(failure)
            predictions[side].append(trials.predictions(self.fleet.root, t.key, self.threads))
        failed = [r for r in runs["baseline"] + runs["candidate"] if isinstance(r, Exception)]
        if failed:
            return objective.ModelScore(name, math.nan, 0.0, base.mflops, mflops, max_mflops, str(failed[0]))
        weights = {o["name"]: float(o.get("weight", 1.0)) for o in base.entry.answers.get("objectives") or [] if isinstance(o, dict)}
        result = paired_result(
            name, weights, runs["baseline"], runs["candidate"], TUNING_SPLIT,
            (predictions["baseline"], predictions["candidate"]), self.criterion.confidence,
        )
        return objective.ModelScore(name, result.rel_logloss.mean, result.rel_logloss.se, base.mflops, mflops, max_mflops, result.error)


def measure_in_order(trial: Any, names: list[str], measure: Callable[[str], objective.ModelScore], criterion: Criterion, progress: bool = True) -> list[objective.ModelScore]:
    """Measure the models one by one, reporting the running mean after each but the last so the
    study's pruner (MedianPruner) can stop a hopeless trial before it trains the rest; a pruned
    trial keeps what it measured (user_attrs) and raises ``optuna.TrialPruned``."""
    import optuna

    started = time.perf_counter()
    scores: list[objective.ModelScore] = []
    for step, name in enumerate(names):
        score = measure(name)
        scores.append(score)
        trial.set_user_attr(objective.MODELS_ATTR, [asdict(s) for s in scores])  # visible to other workers while running
        running = objective.value(scores)
        if progress:
            print(f"trial {trial.number}: {name} {score.change:+.3%} (running mean {running:+.3%}, {time.perf_counter() - started:.0f}s)", file=sys.stderr)
        if math.isfinite(running) and step < len(names) - 1:
            trial.report(running, step)
            if trial.should_prune():
                objective.record(trial, scores, criterion)
                raise optuna.TrialPruned(f"running mean {running:+.3%} after {step + 1} of {len(names)} model(s)")
    objective.record(trial, scores, criterion)
    return scores


def make_objective(evaluator: Evaluator, space: TuneSpace) -> Any:
    """The Optuna objective: suggest, render, measure capacity, then train model by model
    (``measure_in_order``: pruned on the running mean)."""

    def run(trial: Any) -> float:
        setting = suggest(trial, space)
        rendered = evaluator.candidates(setting, trial.number)
        capacity = measure_folders([folder for _, _, folder in rendered.values()], f"trial {trial.number}: measuring capacity", evaluator.runtime)

        def measure(name: str) -> objective.ModelScore:
            _, tree, folder = rendered[name]
            return evaluator.measure_model(name, tree, folder, float(capacity[str(folder)]["mflops"]))

        scores = measure_in_order(trial, list(rendered), measure, evaluator.criterion, evaluator.progress)
        failed = [s for s in scores if s.error]
        if failed:
            raise SmtError(f"trial {trial.number}: {failed[0].model}: {failed[0].error}")
        return objective.value(scores)

    return run


def run_study(
    fleet: Fleet, space: TuneSpace, criterion: Criterion, study: Any, *, on: str, trials_n: int,
    jobs: int | None = None, threads: int | None = None, steps: int | None = None, seeds: int | None = None, progress: bool = True,
) -> tuple[Any, str]:
    """Run ``trials_n`` more trials of ``study`` on the chosen models: ``jobs`` trials at a time
    (threads of this worker), each training with ``threads`` torch threads (``trials.parallelism``:
    the same policy as ``smt qualify``). A line per finished trial with an ETA goes to stderr."""
    parallel = trials.parallelism(jobs, threads)
    entries, chosen_by = choose_models(fleet, on)
    study.set_user_attr("models", [e.name for e in entries])
    started, finished = time.perf_counter(), [0]

    def report(study: Any, trial: Any) -> None:
        finished[0] += 1
        elapsed = time.perf_counter() - started
        left = elapsed / finished[0] * (trials_n - finished[0])
        value = f"{trial.value:+.3%}" if trial.value is not None and math.isfinite(trial.value) else trial.state.name.lower()
        print(
            f"tune: trial #{trial.number} {value}; {finished[0]}/{trials_n} done, elapsed {trials.duration(elapsed)},"
            f" ETA {trials.duration(left)}", file=sys.stderr, flush=True,
        )

    if progress:
        print(f"tune: {trials_n} trial(s) on {', '.join(e.name for e in entries)} ({parallel})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="smt-tune-") as scratch:
        evaluator = Evaluator(fleet, entries, criterion, steps or space.steps, seeds or space.seeds, Path(scratch), parallel.threads, progress)
        evaluator.prepare()
        with trials.stopped_on_interrupt():
            study.optimize(
                make_objective(evaluator, space), n_trials=trials_n, n_jobs=parallel.jobs, catch=(SmtError,),
                callbacks=[report] if progress else None,
            )
    return study, chosen_by
