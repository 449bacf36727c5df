"""Adoption commands: ``smt preview``, ``adopt`` and ``drop`` a technique in chosen models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import adoption, changelog, engine, model_repo, review
from ..engine import SmtError
from ..fleet import find_root
from ..lock import check_inputs, restrict, snapshot_inputs
from ..qualification import gate
from ._app import TrialJobs, TrialThreads, app, handle_errors
from ._gate import Force, Reason, Verify, pass_gate, verify_models
from ._workspace import open_fleet, recover, report_formatter, write, writing

Params = Annotated[Optional[list[str]], typer.Option("--param", help="Technique param NAME=VALUE (repeatable; YAML values).")]
ModelsOption = Annotated[Optional[list[str]], typer.Option("--models", help="Models to change: comma-separated or repeated (--models a,b).")]
Where = Annotated[Optional[str], typer.Option("--where", help="Select models by expression, e.g. \"num_objectives >= 2\".")]
AllEligible = Annotated[bool, typer.Option("--all-eligible", help="Every model the technique applies to.")]


@app.command()
@handle_errors
def preview(
    technique: Annotated[str, typer.Argument(help="Technique to preview.")],
    models: ModelsOption = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
    verify: Verify = False,
    jobs: TrialJobs = None,
    threads: TrialThreads = None,
) -> None:
    """Show what adopting TECHNIQUE would change in each model, without writing anything."""
    fleet = open_fleet()
    if technique not in engine.load_sources(fleet.root).library:
        raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
    entries = adoption.select(fleet, models, None, all_eligible or not models)
    report = review.preview(fleet, technique, [entry.name for entry in entries], adoption.parse_params(param))
    formatter = report_formatter(output_format)
    sys.stdout.write(formatter(report))
    affected = [impact.model for impact in report.models]
    if verify and affected and not verify_models(technique, adoption.parse_params(param), affected, jobs, threads)[0]:
        raise typer.Exit(1)


def _apply_adoption(
    technique: str, models: list[str] | None, where: str | None, all_eligible: bool, param: list[str] | None, drop: bool,
    verify: bool = False, force: bool = False, reason: str | None = None, jobs: int | None = None, threads: int | None = None,
) -> None:
    params = adoption.parse_params(param)
    repo = model_repo.model_repo_of(Path.cwd()) if not _in_smt_repo() else None
    if repo is not None:
        _apply_in_model_repo(repo, technique, params, drop, verify, force, reason, (models, where, all_eligible))
        return
    fleet = open_fleet()
    recover(fleet)
    inputs = snapshot_inputs(fleet.root, fleet.names())  # before planning: what the plan reads
    entries = adoption.select(fleet, models, where, all_eligible)
    outcome = adoption.plan_adoption(fleet, entries, technique, params, drop)
    if models and outcome.not_applicable:
        model, why = outcome.not_applicable[0]
        raise SmtError(f"{model}: {why}")
    names = [entry.name for entry, _, _ in outcome.changed]
    evidence_line = None
    if not drop:  # the gate (and a --verify's training) before the lock: see generator.lock
        sources = engine.load_sources(fleet.root)
        found = gate.evidence(fleet.root, technique, params, str(sources.library[technique].version), sources.version)
        evidence_line = pass_gate(found, names, verify=verify, force=force, reason=reason, jobs=jobs, threads=threads)
    verb = "dropped" if drop else "adopted"
    with writing(fleet.root):
        recover(fleet)
        check_inputs(fleet.root, restrict(inputs, names), f"{'drop' if drop else 'adopt'} {technique}")
        for entry, answers, tree in outcome.changed:
            write(entry.name, entry.directory, tree, adoption.spec_text(entry.name, answers))
            if entry.name in outcome.param_changes:
                before, after = outcome.param_changes[entry.name]
                typer.echo(f"{entry.name}: {technique} {adoption.format_params(before)} -> {adoption.format_params(after)}")
            else:
                typer.echo(f"{entry.name}: {verb} {technique}")
        if force and names and evidence_line:
            path = changelog.add_unreleased(fleet.root, f"{evidence_line}; adopted by {', '.join(f'`{n}`' for n in names)} ({changelog.today()}).")
            typer.echo(f"adopt: --force reason recorded in {path.name}")
    for name, why in outcome.not_applicable:
        typer.echo(f"{name}: not applicable: {why}")
    for name, why in outcome.unchanged:
        typer.echo(f"{name}: unchanged ({why})")
    retuned = len(outcome.param_changes)
    changed = f"{len(outcome.changed) - retuned} model(s) {verb} {technique}" + (f", {retuned} changed its params" if retuned else "")
    typer.echo(f"{'drop' if drop else 'adopt'}: {changed}, {len(outcome.not_applicable)} not applicable, {len(outcome.unchanged)} unchanged")


def _in_smt_repo() -> bool:
    try:
        find_root()
    except SmtError:
        return False
    return True


def _apply_in_model_repo(repo: Path, technique: str, params: dict, drop: bool, verify: bool, force: bool, reason: str | None, selection: tuple) -> None:
    """``smt adopt``/``smt drop`` in a model repo: edit its techniques answer through `copier update`."""
    models, where, all_eligible = selection
    change = model_repo.plan_technique_change(repo, technique, params, drop)
    named = [name.strip() for item in models or [] for name in item.split(",") if name.strip()]
    if where is not None or all_eligible or (named and named != [change.model]):
        raise SmtError(
            f"{repo}: a model repo holds one model ({change.model}); run `smt {'drop' if drop else 'adopt'} {technique}`"
            " there without --models, --where or --all-eligible"
        )
    if verify:
        raise SmtError("--verify trains in the SMT repository (scratch renders of both sides); in a model repo qualify the change there first, or give --force --reason \"...\"")
    gate.check_force_reason(force, reason)
    verb = "dropped" if drop else "adopted"
    if change.new == change.old:
        typer.echo(f"{change.model}: unchanged ({'does not use it' if drop else 'already uses it'})")
        return
    evidence_line = None
    if not drop:
        found = model_repo.release_evidence(change, technique, params)
        evidence_line = pass_gate(found, [change.model], verify=False, force=force, reason=reason)
    conflicts = model_repo.update_answers(change)
    retuned = None if drop else change.params_of(technique)
    done = f"{technique} {adoption.format_params(retuned[0])} -> {adoption.format_params(retuned[1])}" if retuned else f"{verb} {technique}"
    typer.echo(f"{change.model}: {done} (copier update at SMT release {change.release}); review `git diff`, then commit")
    if force and evidence_line:
        path = changelog.add_unreleased(repo, f"{evidence_line} ({changelog.today()}).", changelog.MODEL_REPO_HEAD)
        typer.echo(f"adopt: --force reason recorded in {path.name}")
    for conflict in conflicts:
        typer.echo(str(conflict))
    if conflicts:
        typer.echo("conflicts: resolve them (keep the side you want, delete the marker lines, `git add`), then `smt conflicts`")
        raise typer.Exit(1)


@app.command()
@handle_errors
def adopt(
    technique: Annotated[str, typer.Argument(help="Technique to adopt.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    verify: Verify = False,
    force: Force = False,
    reason: Reason = None,
    jobs: TrialJobs = None,
    threads: TrialThreads = None,
) -> None:
    """Add TECHNIQUE to the specs of the chosen models and regenerate them (all rendered before
    writing). Without a passing qualification record of this change at the current template version
    it refuses (exit 1) unless --verify passes or --force --reason is given. In a model repo: edit its
    techniques answer and run `copier update`."""
    _apply_adoption(technique, models, where, all_eligible, param, drop=False, verify=verify, force=force, reason=reason, jobs=jobs, threads=threads)


@app.command()
@handle_errors
def drop(
    technique: Annotated[str, typer.Argument(help="Technique to drop.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: Annotated[bool, typer.Option("--all-eligible", help="Every model using it.")] = False,
) -> None:
    """Remove TECHNIQUE from the specs of the chosen models and regenerate them. In a model repo:
    edit its techniques answer and run `copier update`."""
    _apply_adoption(technique, models, where, all_eligible, None, drop=True)
