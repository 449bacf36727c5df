"""The ``smt`` command line. Only this module prints for people and decides exit codes:
0 success, 1 ``smt check`` found drift, 2 bad input (one line naming model, file or field)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, adoption, compatibility, drift, engine, review
from .engine import SmtError
from .capacity import measure_fleet_capacity, over_budget
from .impact import measure_impact
from .fleet import ANSWERS_FILE, GENERATED_DIR, Fleet, ModelEntry, find_root, load_answers
from .render import RenderedTree, render_model
from .cache import RenderCache
from .regeneration import default_jobs, fleet_changes
from .lock import fleet_lock, lock_if_free
from .sync import FileChange, count_lines, recover_swaps, write_tree
from .versions import changed_techniques, template_drift, version_problems, write_lock

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


Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Processes rendering models (default: one per CPU).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Render every model, ignoring (and not trusting) .smt/cache.")]


_CACHES: dict[Path, RenderCache] = {}


def _fleet(no_cache: bool = False) -> Fleet:
    """The fleet of the current SMT repository, reading specs through the render cache, which is
    also attached to the engine (``--no-cache`` or SMT_NO_CACHE=1: an always-empty cache)."""
    root = find_root()
    cache = _CACHES[root] = RenderCache(root, enabled=not no_cache and not os.environ.get("SMT_NO_CACHE"))
    engine.use_store(cache)
    return Fleet(root, cache.load_answers)


def _cache(fleet: Fleet) -> RenderCache:
    return _CACHES.get(fleet.root) or RenderCache(fleet.root, enabled=not os.environ.get("SMT_NO_CACHE"))


class _ProgressBar:
    """A progress bar on stderr while models render, only when stderr is a terminal."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from rich.progress import Progress  # noqa: PLC0415 - only for terminals

            from rich.console import Console  # noqa: PLC0415

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"{self.verb} models", total=total)
        self.bar.update(self.task, completed=done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _recover(fleet: Fleet) -> None:
    """Finish or undo swaps a killed writer left behind (only when no writer is running now)."""
    with lock_if_free(fleet.root) as free:
        if free:
            try:
                notices = recover_swaps(fleet.directory)
            except OSError as exc:
                raise SmtError(f"{GENERATED_DIR}/: cannot recover an interrupted regeneration ({exc}); fix the cause and run the command again") from None
            for notice in notices:
                _say(f"note: {notice}")


def _write(entry_name: str, directory: Path, tree: RenderedTree, answers_text: str | None = None) -> None:
    """write_tree, with an OS error (permission, disk full) as one line naming the model."""
    try:
        write_tree(directory, tree, answers_text)
    except OSError as exc:
        raise SmtError(
            f"{entry_name}: cannot write {GENERATED_DIR}/{entry_name} ({exc}); it was left as it was, models before it "
            f"were written; fix the cause and run the command again"
        ) from None


def _changes(fleet: Fleet, names: list[str] | None, verb: str, jobs: int | None = None) -> list[tuple[ModelEntry, RenderedTree | None, list[FileChange]]]:
    _recover(fleet)
    entries = fleet.models(names)
    if not entries:
        raise SmtError(f"no models in {GENERATED_DIR}/; create one with `smt new NAME --data-file SPEC.yml`")
    bar = _ProgressBar(verb)
    try:
        run = fleet_changes(fleet.root, entries, jobs or default_jobs(), _cache(fleet), bar)
    finally:
        bar.close()
    _say(
        f"{verb} {len(entries)} model(s) in {run.seconds:.1f}s: {run.rendered} rendered "
        f"({run.jobs} job(s)), {run.cached} unchanged since their last render (cache)"
    )
    return [(result.entry, result.tree, result.changes) for result in run.results]


@app.command()
def generate(models: Models = None, jobs: Jobs = None, no_cache: NoCache = False) -> list[str]:
    """Regenerate models from the working tree's template, techniques and specs."""
    written: list[str] = []
    try:
        fleet = _fleet(no_cache)
        with fleet_lock(fleet.root):
            results = _changes(fleet, models, "generate:", jobs)
            for entry, tree, changes in results:
                if changes and tree is not None:
                    _write(entry.name, entry.directory, tree)
                    written.append(entry.name)
                    added, removed = count_lines(changes)
                    typer.echo(f"{entry.name}: {len(changes)} file(s) changed (+{added} -{removed})")
    except SmtError as error:
        raise _fail(error)
    typer.echo(f"generate: {len(written)} model(s) updated, {len(results) - len(written)} already in sync")
    return written


@app.command()
def check(
    models: Models = None,
    capacity: Annotated[bool, typer.Option("--capacity", help="Also measure every model against its serving budget (needs PyTorch).")] = False,
    jobs: Jobs = None,
    no_cache: NoCache = False,
) -> None:
    """Exit 0 when generated/ equals a fresh regeneration, 1 listing every differing file
    (and, with --capacity, every model over its serving budget)."""
    try:
        fleet = _fleet(no_cache)
        results = _changes(fleet, models, "check:", jobs)
        drift = template_drift(fleet.root, engine.load_library(fleet.root / engine.TECHNIQUES_DIR))
    except SmtError as error:
        raise _fail(error)
    for problem in drift:  # generated/ may be in sync: the technique's copy hides the template change
        typer.echo(problem.message)
    stale = [(entry, change) for entry, _, changes in results for change in changes]
    if not stale and drift:
        raise typer.Exit(1)
    if not stale:
        typer.echo(f"check: {len(results)} model(s) in sync")
        if capacity:
            _check_capacity(fleet, [entry.name for entry, _, _ in results])
        return
    try:
        drifts = drift.explain(fleet.root, stale, engine.load_sources(fleet.root).library)
    except SmtError as error:
        raise _fail(error)
    for item in drifts:
        typer.echo(item.describe())
    stale_models = {entry.name for entry, _ in stale}
    try:
        changed = changed_techniques(fleet.root, engine.load_sources(fleet.root).library)
        users = _users(fleet, [technique.name for technique, _ in changed])
    except SmtError as error:
        raise _fail(error)
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
    try:
        rows = measure_fleet_capacity(fleet.root, names)
    except SmtError as error:
        raise _fail(error)
    problems = over_budget(rows)
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"check --capacity: {len(problems)} budget(s) exceeded; shrink the model (spec hyperparameters, technique params) or raise serving: in its spec")
        raise typer.Exit(1)
    typer.echo(f"check --capacity: {len(rows)} model(s) within their serving budgets")


