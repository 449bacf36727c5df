"""Adoption commands: ``smt preview``, ``adopt`` and ``drop`` a technique in chosen models."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import adoption, engine, review
from ..engine import SmtError
from ..lock import fleet_lock
from ._app import app, handle_errors
from ._workspace import open_fleet, recover, report_formatter, write

Params = Annotated[Optional[list[str]], typer.Option("--param", help="Technique param NAME=VALUE (repeatable; YAML values).")]
ModelsOption = Annotated[Optional[list[str]], typer.Option("--models", help="Models to change: comma-separated or repeated (--models a,b).")]
Where = Annotated[Optional[str], typer.Option("--where", help="Select models by expression, e.g. \"num_objectives >= 2\".")]
AllEligible = Annotated[bool, typer.Option("--all-eligible", help="Every model the technique applies to.")]
Verify = Annotated[bool, typer.Option("--verify", help="Also run a short qualification (qualification.yml's verify budget) and each model's own tests; exit 1 on a regression.")]


@app.command()
@handle_errors
def preview(
    technique: Annotated[str, typer.Argument(help="Technique to preview.")],
    models: ModelsOption = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
    verify: Verify = False,
) -> None:
    """Show what adopting TECHNIQUE would change in each model, without writing anything."""
    fleet = open_fleet()
    if technique not in engine.load_sources(fleet.root).library:
        raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
    entries = adoption.select(fleet, models, None, all_eligible or not models)
    report = review.preview(fleet, technique, [entry.name for entry in entries], adoption.parse_params(param))
    formatter = report_formatter(output_format)
    sys.stdout.write(formatter(report))
    if verify:
        _verify_or_exit(technique, adoption.parse_params(param), [impact.model for impact in report.models])


def _verify_or_exit(technique: str, params: dict, models: list[str]) -> None:
    """The verification gate: exit 1 when a model regresses or its own tests fail."""
    from .qualification import verify_models  # noqa: PLC0415 - trains models: only with --verify

    if models and not verify_models(technique, params, models):
        raise typer.Exit(1)


def _apply_adoption(technique: str, models: list[str] | None, where: str | None, all_eligible: bool, param: list[str] | None, drop: bool, verify: bool = False) -> None:
    fleet = open_fleet()
    with fleet_lock(fleet.root):
        recover(fleet)
        entries = adoption.select(fleet, models, where, all_eligible)
        outcome = adoption.plan_adoption(fleet, entries, technique, adoption.parse_params(param), drop)
        if models and outcome.not_applicable:
            model, reason = outcome.not_applicable[0]
            raise SmtError(f"{model}: {reason}")
        if verify:  # before writing: a model that fails the gate keeps its spec
            _verify_or_exit(technique, adoption.parse_params(param), [entry.name for entry, _, _ in outcome.changed])
        verb = "dropped" if drop else "adopted"
        for entry, answers, tree in outcome.changed:
            write(entry.name, entry.directory, tree, adoption.spec_text(entry.name, answers))
            if entry.name in outcome.param_changes:
                before, after = outcome.param_changes[entry.name]
                typer.echo(f"{entry.name}: {technique} {adoption.format_params(before)} -> {adoption.format_params(after)}")
            else:
                typer.echo(f"{entry.name}: {verb} {technique}")
    for name, reason in outcome.not_applicable:
        typer.echo(f"{name}: not applicable: {reason}")
    for name, reason in outcome.unchanged:
        typer.echo(f"{name}: unchanged ({reason})")
    retuned = len(outcome.param_changes)
    changed = f"{len(outcome.changed) - retuned} model(s) {verb} {technique}" + (f", {retuned} changed its params" if retuned else "")
    typer.echo(f"{'drop' if drop else 'adopt'}: {changed}, {len(outcome.not_applicable)} not applicable, {len(outcome.unchanged)} unchanged")


@app.command()
@handle_errors
def adopt(
    technique: Annotated[str, typer.Argument(help="Technique to adopt.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    verify: Verify = False,
) -> None:
    """Add TECHNIQUE to the specs of the chosen models and regenerate them (all rendered before writing)."""
    _apply_adoption(technique, models, where, all_eligible, param, drop=False, verify=verify)


@app.command()
@handle_errors
def drop(
    technique: Annotated[str, typer.Argument(help="Technique to drop.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: Annotated[bool, typer.Option("--all-eligible", help="Every model using it.")] = False,
) -> None:
    """Remove TECHNIQUE from the specs of the chosen models and regenerate them."""
    _apply_adoption(technique, models, where, all_eligible, None, drop=True)
