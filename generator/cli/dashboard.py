"""``smt dashboard OUT``: write the fleet dashboard, a static site that opens from disk."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..capacity import measure_fleet_capacity
from ..dashboard import check_output, collect_dashboard, write_dashboard
from ..engine import SmtError
from ._app import Jobs, app, handle_errors, say
from ._workspace import changes, open_fleet


@app.command()
@handle_errors
def dashboard(
    out: Annotated[Path, typer.Argument(help="Folder to write (new, empty, or a previous dashboard, which is replaced).")],
    capacity: Annotated[
        Optional[bool],
        typer.Option("--capacity/--no-capacity", help="Measure every model against its serving budget (a PyTorch subprocess). Default: when PyTorch is installed."),
    ] = None,
    jobs: Jobs = None,
) -> None:
    """Write a static fleet dashboard to OUT: adoption matrix, releases, qualifications, tuning, capacity, runs."""
    started = time.perf_counter()
    check_output(out)  # before any work: a bad OUT is one line, nothing written
    fleet = open_fleet()
    differing = {entry.name: len(model_changes) for entry, _, model_changes in changes(fleet, None, "dashboard:", jobs)}
    has_torch = importlib.util.find_spec("torch") is not None
    if capacity and not has_torch:
        raise SmtError("--capacity builds the models and needs PyTorch: pip install -e '.[torch]', or pass --no-capacity")
    rows, note = None, "--no-capacity" if capacity is False else "PyTorch is not installed (pip install -e '.[torch]')"
    if capacity or (capacity is None and has_torch):
        say(f"dashboard: measuring the capacity of {len(differing)} model(s) (one PyTorch subprocess)")
        rows = measure_fleet_capacity(fleet.root)
        note = "the generated code's capacity report, computed from the spec"
    board = collect_dashboard(fleet, differing, rows, note)
    written = write_dashboard(out, board)
    data = board.data
    typer.echo(
        f"dashboard: wrote {written[0]} and {len(written) - 1} plot(s): {board.model_count} models, {len(data['techniques'])} techniques, "
        f"{len(data['releases']['releases'])} release(s), {len(data['qualifications'])} qualification(s), {len(data['tuning'])} tuning stud(ies), "
        f"capacity {'measured' if rows is not None else 'not measured'}, runs of {data['runs']['models_with_runs']} model(s); "
        f"{time.perf_counter() - started:.1f}s"
    )
