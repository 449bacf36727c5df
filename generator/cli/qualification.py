"""Template-iteration commands: ``smt representatives``, ``smt qualify`` and ``smt promote``.

Each is a thin wrapper over ``generator.representatives`` and ``generator.qualification``, imported
when the command runs: they bring clustering and training code that other commands must not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..engine import SmtError
from ..fleet import Fleet, find_root
from ..lock import fleet_lock
from ._app import app, handle_errors

if TYPE_CHECKING:
    from ..qualification.run import Qualification


@app.command("representatives")
@handle_errors
def representatives_command(
    k: Annotated[str, typer.Option("-k", help="Number of clusters, or auto (best silhouette).")] = "auto",
    radius: Annotated[Optional[float], typer.Option(help="Coverage distance (default: half the median distance between two models).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Cluster the fleet by model descriptors; print each cluster's representative (medoid), members,
    what sets it apart, and the coverage."""
    from .. import representatives as reps  # noqa: PLC0415

    chosen_k: int | str = "auto" if k == "auto" else int(k) if k.isdigit() else -1
    if chosen_k == -1:
        raise SmtError(f"-k {k!r}: give a number of clusters or auto")
    result = reps.choose(Fleet(find_root()), chosen_k, radius)
    if as_json:
        typer.echo(json.dumps(reps.to_json(result), indent=2))
    else:
        typer.echo(reps.format_text(result), nl=False)


def run_and_report(
    change_text: str | None,
    against: str | None,
    on: str | None,
    seeds: int | None,
    steps: int | None,
    jobs: int,
    report_dir: Path | None,
    capacity_neutral: bool | None,
    record: bool,
) -> tuple[Qualification, Path]:
    """Qualify, print the summary, write the report (and the technique's record). Raises SmtError."""
    from ..qualification import load_criterion  # noqa: PLC0415
    from ..qualification import report as qreport  # noqa: PLC0415
    from ..qualification.run import qualify as run_qualification  # noqa: PLC0415
    from ..qualification.variants import parse_change  # noqa: PLC0415

    root = find_root()
    fleet = Fleet(root)
    criterion = load_criterion(root)
    change = parse_change(change_text, against)
    if jobs < 1:
        raise SmtError("--jobs must be at least 1")
    q = run_qualification(fleet, change, criterion, on=on, seeds=seeds, steps=steps, jobs=jobs, capacity_neutral=capacity_neutral)
    directory = report_dir or qreport.default_report_dir(root, q)
    qreport.write_report(q, directory)
    typer.echo(qreport.format_text(q), nl=False)
    typer.echo(f"report: {directory}/report.md, report.json, deltas.png")
    if record:
        path = qreport.write_record(root, q, directory)
        if path:
            typer.echo(f"verdict recorded in {path.relative_to(root)} ({q.change.technique} {q.technique_version}, template {q.template_version})")
    return q, directory


