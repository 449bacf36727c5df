"""qualify: choose models, render both sides, train paired seeds, measure capacity, decide."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import representatives, trials
from ..engine import SmtError, load_sources
from ..fleet import Fleet, ModelEntry
from ..impact import measure_folders
from .criterion import Criterion, ModelResult, Verdict, evaluate, paired_result
from .variants import Change, Variant, render_variants, shrink_to


@dataclass
class Qualification:
    """Everything one qualification measured and decided."""

    change: Change
    criterion: Criterion
    models: list[str]
    seeds: list[int]
    steps: int
    results: list[ModelResult]
    verdict: Verdict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    template_version: str = ""
    technique_version: str = ""
    seconds: float = 0.0
    trials_run: int = 0
    trials_cached: int = 0
    chosen_by: str = ""
    parallel: trials.Parallelism = trials.Parallelism(1, 1)  # how the trials shared the machine


def choose_models(fleet: Fleet, on: str) -> tuple[list[ModelEntry], str]:
    """``representatives`` (auto K), ``representatives:K``, ``all`` or a comma-separated list of model names."""
    if on == "representatives" or on.startswith("representatives:"):
        k = on.partition(":")[2]
        if k and not k.isdigit():
            raise SmtError(f"--on {on!r}: representatives:K needs a number of clusters K")
        chosen = representatives.choose(fleet, int(k) if k else "auto")
        return fleet.models(chosen.names), f"representatives ({chosen.chosen_by}): {', '.join(chosen.names)}"
    if on == "all":
        return fleet.models(), "all models"
    names = [name.strip() for name in on.split(",") if name.strip()]
    if not names:
        raise SmtError(f"--on {on!r}: give representatives, all, or model names a,b")
    return fleet.models(names), "named models"


def _weights(entry: ModelEntry) -> dict[str, float]:
    return {o["name"]: float(o.get("weight", 1.0)) for o in entry.answers.get("objectives") or [] if isinstance(o, dict)}


def qualify(
    fleet: Fleet,
    change: Change,
    criterion: Criterion,
    *,
    on: str | None = None,
    seeds: int | None = None,
    steps: int | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    capacity_neutral: bool | None = None,
    progress: bool = True,
    scratch: Path | None = None,
) -> Qualification:
    """Qualify ``change`` on the chosen models: paired trials, deltas, capacity and the verdict.

    Both sides are rendered under ``scratch`` (``baseline/<model>``, ``candidate/<model>``), a
    temporary folder removed at the end unless given. ``jobs`` and ``threads``: see
    ``trials.parallelism``."""
    started = time.perf_counter()
    parallel = trials.parallelism(jobs, threads)
    seeds = seeds if seeds is not None else criterion.seeds
    steps = steps if steps is not None else criterion.steps
    if seeds < 1 or steps < 1:
        raise SmtError("--seeds and --steps must be at least 1")
    neutral = criterion.capacity_neutral if capacity_neutral is None else capacity_neutral
    entries, chosen_by = choose_models(fleet, on or criterion.on)
    sources = load_sources(fleet.root)
    technique_version = str(sources.library[change.technique].version) if change.technique and change.technique in sources.library else ""
    seed_list = list(range(seeds))
    with tempfile.TemporaryDirectory(prefix="smt-qualify-") as tmp:
        variants, skipped = render_variants(fleet, change, entries, scratch or Path(tmp))
        if not variants:
            reasons = "; ".join(f"{m}: {r}" for m, r in skipped) or "no models chosen"
            raise SmtError(f"{change.label}: applies to none of the chosen models ({reasons})")
        capacity = measure_folders(
            [v.baseline_dir for v in variants] + [v.candidate_dir for v in variants], f"measuring {change.label}", trials.runtime_source(fleet.root)
        )
        if neutral:
            for variant in variants:
                target = capacity[str(variant.baseline_dir)]["mflops"]
                if capacity[str(variant.candidate_dir)]["mflops"] > target:
                    shrink_to(variant, target)
                    print(f"{variant.entry.name}: {variant.note}", file=sys.stderr)
            capacity.update(measure_folders([v.candidate_dir for v in variants], f"measuring {change.label}", trials.runtime_source(fleet.root)))
        plan: list[tuple[Variant, str, trials.Trial]] = []
        for variant in variants:
            data = trials.data_files(variant.entry.directory)
            sides = (
                ("baseline", variant.baseline, variant.baseline_dir, variant.baseline_runtime),
                ("candidate", variant.candidate, variant.candidate_dir, variant.candidate_runtime),
            )
            for side, tree, folder, runtime in sides:
                for seed in seed_list:
                    key = trials.trial_key(tree, data, seed, steps, runtime)
                    trial = trials.Trial(variant.entry.name, side, folder, seed, steps, key, data, runtime)
                    plan.append((variant, side, trial))
        cached = sum(trials.cached(fleet.root, t.key, parallel.threads) is not None for _, _, t in plan)
        outcomes = trials.run_trials(fleet.root, [t for _, _, t in plan], parallel.jobs, progress, parallel.threads)
        results = [_model_result(fleet.root, variant, plan, outcomes, capacity, criterion, parallel.threads) for variant in variants]
    verdict = evaluate(criterion, results)
    return Qualification(
        change, criterion, [v.entry.name for v in variants], seed_list, steps, results, verdict, skipped,
        sources.version, technique_version, time.perf_counter() - started, len(plan) - cached, cached, chosen_by, parallel,
    )


def _model_result(
    root: Path, variant: Variant, plan: list[tuple[Variant, str, Any]], outcomes: dict[str, Any],
    capacity: dict[str, dict[str, float]], criterion: Criterion, threads: int,
) -> ModelResult:
    runs: dict[str, list[Any]] = {"baseline": [], "candidate": []}
    predictions: dict[str, list[Path]] = {"baseline": [], "candidate": []}
    for owner, side, trial in plan:
        if owner is variant:
            runs[side].append(outcomes[trial.key])
            predictions[side].append(trials.predictions(root, trial.key, threads))
    name = variant.entry.name
    failures = [run for run in runs["baseline"] + runs["candidate"] if isinstance(run, Exception)]
    serving = variant.entry.answers.get("serving") or {}
    base_cap, cand_cap = capacity[str(variant.baseline_dir)], capacity[str(variant.candidate_dir)]
    if failures:
        result = ModelResult(name, error=str(failures[0]).removeprefix(f"{name} "))
    else:
        result = paired_result(
            name, _weights(variant.entry), runs["baseline"], runs["candidate"], criterion.split,
            (predictions["baseline"], predictions["candidate"]), criterion.confidence,
        )
    result.params_baseline, result.params_candidate = int(base_cap["parameters"]), int(cand_cap["parameters"])
    result.mflops_baseline, result.mflops_candidate = float(base_cap["mflops"]), float(cand_cap["mflops"])
    result.max_params = int(serving.get("max_params") or 0)
    result.max_mflops = float(serving.get("max_mflops_per_example") or 0.0)
    result.note = variant.note
    return result
