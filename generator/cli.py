"""The ``smt`` command line. Only this module prints for people and decides exit codes:
0 success, 1 ``smt check`` found drift, 2 bad input (one line naming model, file or field)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from . import __version__, engine
from .engine import SmtError
from .fleet import ANSWERS_FILE, GENERATED_DIR, Fleet, ModelEntry, find_root, load_answers
from .render import RenderedTree, render_model
from .sync import FileChange, compare, count_lines, read_tree, write_tree

DEFAULT_DEMO_MODEL = "feed_ctr"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SMT: render every model of the fleet from one standard template plus techniques.",
    pretty_exceptions_enable=False,
)

Models = Annotated[Optional[list[str]], typer.Argument(help="Model names (default: every model in generated/).")]


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _fail(error: SmtError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(2)


def _render_all(fleet: Fleet, entries: list[ModelEntry], verb: str) -> dict[str, tuple[ModelEntry, RenderedTree]]:
    """Render every model first, so any bad spec stops the run before anything is written."""
    rendered = {}
    started = time.perf_counter()
    for index, entry in enumerate(entries, 1):
        tree = render_model(fleet.root, entry.answers, entry.name)
        rendered[entry.name] = (entry, tree)
        _say(f"[{index}/{len(entries)}] {verb} {entry.name} ({len(tree)} files)")
    _say(f"rendered {len(entries)} model(s) in {time.perf_counter() - started:.1f}s")
    return rendered


def _changes(fleet: Fleet, names: list[str] | None, verb: str) -> list[tuple[ModelEntry, RenderedTree, list[FileChange]]]:
    entries = fleet.models(names)
    if not entries:
        raise SmtError(f"no models in {GENERATED_DIR}/; create one with `smt new NAME --data-file SPEC.yml`")
    results = []
    for entry, tree in _render_all(fleet, entries, verb).values():
        results.append((entry, tree, compare(read_tree(entry.directory), tree)))
    return results


@app.command()
def generate(models: Models = None) -> None:
    """Regenerate models from the working tree's template, techniques and specs."""
    try:
        fleet = Fleet(find_root())
        results = _changes(fleet, models, "rendered")
    except SmtError as error:
        raise _fail(error)
    written = 0
    for entry, tree, changes in results:
        if changes:
            write_tree(entry.directory, tree)
            written += 1
            added, removed = count_lines(changes)
            typer.echo(f"{entry.name}: {len(changes)} file(s) changed (+{added} -{removed})")
    typer.echo(f"generate: {written} model(s) updated, {len(results) - written} already in sync")


@app.command()
def check(models: Models = None) -> None:
    """Exit 0 when generated/ equals a fresh regeneration, 1 listing every differing file."""
    try:
        fleet = Fleet(find_root())
        results = _changes(fleet, models, "checked")
    except SmtError as error:
        raise _fail(error)
    stale = [(entry, change) for entry, _, changes in results for change in changes]
    if not stale:
        typer.echo(f"check: {len(results)} model(s) in sync")
        return
    for entry, change in stale:
        typer.echo(f"{GENERATED_DIR}/{entry.name}/{change.path}: {change.kind} (differs from a fresh regeneration)")
    typer.echo(
        f"check: {len(stale)} file(s) out of sync. Generated files are not edited by hand: change the spec "
        f"({GENERATED_DIR}/<model>/{ANSWERS_FILE}), the template or a technique, then run `smt generate`."
    )
    raise typer.Exit(1)


@app.command()
def diff(models: Models = None) -> None:
    """Print the unified diff that `smt generate` would apply."""
    try:
        fleet = Fleet(find_root())
        results = _changes(fleet, models, "rendered")
    except SmtError as error:
        raise _fail(error)
    for entry, _, changes in results:
        for change in changes:
            sys.stdout.write(change.unified_diff(entry.name))


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="The new model's name (a Python identifier).")],
    data_file: Annotated[Path, typer.Option("--data-file", help="YAML spec: objectives, features, serving, techniques.")],
) -> None:
    """Create generated/NAME from a spec file and generate its code."""
    try:
        fleet = Fleet(find_root())
        answers = load_answers(data_file)
        declared = answers.setdefault("model_name", name)
        if declared != name:
            raise SmtError(f"{name}: {data_file}: model_name is {declared!r}; make it {name!r} or drop it")
        directory = fleet.directory / name
        if directory.exists():
            raise SmtError(f"{name}: {GENERATED_DIR}/{name} already exists; edit its {ANSWERS_FILE} and run `smt generate {name}`")
        tree = render_model(fleet.root, answers, name)
    except SmtError as error:
        raise _fail(error)
    spec = {key: value for key, value in answers.items() if not key.startswith("_")}
    header = f"# The spec of model {name} (its Copier answers). Edit it, then run `smt generate`.\n"
    write_tree(directory, tree, header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    typer.echo(f"new: created {GENERATED_DIR}/{name} ({len(tree)} files); train it with `smt train {name}`")


@app.command()
def techniques() -> None:
    """List techniques, their summaries, and the models that use each."""
    try:
        fleet = Fleet(find_root())
        sources = engine.load_sources(fleet.root)
        users: dict[str, list[str]] = {name: [] for name in sources.library}
        for entry in fleet.models():
            for use in entry.answers.get("techniques") or []:
                if isinstance(use, dict) and use.get("name") in users:
                    users[use["name"]].append(entry.name)
    except SmtError as error:
        raise _fail(error)
    for technique in sources.library.values():
        params = ", ".join(f"{p.name}={p.default!r}" for p in technique.params) or "no params"
        used = ", ".join(users[technique.name]) or "no models yet"
        typer.echo(f"{technique.name} {technique.version}: {technique.summary}")
        typer.echo(f"    params: {params}")
        typer.echo(f"    reference: {technique.reference}")
        typer.echo(f"    used by: {used}")


def _run_model(entry: ModelEntry, *args: str) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SmtError("training needs PyTorch: pip install -e '.[torch]' (torch==2.13.0, the CPU build)") from None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(entry.directory), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.call([sys.executable, "-m", entry.name, *args], cwd=entry.directory, env=env)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="A model in generated/.")],
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    seed: Annotated[Optional[int], typer.Option(help="Override the model's seed.")] = None,
) -> None:
    """Train a generated model on its synthetic data; print per-objective logloss, NE, AUC and capacity."""
    try:
        entry = Fleet(find_root()).model(model)
        extra = ["--seed", str(seed)] if seed is not None else []
        code = _run_model(entry, "train", "--steps", str(steps), *extra)
    except SmtError as error:
        raise _fail(error)
    raise typer.Exit(code)


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Example model to train.")] = DEFAULT_DEMO_MODEL,
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
) -> None:
    """The main job on the embedded example fleet: regenerate it, then train one model and report."""
    typer.echo("== smt generate: regenerating the example fleet ==")
    generate(None)
    typer.echo(f"\n== smt train {model} --steps {steps} ==")
    train(model, steps, None)


@app.command()
def version() -> None:
    """Print the generator and template versions."""
    try:
        sources = engine.load_sources(find_root())
    except SmtError as error:
        raise _fail(error)
    typer.echo(f"smt {__version__}, template {sources.version}, {len(sources.library)} techniques")


def main() -> None:
    app()
