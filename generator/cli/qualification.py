"""Template-iteration commands: ``smt representatives``, ``smt qualify`` and ``smt promote``.

Each is a thin wrapper over ``generator.representatives`` and ``generator.qualification``, imported
when the command runs: they bring clustering and training code that other commands must not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .. import engine
from ..engine import SmtError
from ..fleet import Fleet, find_root
from ._app import TrialJobs, TrialThreads, app, handle_errors
from ._gate import Force, Reason, Verify, pass_gate
from ._workspace import writing

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
    jobs: int | None,
    threads: int | None,
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
    q = run_qualification(fleet, change, criterion, on=on, seeds=seeds, steps=steps, jobs=jobs, threads=threads, capacity_neutral=capacity_neutral)
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
    jobs: TrialJobs = None,
    threads: TrialThreads = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder (default qualification/reports/<change>[-<technique version>]-template-<version>).")] = None,
    capacity_neutral: Annotated[Optional[bool], typer.Option("--capacity-neutral/--no-capacity-neutral", help="Shrink the candidate's MLP widths to the baseline's MFLOPs.")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Store the verdict in qualification/records/ (techniques only).")] = True,
) -> None:
    """Train baseline and candidate of the chosen models with paired seeds and decide by qualification.yml.

    Exit 0 when the change qualifies, 1 when it does not, 2 on bad input."""
    q, _ = run_and_report(change, against, on, seeds, steps, jobs, threads, report, capacity_neutral, record)
    raise typer.Exit(0 if q.verdict.passed else 1)


@app.command()
@handle_errors
def promote(
    technique: Annotated[str, typer.Argument(help="A technique (or technique:k=v,... as qualified) with a passing qualification record.")],
    except_models: Annotated[Optional[str], typer.Option("--except", help="Models that opt out: a,b.")] = None,
    verify: Verify = False,
    force: Force = False,
    reason: Reason = None,
    jobs: TrialJobs = None,
    threads: TrialThreads = None,
    release: Annotated[bool, typer.Option("--release/--no-release", help="Commit the release's files and tag the commit v<VERSION> (in a git work tree).")] = True,
) -> None:
    """Make a qualified TECHNIQUE a template default: adopt it in every eligible model (except
    opt-outs), bump template_repo/VERSION, regenerate the fleet, add a CHANGELOG entry, and commit
    and tag the release v<VERSION>. Without a passing qualification record it refuses (exit 1)
    unless --verify passes or --force --reason is given."""
    from .. import release as releases  # noqa: PLC0415
    from ..lock import check_inputs, snapshot_inputs  # noqa: PLC0415
    from ..promotion import next_version, plan_promotion, release_paths  # noqa: PLC0415
    from ..promotion import promote as run_promotion  # noqa: PLC0415

    opt_out = [name.strip() for name in (except_models or "").split(",") if name.strip()]
    fleet = Fleet(find_root())
    plan = plan_promotion(fleet, technique, opt_out)
    tagging = release and releases.in_git(fleet.root)
    if tagging:
        releases.check_releasable(fleet.root, next_version(engine.load_sources(fleet.root).version), release_paths())
    inputs = snapshot_inputs(fleet.root, fleet.names())
    entry = pass_gate(plan.evidence, plan.eligible, verify=verify, force=force, reason=reason, jobs=jobs, threads=threads)
    try:
        with writing(fleet.root):  # a writer, like generate/adopt/drop; the verification ran before
            check_inputs(fleet.root, inputs, f"promote {technique}")
            done = run_promotion(fleet, plan, entry)
            tag = releases.commit_and_tag(fleet.root, done.new_version, release_paths(), f"SMT template {done.new_version}: promote {plan.evidence.label}") if tagging else None
    except OSError as exc:  # permission, disk full: every model is old or new (write_tree's swap)
        raise SmtError(f"promote {technique}: cannot write generated/ ({exc}); fix the cause and run it again") from None
    for name in done.adopted:
        typer.echo(f"{name}: adopted {technique}")
    for name, why in done.not_applicable:
        typer.echo(f"{name}: not applicable: {why}")
    for name in done.opted_out:
        typer.echo(f"{name}: opted out")
    typer.echo(
        f"promote: {technique} is a template default; template {done.old_version} -> {done.new_version},"
        f" {len(done.regenerated)} model(s) regenerated, CHANGELOG.md says on what evidence"
        + (f" ({done.report}/report.md)" if done.report and not force and not verify else "")
    )
    typer.echo(f"release: committed and tagged {tag}" if tag else release_note(fleet.root, done.new_version, release))


def release_note(root: Path, version: str, release: bool) -> str:
    """What to do to make the release when smt did not tag it."""
    why = "--no-release" if not release else "not a git work tree with a commit"
    return f"release: not tagged ({why}); commit the changes and `git tag -a v{version}` to publish it to model repos"
