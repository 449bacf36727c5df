"""The qualification gate as the commands that propagate a technique use it (``adopt``, ``promote``,
``tune --apply``): their shared options, the verification (``--verify``, also ``preview --verify``)
and ``pass_gate``, which returns the CHANGELOG line saying on what evidence the change went in.

The verification trains: it runs before the caller takes the writer lock (generator.lock).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..fleet import Fleet, find_root
from ..qualification.gate import Evidence, check, check_force_reason, evidence_entry

Verify = Annotated[bool, typer.Option("--verify", help="Run a short qualification (qualification.yml's verify budget) of the affected models and their own tests first; exit 1 on a regression.")]
Force = Annotated[bool, typer.Option("--force", help="Propagate without passing qualification evidence (needs --reason).")]
Reason = Annotated[Optional[str], typer.Option("--reason", help="With --force: why; written to CHANGELOG.md.")]


def verify_models(technique: str, params: dict, models: list[str], jobs: int | None = None, threads: int | None = None, run_tests: bool = True) -> tuple[bool, str]:
    """The verification of ``--verify``: a short qualification of ``models`` under the gate's rules
    (regression, calibration, NE and capacity; the mean-gain rule is promotion's) plus each
    candidate's own tests. Prints the report and what failed; returns (passed, what was verified).
    Raises SmtError."""
    from ..qualification import load_criterion  # noqa: PLC0415 - trains models: only with --verify
    from ..qualification import report as qreport  # noqa: PLC0415
    from ..qualification.gate import run_model_tests  # noqa: PLC0415
    from ..qualification.run import qualify as run_qualification  # noqa: PLC0415
    from ..qualification.variants import Change  # noqa: PLC0415

    root = find_root()
    criterion = replace(load_criterion(root), min_mean_gain=-float("inf"))  # the gate stops harm only
    change = Change(technique=technique, params=dict(params))
    with tempfile.TemporaryDirectory(prefix="smt-verify-") as scratch:
        q = run_qualification(
            Fleet(root), change, criterion, on=",".join(models), seeds=criterion.verify_seeds,
            steps=criterion.verify_steps, jobs=jobs, threads=threads, scratch=Path(scratch),
        )
        typer.echo(qreport.format_text(q), nl=False)
        failures = list(q.verdict.reasons)
        if run_tests:
            for name in q.models:
                passed, tail = run_model_tests(Path(scratch) / "candidate" / name, name, q.parallel.threads)
                typer.echo(f"verify: {name}: its own tests {'pass' if passed else 'FAIL'} with {change.label}" + ("" if passed else f": {tail}"))
                if not passed:
                    failures.append(f"{name}: its own tests fail: {tail}")
    for reason in failures:
        typer.echo(f"verify: {reason}")
    what = f"{len(q.models)} model(s): {', '.join(q.models)}; {criterion.verify_seeds} seed(s), {criterion.verify_steps} steps" + (", own tests" if run_tests else "")
    typer.echo(f"verify: {'passed' if not failures else 'FAILED'} ({what})")
    return not failures, what


def pass_gate(found: Evidence, models: list[str], *, verify: bool, force: bool, reason: str | None, jobs: int | None = None, threads: int | None = None) -> str:
    """Let the change into ``models`` or stop the command: GateRefused (exit 1, one line) without
    evidence, ``typer.Exit(1)`` when a verification fails (asked for, it counts even with
    --force, which only overrides the records). Returns the CHANGELOG line."""
    check_force_reason(force, reason)
    check(found, models, verify=verify, force=force)
    what = None
    if verify and models:
        passed, what = verify_models(found.technique, found.params, models, jobs, threads)
        if not passed:
            raise typer.Exit(1)
    if force:
        return evidence_entry(found, forced=reason)
    return evidence_entry(found, verified=what) if what is not None else evidence_entry(found)

