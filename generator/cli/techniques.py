"""Technique commands: ``smt techniques`` (list), ``techniques show NAME`` and ``techniques lock``."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import compatibility, engine
from ..engine import SmtError
from ..fleet import find_root
from ..impact import measure_impact
from ..versions import version_problems, write_lock
from ._app import app, handle_errors
from ._workspace import open_fleet, technique_users

techniques_app = typer.Typer(
    help="List techniques (default), show one, or record their versions.", invoke_without_command=True, no_args_is_help=False
)
app.add_typer(techniques_app, name="techniques")


@techniques_app.callback()
@handle_errors
def techniques(ctx: typer.Context) -> None:
    """List techniques, their summaries, and the models that use each."""
    if ctx.invoked_subcommand is not None:
        return
    fleet = open_fleet()
    sources = engine.load_sources(fleet.root)
    users = technique_users(fleet, list(sources.library))
    for technique in sources.library.values():
        params = ", ".join(f"{p.name}={p.default!r}" for p in technique.params) or "no params"
        used = ", ".join(users[technique.name]) or "no models yet"
        typer.echo(f"{technique.name} {technique.version}: {technique.summary}")
        typer.echo(f"    params: {params}")
        typer.echo(f"    reference: {technique.reference}")
        typer.echo(f"    used by: {used}")


@techniques_app.command("lock")
@handle_errors
def techniques_lock(
    check_only: Annotated[bool, typer.Option("--check", help="Only verify; exit 1 on a change without a version bump.")] = False,
) -> None:
    """Record every technique's version and fingerprint in techniques/fingerprints.yml."""
    root = find_root()
    library = engine.load_sources(root).library
    problems = version_problems(root, library)
    if check_only:
        for problem in problems:
            typer.echo(problem.message)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"techniques lock: {len(library)} technique versions match their fingerprints")
        return
    unbumped = [p for p in problems if "bump version" in p.message]
    if unbumped:
        for problem in unbumped:
            typer.echo(f"error: {problem.message}", err=True)
        raise typer.Exit(2)
    write_lock(root, library)
    typer.echo(f"techniques lock: recorded {len(library)} technique(s)")


@techniques_app.command("show")
@handle_errors
def techniques_show(
    name: Annotated[str, typer.Argument(help="Technique name.")],
    impact: Annotated[bool, typer.Option("--impact", help="Measure parameter and MFLOP deltas on every eligible model (needs PyTorch).")] = False,
) -> None:
    """Print a technique's summary, reference, params, preconditions, requires/conflicts, extension points and patch."""
    fleet = open_fleet()
    sources = engine.load_sources(fleet.root)
    technique = sources.library.get(name)
    if technique is None:
        raise SmtError(f"{name}: unknown technique; use one of: {', '.join(sources.library) or 'none'} (see `smt techniques`)")
    users = technique_users(fleet, [name])[name]
    typer.echo(f"{technique.name} {technique.version}: {technique.summary}")
    typer.echo(f"reference: {technique.reference}")
    typer.echo("params:" if technique.params else "params: none")
    for param in technique.params:
        bounds = "".join(f", {key} {value}" for key, value in (("min", param.min), ("max", param.max), ("choices", param.choices)) if value is not None)
        typer.echo(f"  {param.name}: {param.type} = {param.default!r}{bounds}  {param.help}")
    typer.echo(f"preconditions: {', '.join(f'{k} {v}' for k, v in technique.applies_to) or 'none'}")
    for key in ("requires", "builds_on", "after", "conflicts"):
        typer.echo(f"{key}: {', '.join(getattr(technique, key)) or 'none'}")
    incompatible = compatibility.incompatible_with(technique, sources.library, sources)
    typer.echo(f"cannot be combined with: {', '.join(f'{item.other} ({item.reason})' for item in incompatible) or 'none'}")
    undeclared = [item.other for item in incompatible if item.reason != "declared conflict"]
    if undeclared:
        typer.echo(
            f"    alternatives replacing the same extension point: declare `conflicts: [{', '.join(undeclared)}]` in "
            f"techniques/{name}/technique.yml (builds_on is only for a technique that extends the other's replacement)"
        )
    used_points = compatibility.extension_points_used(technique, sources)
    typer.echo(f"extension points: {', '.join(map(str, used_points)) or 'none'}")
    typer.echo(f"used by: {', '.join(users) or 'no models yet'}")
    for target, source in technique.patches:
        typer.echo(f"\n--- techniques/{name}/{target} (patch for {target}) ---")
        typer.echo(source.rstrip())
    if not impact:
        return
    rows = measure_impact(fleet, technique)
    typer.echo(f"\nimpact of {name} (defaults for models that do not use it yet):")
    typer.echo(f"{'model':<20} {'params without':>15} {'params with':>12} {'delta':>9} {'MFLOPs without':>15} {'MFLOPs with':>12} {'delta':>9}")
    for row in rows:
        if row.skipped:
            typer.echo(f"{row.model:<20} skipped: {row.skipped}")
            continue
        typer.echo(
            f"{row.model:<20} {row.params_without:>15,} {row.params_with:>12,} {row.params_with - row.params_without:>+9,} "
            f"{row.mflops_without:>15.4f} {row.mflops_with:>12.4f} {row.mflops_with - row.mflops_without:>+9.4f}"
        )