@app.command()
def diff(
    models: Models = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Report what the working tree changes relative to this git ref.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown (a PR description) or json; with --since.")] = "text",
    jobs: Jobs = None,
) -> None:
    """Print the unified diff that `smt generate` would apply, or with --since REF a fleet impact report."""
    try:
        fleet = _fleet()
        if since is None:
            if output_format != "text":
                raise SmtError("--format needs --since REF; add --since REF (e.g. --since main) or drop --format")
            results = _changes(fleet, models, "diff:", jobs)
        else:
            formatter = _formatter(output_format)
            report = review.diff_since(fleet, since, models)
    except SmtError as error:
        raise _fail(error)
    if since is None:
        for entry, _, changes in results:
            for change in changes:
                sys.stdout.write(change.unified_diff(entry.name))
        return
    text = formatter(report)
    try:
        from .qualification.report import format_verdicts, verdicts_for_changes

        verdicts = verdicts_for_changes(fleet.root, report.changed_sources)
    except SmtError as error:
        raise _fail(error)
    if output_format == "json":
        data = json.loads(text)
        data["qualification"] = verdicts
        text = json.dumps(data, indent=2) + "\n"
    else:
        text += format_verdicts(verdicts, markdown=output_format == "markdown")
    sys.stdout.write(text)


def _formatter(name: str):  # type: ignore[no-untyped-def]
    if name not in review.FORMATTERS:
        raise SmtError(f"--format {name!r}: choose one of {', '.join(review.FORMATTERS)}")
    return review.FORMATTERS[name]


