"""``smt tune``: search template-level defaults with Optuna.

A thin wrapper over ``generator.tuning``: open (or continue) the study, run this worker's trials,
print and write the report, and with ``--apply`` write the winner through ``smt promote``'s path.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import changelog
from .. import release as releases
from .. import engine
from ..engine import SmtError
from ..fleet import Fleet, find_root
from ..lock import check_inputs, snapshot_inputs
from ._app import TrialJobs, TrialThreads, app, handle_errors
from ._gate import Force, Reason, Verify, pass_gate
from ._workspace import writing
from .qualification import release_note


@app.command()
@handle_errors
def tune(
    space_file: Annotated[Path, typer.Option("--space", help="The search space (see the example tune.yml).")] = Path("tune.yml"),
    study_name: Annotated[str, typer.Option("--study", help="Study name; the same name continues the study.")] = "",
    storage: Annotated[Optional[str], typer.Option("--storage", help="SQLAlchemy URL shared by workers (default sqlite .smt/studies/STUDY.db).")] = None,
    n_trials: Annotated[int, typer.Option("--trials", help="Trials this worker runs (0: only report or apply).")] = 10,
    jobs: TrialJobs = None,
    threads: TrialThreads = None,
    on: Annotated[Optional[str], typer.Option("--on", help="representatives, all, or models a,b (default: tune.yml budget.models).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Training steps per run (default: tune.yml budget.steps).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Paired seeds per model (default: tune.yml budget.seeds).")] = None,
    per_model: Annotated[bool, typer.Option("--per-model", help="Tune each model on its own (the baseline): the --trials budget is split across models.")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Write the winner: template defaults (new VERSION, CHANGELOG) or, with --per-model, each spec's hyperparameters (a model without a feasible improving trial keeps its spec).")] = False,
    trial_number: Annotated[Optional[int], typer.Option("--trial", help="With --apply: apply this trial instead of the best one.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder (default tuning/reports/STUDY).")] = None,
    seed: Annotated[Optional[int], typer.Option("--sampler-seed", help="Seed of the TPE sampler (reproducible suggestions).")] = None,
    verify: Verify = False,
    force: Force = False,
    reason: Reason = None,
    release: Annotated[bool, typer.Option("--release/--no-release", help="With --apply: commit the release's files and tag it v<VERSION> (in a git work tree).")] = True,
) -> None:
    """Search template defaults (hyperparameters, technique params) with Optuna: each trial renders the
    chosen models with those defaults, trains them against their current baselines, and scores the
    mean relative logloss change, under the qualification.yml regression bound and each model's
    MFLOPs budget. Exit 0 done, 2 bad input or a refused --apply, 1 when --apply would adopt a
    technique without passing qualification evidence (see `smt adopt`: --verify or --force --reason)."""
    from ..qualification import load_criterion  # noqa: PLC0415
    from ..qualification.run import choose_models  # noqa: PLC0415
    from ..tuning import apply as tapply  # noqa: PLC0415
    from ..tuning import report as treport  # noqa: PLC0415
    from ..tuning.objective import split_budget  # noqa: PLC0415
    from ..tuning.space import load_space  # noqa: PLC0415
    from ..tuning.study import open_study, run_study, storage_url  # noqa: PLC0415
    from ..promotion import next_version, release_paths  # noqa: PLC0415
    from ..tuning.space import Setting  # noqa: PLC0415

    if not study_name:
        raise SmtError("--study: name the study (the same name continues it)")
    if n_trials < 0:
        raise SmtError("--trials must be at least 0")
    if trial_number is not None and (per_model or not apply):
        raise SmtError("--trial N goes with --apply (template mode)")
    root = find_root()
    fleet = Fleet(root)
    criterion = load_criterion(root)
    space = load_space(space_file if space_file.is_absolute() else Path.cwd() / space_file)
    command = "smt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    url = storage_url(root, study_name, storage)
    report_root = report or root / treport.REPORTS_DIR / study_name
    if not per_model:
        study = open_study(study_name, url, seed)
        if n_trials:
            run_study(fleet, space, criterion, study, on=on or space.on, trials_n=n_trials, jobs=jobs, threads=threads, steps=steps, seeds=seeds)
        summary = treport.summarize(study, url, criterion)
        treport.write_report(summary, study, report_root, command)
        typer.echo(treport.format_text(summary), nl=False)
        typer.echo(f"report: {report_root}/report.md, report.json, history.png")
        if apply:
            trial = tapply.chosen_trial(study, trial_number, criterion)
            setting = Setting.from_params(space, trial.params)
            new_version = next_version(engine.load_sources(root).version)
            tagging = release and releases.in_git(root)
            if tagging:
                releases.check_releasable(root, new_version, release_paths(tapply.CONFIG_TEMPLATE))
            inputs = snapshot_inputs(root, fleet.names())
            entry = _technique_gate(fleet, setting, fleet.models(), verify, force, reason, jobs, threads)
            with writing(root):
                check_inputs(root, inputs, "tune --apply")
                done = tapply.apply_template(fleet, space, trial, study_name, _relative(report_root, root), entry)
                tag = releases.commit_and_tag(root, done.new_version, release_paths(tapply.CONFIG_TEMPLATE), f"SMT template {done.new_version}: tuned defaults (study {study_name} trial #{trial.number})") if tagging else None
            typer.echo(
                f"apply: trial #{trial.number} is the template's default; template {done.old_version} -> {done.new_version},"
                f" {len(done.regenerated)} model(s) regenerated, CHANGELOG.md cites study {study_name}"
            )
            typer.echo(f"release: committed and tagged {tag}" if tag else release_note(root, done.new_version, release))
        return
    entries, _ = choose_models(fleet, on or space.on)
    budget = split_budget(n_trials, [e.name for e in entries]) if n_trials else {e.name: 0 for e in entries}
    typer.echo(f"per-model: {n_trials} trial(s) split as " + ", ".join(f"{m} {n}" for m, n in budget.items()))
    chosen = {}
    for name, count in budget.items():
        study = open_study(f"{study_name}.{name}", url, seed)
        if count:
            run_study(fleet, space, criterion, study, on=name, trials_n=count, jobs=jobs, threads=threads, steps=steps, seeds=seeds)
        summary = treport.summarize(study, url, criterion)
        treport.write_report(summary, study, report_root / name, command)
        typer.echo(treport.format_text(summary), nl=False)
        chosen[name] = study
    typer.echo(f"report: {report_root}/<model>/report.md")
    if apply:
        winners = {name: tapply.per_model_winner(study) for name, study in chosen.items()}
        inputs = snapshot_inputs(root, fleet.names())
        entries_by_name = {e.name: e for e in entries}
        forced = {}
        for name, trial in winners.items():  # every gate first: a refusal writes nothing
            if trial is not None:
                forced[name] = _technique_gate(fleet, Setting.from_params(space, trial.params), [entries_by_name[name]], verify, force, reason, jobs, threads)
        with writing(root):
            check_inputs(root, inputs, "tune --per-model --apply")
            for name, trial in winners.items():
                if trial is None:
                    typer.echo(f"apply: {name}: no feasible trial beats its current config; spec kept")
                    continue
                hyper = tapply.apply_per_model(fleet, space, name, trial)
                typer.echo(f"apply: {name}: trial #{trial.number} ({trial.value:+.3%}) written to its spec: hyperparameters {hyper}")
                if force and forced.get(name):
                    changelog.add_unreleased(root, f"{forced[name]}; adopted by `{name}` (smt tune --per-model --apply, {changelog.today()}).")


def _technique_gate(fleet: Fleet, setting: Any, entries: list[Any], verify: bool, force: bool, reason: str | None, jobs: int | None, threads: int | None) -> str | None:
    """The qualification gate for the technique a tuned setting adopts (None: it adopts none)."""
    from .. import adoption  # noqa: PLC0415
    from ..qualification.gate import check_force_reason, evidence  # noqa: PLC0415

    check_force_reason(force, reason)
    if not (setting.technique and setting.technique_params):
        return None
    outcome = adoption.plan_adoption(fleet, entries, setting.technique, setting.technique_params, drop=False)
    sources = engine.load_sources(fleet.root)
    found = evidence(fleet.root, setting.technique, setting.technique_params, str(sources.library[setting.technique].version), sources.version)
    return pass_gate(found, [entry.name for entry, _, _ in outcome.changed], verify=verify, force=force, reason=reason, jobs=jobs, threads=threads)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
