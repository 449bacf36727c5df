"""``smt blame``: which technique, local technique or template file wrote a generated line."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app, handle_errors
from ._workspace import open_fleet


@app.command()
@handle_errors
def blame(location: Annotated[str, typer.Argument(help="generated/<model>/<file>:<line> or :<first>-<last>")]) -> None:
    """Say which technique (name and version), local technique or template file wrote a line (or each line of a range)."""
    from ..blame import blame as blame_lines  # noqa: PLC0415 - imports the engine's formatter

    attributions = blame_lines(open_fleet().root, location)
    path = location.rpartition(":")[0]
    for attribution in attributions:
        where = location if len(attributions) == 1 else f"{path}:{attribution.line}"
        typer.echo(f"{where}: {attribution.author} ({attribution.source})")
        typer.echo(f"    {attribution.text.strip()}")