Params = Annotated[Optional[list[str]], typer.Option("--param", help="Technique param NAME=VALUE (repeatable; YAML values).")]
ModelsOption = Annotated[Optional[list[str]], typer.Option("--models", help="Models to change: comma-separated or repeated (--models a,b).")]
Where = Annotated[Optional[str], typer.Option("--where", help="Select models by expression, e.g. \"num_objectives >= 2\".")]
AllEligible = Annotated[bool, typer.Option("--all-eligible", help="Every model the technique applies to.")]
Verify = Annotated[bool, typer.Option("--verify", help="Also run a short qualification (qualification.yml's verify budget) and each model's own tests; exit 1 on a regression.")]


@app.command()
def preview(
    technique: Annotated[str, typer.Argument(help="Technique to preview.")],
    models: ModelsOption = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
    verify: Verify = False,
) -> None:
    """Show what adopting TECHNIQUE would change in each model, without writing anything."""
    try:
        fleet = _fleet()
        if technique not in engine.load_sources(fleet.root).library:
            raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
        entries = adoption.select(fleet, models, None, all_eligible or not models)
        report = review.preview(fleet, technique, [entry.name for entry in entries], adoption.parse_params(param))
        formatter = _formatter(output_format)
    except SmtError as error:
        raise _fail(error)
    sys.stdout.write(formatter(report))
    if verify:
        _verify_or_exit(technique, adoption.parse_params(param), [impact.model for impact in report.models])


def _verify_or_exit(technique: str, params: dict, models: list[str]) -> None:
    """The verification gate: exit 1 when a model regresses or its own tests fail (2 on bad input)."""
    from .cli_qualify import verify_models

    if not models:
        return
    try:
        ok = verify_models(technique, params, models)
    except SmtError as error:
        raise _fail(error)
    if not ok:
        raise typer.Exit(1)


def _apply_adoption(technique: str, models: list[str] | None, where: str | None, all_eligible: bool, param: list[str] | None, drop: bool, verify: bool = False) -> None:
    try:
        fleet = _fleet()
        with fleet_lock(fleet.root):
            _recover(fleet)
            entries = adoption.select(fleet, models, where, all_eligible)
            outcome = adoption.plan_adoption(fleet, entries, technique, adoption.parse_params(param), drop)
            if models and outcome.not_applicable:
                model, reason = outcome.not_applicable[0]
                raise SmtError(f"{model}: {reason}")
            if verify:  # before writing: a model that fails the gate keeps its spec
                _verify_or_exit(technique, adoption.parse_params(param), [entry.name for entry, _, _ in outcome.changed])
            verb = "dropped" if drop else "adopted"
            for entry, answers, tree in outcome.changed:
                _write(entry.name, entry.directory, tree, adoption.spec_text(entry.name, answers))
                typer.echo(f"{entry.name}: {verb} {technique}")
    except SmtError as error:
        raise _fail(error)
    for name, reason in outcome.not_applicable:
        typer.echo(f"{name}: not applicable: {reason}")
    for name, reason in outcome.unchanged:
        typer.echo(f"{name}: unchanged ({reason})")
    typer.echo(f"{'drop' if drop else 'adopt'}: {len(outcome.changed)} model(s) {verb} {technique}, {len(outcome.not_applicable)} not applicable, {len(outcome.unchanged)} unchanged")


