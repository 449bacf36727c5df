"""Fleet commands: ``smt generate``, ``check``, ``diff``, ``status``, ``new`` and ``version``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__, adoption, drift, engine, review
from ..capacity import measure_fleet_capacity, over_budget
from ..engine import SmtError
from ..fleet import ANSWERS_FILE, GENERATED_DIR, Fleet, find_root, load_answers
from ..render import RenderedTree, render_model
from ..sync import count_lines
from ..versions import changed_techniques, replaced_definitions, template_drift
from ._app import Jobs, Models, NoCache, app, handle_errors
from ._workspace import changes, open_fleet, recover, report_formatter, technique_users, write, writing


@app.command()
@handle_errors
def generate(models: Models = None, jobs: Jobs = None, no_cache: NoCache = False) -> list[str]:
    """Regenerate models from the working tree's template, techniques and specs."""
    written: list[str] = []
    fleet = open_fleet(no_cache)
    with writing(fleet.root):
        results = changes(fleet, models, "generate:", jobs)
        for entry, tree, model_changes in results:
            if model_changes and tree is not None:
                write(entry.name, entry.directory, tree)
                written.append(entry.name)
                added, removed = count_lines(model_changes)
                typer.echo(f"{entry.name}: {len(model_changes)} file(s) changed (+{added} -{removed})")
        # What `smt check` compares techniques' locks with; cached in .smt/ by the template's hash, so
        # computed here, while the renderer is warm, the next check (the pre-commit hook) reuses it.
        replaced_definitions(fleet.root, engine.load_sources(fleet.root).library)
    typer.echo(f"generate: {len(written)} model(s) updated, {len(results) - len(written)} already in sync")
    return written


@app.command()
@handle_errors
def check(
    models: Models = None,
    capacity: Annotated[bool, typer.Option("--capacity", help="Also measure every model against its serving budget (needs PyTorch).")] = False,
    jobs: Jobs = None,
    no_cache: NoCache = False,
) -> None:
    """Exit 0 when generated/ equals a fresh regeneration, 1 listing every differing file
    (and, with --capacity, every model over its serving budget)."""
    fleet = open_fleet(no_cache)
    results = changes(fleet, models, "check:", jobs)
    template_problems = template_drift(fleet.root, engine.load_library(fleet.root / engine.TECHNIQUES_DIR))
    for problem in template_problems:  # generated/ may be in sync: the technique's copy hides the template change
        typer.echo(problem.message)
    stale = [(entry, change) for entry, _, model_changes in results for change in model_changes]
    if not stale and template_problems:
        raise typer.Exit(1)
    if not stale:
        typer.echo(f"check: {len(results)} model(s) in sync")
        if capacity:
            _check_capacity(fleet, [entry.name for entry, _, _ in results])
        return
    drifts = drift.explain(fleet.root, stale, engine.load_sources(fleet.root).library)
    for item in drifts:
        typer.echo(item.describe())
    stale_models = {entry.name for entry, _ in stale}
    changed = changed_techniques(fleet.root, engine.load_sources(fleet.root).library)
    users = technique_users(fleet, [technique.name for technique, _ in changed])
    for technique, recorded in changed:  # a change without a recorded version, whatever git says
        affected = [name for name in users[technique.name] if name in stale_models]
        if affected:
            since = f"since version {recorded} was recorded" if recorded else "(not yet recorded)"
            typer.echo(f"technique {technique.name} changed {since}; it affects {len(affected)} model(s): {', '.join(affected)}")
    hand = sum(item.hand_edit for item in drifts)
    advice = (
        "Generated files are not edited by hand: move the edit into the spec "
        f"({GENERATED_DIR}/<model>/{ANSWERS_FILE}), the template or a technique, then run `smt generate`."
        if hand
        else "Review the input changes above, then run `smt generate` and commit generated/ with them."
    )
    typer.echo(f"check: {len(stale)} file(s) out of sync ({hand} hand-edited). {advice}")
    raise typer.Exit(1)


def _check_capacity(fleet: Fleet, names: list[str]) -> None:
    rows = measure_fleet_capacity(fleet.root, names)
    problems = over_budget(rows)
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"check --capacity: {len(problems)} budget(s) exceeded; shrink the model (spec hyperparameters, technique params) or raise serving: in its spec")
        raise typer.Exit(1)
    typer.echo(f"check --capacity: {len(rows)} model(s) within their serving budgets")