@app.command()
@handle_errors
def qualify(
    change: Annotated[Optional[str], typer.Argument(help="A technique with params: dcn_v2 or dcn_v2:num_cross_layers=3,low_rank=8.")] = None,
    against: Annotated[Optional[str], typer.Option("--against", help="Qualify the working tree's template/technique changes against this git ref.")] = None,
    on: Annotated[Optional[str], typer.Option("--on", help="representatives, all, or models a,b (default: qualification.yml).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Paired seeds per model (default: qualification.yml).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Most training steps per trial (default: qualification.yml).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Trials run in parallel; each gets max(1, cores // jobs) torch threads.")] = 1,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder (default qualification/reports/<change>-template-<version>).")] = None,
    capacity_neutral: Annotated[Optional[bool], typer.Option("--capacity-neutral/--no-capacity-neutral", help="Shrink the candidate's MLP widths to the baseline's MFLOPs.")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Store the verdict in qualification/records/ (techniques only).")] = True,
) -> None:
    """Train baseline and candidate of the chosen models with paired seeds and decide by qualification.yml.

    Exit 0 when the change qualifies, 1 when it does not, 2 on bad input."""
    q, _ = run_and_report(change, against, on, seeds, steps, jobs, report, capacity_neutral, record)
    raise typer.Exit(0 if q.verdict.passed else 1)


def verify_models(technique: str, params: dict, models: list[str], run_tests: bool = True) -> bool:
    """The gate of ``preview --verify``/``adopt --verify``: a short qualification of ``models``
    (regression, calibration and capacity rules; the mean-gain rule is for promotion) plus each
    candidate's own tests. Prints what failed; returns True when nothing did. Raises SmtError."""
    import tempfile  # noqa: PLC0415
    from dataclasses import replace  # noqa: PLC0415

    from ..qualification import load_criterion  # noqa: PLC0415
    from ..qualification import report as qreport  # noqa: PLC0415
    from ..qualification.criterion import evaluate  # noqa: PLC0415
    from ..qualification.gate import run_model_tests  # noqa: PLC0415
    from ..qualification.run import qualify as run_qualification  # noqa: PLC0415
    from ..qualification.variants import Change  # noqa: PLC0415

    root = find_root()
    criterion = load_criterion(root)
    change = Change(technique=technique, params=dict(params))
    label = change.label
    with tempfile.TemporaryDirectory(prefix="smt-verify-") as scratch:
        q = run_qualification(
            Fleet(root), change, criterion, on=",".join(models),
            seeds=criterion.verify_seeds, steps=criterion.verify_steps, scratch=Path(scratch),
        )
        gate = evaluate(replace(criterion, min_mean_gain=-float("inf")), q.results)
        typer.echo(qreport.format_text(q), nl=False)
        failures = list(gate.reasons)
        if run_tests:
            for name in q.models:
                passed, tail = run_model_tests(Path(scratch) / "candidate" / name, name)
                typer.echo(f"verify: {name}: its own tests {'pass' if passed else 'FAIL'} with {label}" + ("" if passed else f": {tail}"))
                if not passed:
                    failures.append(f"{name}: its own tests fail: {tail}")
    for reason in failures:
        typer.echo(f"verify: {reason}")
    typer.echo(f"verify: {'passed' if not failures else 'FAILED'} ({len(q.models)} model(s), {criterion.verify_seeds} seed(s), {criterion.verify_steps} steps)")
    return not failures


@app.command()
@handle_errors
def promote(
    technique: Annotated[str, typer.Argument(help="A technique (or technique:k=v,... as qualified) with a passing qualification record.")],
    except_models: Annotated[Optional[str], typer.Option("--except", help="Models that opt out: a,b.")] = None,
) -> None:
    """Make a qualified TECHNIQUE a template default: adopt it in every eligible model (except
    opt-outs), bump template_repo/VERSION, regenerate the fleet and add a CHANGELOG entry."""
    from ..promotion import promote as run_promotion  # noqa: PLC0415

    opt_out = [name.strip() for name in (except_models or "").split(",") if name.strip()]
    fleet = Fleet(find_root())
    try:
        with fleet_lock(fleet.root):  # a writer, like generate/adopt/drop
            done = run_promotion(fleet, technique, opt_out)
    except OSError as exc:  # permission, disk full: every model is old or new (write_tree's swap)
        raise SmtError(f"promote {technique}: cannot write generated/ ({exc}); fix the cause and run it again") from None
    for name in done.adopted:
        typer.echo(f"{name}: adopted {technique}")
    for name, reason in done.not_applicable:
        typer.echo(f"{name}: not applicable: {reason}")
    for name in done.opted_out:
        typer.echo(f"{name}: opted out")
    typer.echo(
        f"promote: {technique} is a template default; template {done.old_version} -> {done.new_version},"
        f" {len(done.regenerated)} model(s) regenerated, CHANGELOG.md cites {done.report}/report.md"
    )