@app.command()
def adopt(
    technique: Annotated[str, typer.Argument(help="Technique to adopt.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: AllEligible = False,
    param: Params = None,
    verify: Verify = False,
) -> None:
    """Add TECHNIQUE to the specs of the chosen models and regenerate them (all rendered before writing)."""
    _apply_adoption(technique, models, where, all_eligible, param, drop=False, verify=verify)


@app.command()
def drop(
    technique: Annotated[str, typer.Argument(help="Technique to drop.")],
    models: ModelsOption = None,
    where: Where = None,
    all_eligible: Annotated[bool, typer.Option("--all-eligible", help="Every model using it.")] = False,
) -> None:
    """Remove TECHNIQUE from the specs of the chosen models and regenerate them."""
    _apply_adoption(technique, models, where, all_eligible, None, drop=True)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False, jobs: Jobs = None) -> None:
    """The adoption matrix (models x techniques), template versions, sync state and adoption per release."""
    try:
        fleet = _fleet()
        library = list(engine.load_sources(fleet.root).library)
        rows = []
        for entry, _, changes in _changes(fleet, None, "status:", jobs):
            used = entry.spec.technique_names
            in_sync = not changes
            rows.append({"model": entry.name, "template_version": adoption.template_version_of(entry.directory), "in_sync": in_sync, "techniques": used})
        history = adoption.adoption_history(fleet.root)
    except SmtError as error:
        raise _fail(error)
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
def new(
    name: Annotated[str, typer.Argument(help="The new model's name (a Python identifier).")],
    data_file: Annotated[Path, typer.Option("--data-file", help="YAML spec: objectives, features, serving, techniques.")],
) -> None:
    """Create generated/NAME from a spec file and generate its code."""
    try:
        fleet = _fleet()
        with fleet_lock(fleet.root):
            _recover(fleet)
            tree = _new_model(fleet, name, data_file)
    except SmtError as error:
        raise _fail(error)
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
    _write(name, directory, tree, adoption.spec_text(name, spec))
    return tree


@app.command()
def blame(location: Annotated[str, typer.Argument(help="generated/<model>/<file>:<line> or :<first>-<last>")]) -> None:
    """Say which technique (name and version), local technique or template file wrote a line (or each line of a range)."""
    try:
        from .blame import blame as blame_lines  # noqa: PLC0415 - imports the engine's formatter

        attributions = blame_lines(_fleet().root, location)
    except SmtError as error:
        raise _fail(error)
    path = location.rpartition(":")[0]
    for attribution in attributions:
        where = location if len(attributions) == 1 else f"{path}:{attribution.line}"
        typer.echo(f"{where}: {attribution.author} ({attribution.source})")
        typer.echo(f"    {attribution.text.strip()}")


techniques_app = typer.Typer(
    help="List techniques (default), show one, or record their versions.", invoke_without_command=True, no_args_is_help=False
)
app.add_typer(techniques_app, name="techniques")


def _users(fleet: Fleet, names: list[str]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {name: [] for name in names}
    for entry in fleet.models():
        for name in entry.spec.technique_names:
            if name in users:
                users[name].append(entry.name)
    return users


@techniques_app.callback()
def techniques(ctx: typer.Context) -> None:
    """List techniques, their summaries, and the models that use each."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        fleet = _fleet()
        sources = engine.load_sources(fleet.root)
        users = _users(fleet, list(sources.library))
    except SmtError as error:
        raise _fail(error)
    for technique in sources.library.values():
        params = ", ".join(f"{p.name}={p.default!r}" for p in technique.params) or "no params"
        used = ", ".join(users[technique.name]) or "no models yet"
        typer.echo(f"{technique.name} {technique.version}: {technique.summary}")
        typer.echo(f"    params: {params}")
        typer.echo(f"    reference: {technique.reference}")
        typer.echo(f"    used by: {used}")


@techniques_app.command("lock")
def techniques_lock(
    check_only: Annotated[bool, typer.Option("--check", help="Only verify; exit 1 on a change without a version bump.")] = False,
) -> None:
    """Record every technique's version and fingerprint in techniques/fingerprints.yml."""
    try:
        root = find_root()
        library = engine.load_sources(root).library
        problems = version_problems(root, library)
    except SmtError as error:
        raise _fail(error)
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
def techniques_show(
    name: Annotated[str, typer.Argument(help="Technique name.")],
    impact: Annotated[bool, typer.Option("--impact", help="Measure parameter and MFLOP deltas on every eligible model (needs PyTorch).")] = False,
) -> None:
    """Print a technique's summary, reference, params, preconditions, requires/conflicts, extension points and patch."""
    try:
        fleet = _fleet()
        sources = engine.load_sources(fleet.root)
        technique = sources.library.get(name)
        if technique is None:
            raise SmtError(f"{name}: unknown technique; use one of: {', '.join(sources.library) or 'none'} (see `smt techniques`)")
        users = _users(fleet, [name])[name]
    except SmtError as error:
        raise _fail(error)
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
    if impact:
        try:
            rows = measure_impact(fleet, technique)
        except SmtError as error:
            raise _fail(error)
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


def _run_model(entry: ModelEntry, *args: str) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SmtError("training needs PyTorch: pip install -e '.[torch]' (torch==2.13.0, the CPU build)") from None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(entry.directory), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.call([sys.executable, "-m", entry.name, *args], env=env)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A model in generated/.")],
    steps: Annotated[Optional[int], typer.Option(min=1, help="Cap on the training steps (default: the model's epochs, early stopping may end sooner).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the model's seed.")] = None,
) -> None:
    """Train a generated model; print validation and test logloss, NE, AUC, calibration and capacity.

    Runs `python -m MODEL train`; further options go to it unchanged, e.g. `--train/--valid/--test
    PARQUET`, `--epochs N`, `--set KEY=VALUE`, `--threads N`, `--run-dir DIR`, `--resume`,
    `--device`, `--export PATH` (see `python -m MODEL train --help`). Checkpoints and metrics.json go to runs/ in the current directory by default.
    """
    raise typer.Exit(_train_model(model, steps, seed, ctx.args if ctx is not None else []))


def _train_model(model: str, steps: int | None, seed: int | None, args: list[str]) -> int:
    """Run `python -m MODEL train` with these options; its exit code."""
    try:
        entry = _fleet().model(model)
        extra = ["--seed", str(seed)] if seed is not None else []
        if steps is not None:
            extra += ["--steps", str(steps)]
        return _run_model(entry, "train", *extra, *args)
    except SmtError as error:
        raise _fail(error)


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Example model to train.")] = DEFAULT_DEMO_MODEL,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Cap on the training steps (default: the model's epochs and early stopping).")] = None,
) -> None:
    """The main job on the embedded example fleet: regenerate it, then train one model until early
    stopping (at most its epochs) and report."""
    typer.echo("== smt generate: regenerating the example fleet ==")
    generate(None, None, False)
    # One thread: the demo must stay quick on a small shared machine, where torch's threads
    # per core (the training default there) run many times slower (see README, Training).
    typer.echo(f"\n== smt train {model}{f' --steps {steps}' if steps else ''} --threads 1 ==")
    raise typer.Exit(_train_model(model, steps, None, ["--threads", "1"]))


