"""Model-repo commands: ``smt conflicts`` and ``smt regenerate`` (for model repos and pre-commit hooks).

- ``smt conflicts [DIR] [--check-update]``: after ``copier update`` (which exits 0 even when
  conflicts remain), exit 1 listing leftover conflict markers and unmerged paths; with
  ``--check-update``, also say whether the SMT repo has a newer release (never fails on that).
- ``smt regenerate [MODEL...]``: ``smt generate``, then exit 1 when it rewrote anything, so a
  pre-commit hook makes the user re-stage ``generated/`` (as formatters do).

Exit codes as everywhere in ``smt``: 0 fine, 1 found something to fix, 2 bad input (one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..engine import SmtError
from ..fleet import GENERATED_DIR
from ..model_repo import UPDATE_COMMAND, check_update, find_conflicts
from ._app import Models, app, handle_errors
from .fleet import generate


@app.command()
@handle_errors
def conflicts(
    directory: Annotated[Path, typer.Argument(help="A folder of the model repo (default: here).")] = Path(
        "."
    ),
    check_for_update: Annotated[
        bool,
        typer.Option(
            "--check-update", help="Also say whether the SMT repo has a newer release (never fails on it)."
        ),
    ] = False,
) -> None:
    """Exit 1 listing leftover conflict markers and unmerged paths of a model repo (copier update exits 0 anyway)."""
    found = find_conflicts(directory)
    for conflict in found:
        typer.echo(str(conflict))
    if found:
        files = len({conflict.path for conflict in found})
        typer.echo(
            f"conflicts: {len(found)} problem(s) in {files} file(s). In each block keep the side you want "
            "('before updating' is your repo, 'after updating' the new release), delete the marker lines, "
            "then `git add` the file."
        )
    else:
        typer.echo("conflicts: none")
    if check_for_update:
        try:
            status = check_update(directory)
        except SmtError as error:
            typer.echo(f"update check skipped: {error}")
        else:
            if status.available:
                typer.echo(
                    f"update available: SMT template {status.latest} (this repo is on {status.current}); "
                    f"with a clean work tree run `{UPDATE_COMMAND}`, then `smt conflicts`"
                )
            else:
                typer.echo(f"up to date with SMT template {status.current}")
    if found:
        raise typer.Exit(1)


@app.command()
@handle_errors
def regenerate(models: Models = None) -> None:
    """`smt generate`, then exit 1 if it rewrote any file (pre-commit: `git add generated/` and commit again)."""
    changed = generate(models)  # the models whose files it rewrote
    if changed:
        typer.echo(
            f"regenerate: rewrote {', '.join(f'{GENERATED_DIR}/{name}' for name in changed)}; "
            f"review and stage it (`git add {GENERATED_DIR}/`), then commit again"
        )
        raise typer.Exit(1)