@app.command()
@handle_errors
def diff(
    models: Models = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Report what the working tree changes relative to this git ref.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown (a PR description) or json; with --since.")] = "text",
    jobs: Jobs = None,
) -> None:
    """Print the unified diff that `smt generate` would apply, or with --since REF a fleet impact report."""
    fleet = open_fleet()
    if since is None:
        if output_format != "text":
            raise SmtError("--format needs --since REF; add --since REF (e.g. --since main) or drop --format")
        for entry, _, model_changes in changes(fleet, models, "diff:", jobs):
            for change in model_changes:
                sys.stdout.write(change.unified_diff(entry.name))
        return
    formatter = report_formatter(output_format)
    report = review.diff_since(fleet, since, models)
    text = formatter(report)
    from ..qualification.report import format_verdicts, verdicts_for_changes  # noqa: PLC0415

    verdicts = verdicts_for_changes(fleet.root, report.changed_sources)
    if output_format == "json":
        data = json.loads(text)
        data["qualification"] = verdicts
        text = json.dumps(data, indent=2) + "\n"
    else:
        text += format_verdicts(verdicts, markdown=output_format == "markdown")
    sys.stdout.write(text)


@app.command()
@handle_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False, jobs: Jobs = None) -> None:
    """The adoption matrix (models x techniques), template versions, sync state and adoption per release."""
    fleet = open_fleet()
    library = list(engine.load_sources(fleet.root).library)
    rows = []
    for entry, _, model_changes in changes(fleet, None, "status:", jobs):
        used = entry.spec.technique_names
        rows.append({"model": entry.name, "template_version": adoption.template_version_of(entry.directory), "in_sync": not model_changes, "techniques": used})
    history = adoption.adoption_history(fleet.root)
    if as_json:
        typer.echo(json.dumps({"techniques": library, "models": rows, "adoption_by_release": history}, indent=2))
        return
    width = max([5, *(len(row["model"]) for row in rows)])
    typer.echo(f"{'model':<{width}}  {'template':<8}  {'sync':<5}  " + "  ".join(library))  # full names: columns as wide as each
    for row in rows:
        cells = "  ".join(f"{('x' if name in row['techniques'] else '.'):<{len(name)}}" for name in library)
        typer.echo(f"{row['model']:<{width}}  {row['template_version']:<8}  {('yes' if row['in_sync'] else 'NO'):<5}  {cells}".rstrip())
    pairs = sum(len(row["techniques"]) for row in rows)
    typer.echo(f"{len(rows)} models, {len(library)} techniques, {pairs} technique-model pairs adopted")
    if history:
        typer.echo("adoption by release (technique-model pairs): " + "; ".join(f"{h['release']}: {h['pairs']} (+{h['adopted']} -{h['dropped']})" for h in history))


@app.command()
@handle_errors
def new(
    name: Annotated[str, typer.Argument(help="The new model's name (a Python identifier).")],
    data_file: Annotated[Path, typer.Option("--data-file", help="YAML spec: objectives, features, serving, techniques.")],
) -> None:
    """Create generated/NAME from a spec file and generate its code."""
    fleet = open_fleet()
    with writing(fleet.root):
        recover(fleet)
        tree = _new_model(fleet, name, data_file)
    typer.echo(f"new: created {GENERATED_DIR}/{name} ({len(tree)} files); train it with `smt train {name}`")


def _new_model(fleet: Fleet, name: str, data_file: Path) -> RenderedTree:
    answers = load_answers(data_file)
    answers = {"model_name": name, **answers}  # the name first, as in every spec
    declared = answers["model_name"]
    if declared != name:
        raise SmtError(f"{name}: {data_file}: model_name is {declared!r}; make it {name!r} or drop it")
    directory = fleet.directory / name
    if directory.exists():
        raise SmtError(f"{name}: {GENERATED_DIR}/{name} already exists; edit its {ANSWERS_FILE} and run `smt generate {name}`")
    tree = render_model(fleet.root, answers, name)
    spec = {key: value for key, value in answers.items() if not key.startswith("_")}
    write(name, directory, tree, adoption.spec_text(name, spec))
    return tree


@app.command()
@handle_errors
def version() -> None:
    """Print the generator and template versions."""
    sources = engine.load_sources(find_root())
    typer.echo(f"smt {__version__}, template {sources.version}, {len(sources.library)} techniques")