@app.command()
def version() -> None:
    """Print the generator and template versions."""
    try:
        sources = engine.load_sources(find_root())
    except SmtError as error:
        raise _fail(error)
    typer.echo(f"smt {__version__}, template {sources.version}, {len(sources.library)} techniques")


def main(argv: list[str] | None = None) -> None:
    """Run smt; a usage error (unknown option, bad value, missing argument) is one line and exit 2,
    like every other error (click's own spans a usage box)."""
    # typer bundles its own click; its UsageError is the base of the BadParameter it exports
    usage_error = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")
    try:
        code = app(args=argv, prog_name="smt", standalone_mode=False)
    except usage_error as error:
        message = " ".join(error.format_message().split()).rstrip(".")
        if not message:  # no arguments at all: the help was shown
            raise SystemExit(error.exit_code) from None
        command = error.ctx.command_path if error.ctx is not None else "smt"
        typer.echo(f"error: {message}; see `{command} --help`", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        raise SystemExit(1) from None
    # an int here is typer.Exit's code (commands return data, e.g. generate's list, or None)
    raise SystemExit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


from . import cli_repo  # noqa: E402,F401  (registers model-repo commands)
from . import cli_qualify  # noqa: E402,F401  (registers representatives, qualify, promote)
from . import cli_tune  # noqa: E402,F401  (registers tune)
