"""MkDocs hook: the CLI reference page, generated from the Typer app at build time.

``docs/reference/cli.md`` holds the marker ``<!-- smt-cli-reference -->``; this hook replaces it
with one section per command (usage, help, arguments and options) read from the click command
that Typer builds, so the page cannot drift from the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- smt-cli-reference -->"
PAGE = "reference/cli.md"
ROOT = Path(__file__).resolve().parents[2]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _metavar(param: Any) -> str:
    return f"{param.metavar or param.name.upper()}{'...' if param.nargs == -1 else ''}"


def _usage(command: Any, context: Any, name: str) -> str:
    pieces = [name, "[OPTIONS]"]
    for param in command.get_params(context):
        if param.param_type_name == "argument":
            pieces.append(_metavar(param) if param.required else f"[{_metavar(param)}]")
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _section(command: Any, context: Any, path: list[str]) -> list[str]:
    name = " ".join(path)
    usage = _usage(command, context, name)
    lines = [f"## `{name}`", "", "```text", f"Usage: {usage}", "```", ""]
    help_text = (command.help or "").strip()
    if help_text:
        lines += [help_text.replace("\b\n", ""), ""]
    rows = []
    for param in command.get_params(context):
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            label = f"`{_metavar(param)}`"
        else:
            label = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        default = param.default
        shown = "" if default is None or param.param_type_name == "argument" or callable(default) else f"`{default}`"
        rows.append(f"| {label} | {_cell(getattr(param, 'help', None) or '')} | {shown} |")
    if rows:
        lines += ["| argument / option | meaning | default |", "|---|---|---|", *rows, ""]
    return lines


def cli_reference() -> str:
    """The Markdown of every smt command, in the order `smt --help` lists them."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import typer  # noqa: PLC0415

    from generator.cli import app  # noqa: PLC0415

    top = typer.main.get_command(app)
    context = top.make_context("smt", [], resilient_parsing=True)
    lines: list[str] = []

    def walk(command: Any, ctx: Any, path: list[str]) -> None:
        lines.extend(_section(command, ctx, path))
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(ctx):
                child = command.get_command(ctx, sub)
                walk(child, type(ctx)(child, info_name=sub, parent=ctx), [*path, sub])

    for sub in top.list_commands(context):
        child = top.get_command(context, sub)
        walk(child, type(context)(child, info_name=sub, parent=context), ["smt", sub])
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Fill the CLI reference page; leave every other page alone."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lacks the marker {MARKER}")
    return markdown.replace(MARKER, cli_reference())
