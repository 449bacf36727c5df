"""Adopting and dropping techniques across the fleet, and the adoption matrix.

``adopt`` and ``drop`` edit specs and regenerate, all models rendered before anything is written.
``--where`` selects models with a small, safe expression over model descriptors, e.g.
``num_objectives >= 2 and 'dcn_v2' not in techniques``.
"""

from __future__ import annotations

import ast
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import engine
from .engine import SmtError
from .engine.header import TEMPLATE_VERSION_FILE, read_template_version
from .fleet import ANSWERS_FILE, GENERATED_DIR, Fleet, ModelAnswers, ModelEntry
from .render import RenderedTree, check_spec, render_model

# In the SMT repository `smt` writes the specs (a model repo's answers file is Copier's, with its
# own header in template_repo/template/{{_copier_conf.answers_file}}.jinja).
SPEC_HEADER = "# The spec of model {name} (its Copier answers). Edit it, then run `smt generate`.\n"
WHERE_NAMES = ("model_name", "num_objectives", "num_sparse_features", "num_dense_features", "techniques", "objectives", "max_params", "max_mflops_per_example")
_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Name, ast.Load, ast.Constant,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.List, ast.Tuple,
)


def descriptors(entry: ModelEntry) -> dict[str, Any]:
    """The names a ``--where`` expression may use for one model."""
    answers = entry.answers
    serving = answers.get("serving") or {}
    return {
        "model_name": entry.name,
        "num_objectives": len(answers.get("objectives") or []),
        "num_sparse_features": len(answers.get("sparse_features") or []),
        "num_dense_features": len(answers.get("dense_features") or []),
        "techniques": entry.spec.technique_names,
        "objectives": [objective.get("name") for objective in answers.get("objectives") or [] if isinstance(objective, dict)],
        "max_params": serving.get("max_params"),
        "max_mflops_per_example": serving.get("max_mflops_per_example"),
    }


def compile_where(expression: str) -> ast.Expression:
    """Parse a ``--where`` expression, allowing only comparisons, and/or/not, names and constants."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise SmtError(f"--where {expression!r}: not a valid expression (example: \"num_objectives >= 2 and 'mmoe' not in techniques\")") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise SmtError(f"--where {expression!r}: {type(node).__name__} is not allowed; use comparisons, and/or/not over {', '.join(WHERE_NAMES)}")
        if isinstance(node, ast.Name) and node.id not in WHERE_NAMES:
            raise SmtError(f"--where {expression!r}: unknown name {node.id!r}; known: {', '.join(WHERE_NAMES)}")
    return tree


def matches(tree: ast.Expression, entry: ModelEntry) -> bool:
    code = compile(tree, "<where>", "eval")
    try:
        return bool(eval(code, {"__builtins__": {}}, descriptors(entry)))  # noqa: S307 - validated AST
    except TypeError as exc:
        raise SmtError(f"{entry.name}: --where: {exc}") from None


def select(fleet: Fleet, models: list[str] | None, where: str | None, all_eligible: bool) -> list[ModelEntry]:
    """Exactly one of --models, --where, --all-eligible picks the models."""
    chosen = [bool(models), where is not None, all_eligible]
    if sum(chosen) != 1:
        raise SmtError("choose the models with exactly one of --models M..., --where EXPR, --all-eligible")
    if models:
        return fleet.models([name.strip() for item in models for name in item.split(",") if name.strip()])
    entries = fleet.models()
    if where is not None:
        tree = compile_where(where)
        chosen_entries = [entry for entry in entries if matches(tree, entry)]
        if not chosen_entries:
            raise SmtError(f"--where {where!r} matches none of the {len(entries)} model(s); nothing to do (see `smt status` for each model's techniques)")
        return chosen_entries
    return entries


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param k=v`` pairs, values parsed as YAML (``3``, ``0.5``, ``true``, ``[64, 32]``)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SmtError(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SmtError(f"--param {item!r}: the value is not valid YAML") from None
    return params


@dataclass
class Outcome:
    """What adopt/drop will do: changed specs and their renders, plus models left alone and why.

    ``param_changes`` names the changed models that already used the technique: model ->
    (old params, new params), both resolved (every param, defaults filled in).
    """

    changed: list[tuple[ModelEntry, dict[str, Any], RenderedTree]]
    not_applicable: list[tuple[str, str]]
    unchanged: list[tuple[str, str]]
    param_changes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)


def format_params(params: dict[str, Any]) -> str:
    """Params as the spec writes them, on one line, e.g. ``{num_cross_layers: 2, low_rank: 0}``."""
    return "{" + ", ".join(f"{name}: {_yaml_value(value)}" for name, value in params.items()) + "}"


def _yaml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_adoption(fleet: Fleet, entries: list[ModelEntry], technique: str, params: dict[str, Any], drop: bool) -> Outcome:
    """Edit the specs in memory and render each model; raise nothing for models that cannot adopt."""
    library = engine.load_sources(fleet.root).library
    if technique not in library and not drop:
        raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
    if params:
        library[technique].resolve_params(params, technique)  # a bad param is an error, not "not applicable"
    outcome = Outcome([], [], [])
    for entry in entries:
        spec = entry.spec
        if drop:
            if not spec.uses_technique(technique):
                outcome.unchanged.append((entry.name, "does not use it"))
                continue
            changed = spec.without_technique(technique)
        elif spec.uses_technique(technique):
            # Given params change the ones the spec sets; the others keep their values.
            merged = {**spec.params_of(technique), **params}
            before = dict(library[technique].resolve_params(spec.params_of(technique), technique))
            after = dict(library[technique].resolve_params(merged, technique))
            if before == after:
                outcome.unchanged.append((entry.name, f"already uses it with {format_params(after)}" if after else "already uses it"))
                continue
            changed = spec.with_technique(technique, merged)
        else:
            changed = spec.with_technique(technique, params)
        answers = changed.as_dict()
        try:
            check_spec(fleet.root, answers, entry.name, entry.directory)
        except SmtError as error:
            outcome.not_applicable.append((entry.name, str(error).removeprefix(f"{entry.name}: ")))
            continue
        outcome.changed.append((entry, answers, render_model(fleet.root, answers, entry.name, entry.directory)))
        if not drop and spec.uses_technique(technique):
            outcome.param_changes[entry.name] = (before, after)
    return outcome


def spec_text(name: str, answers: dict[str, Any]) -> str:
    """A spec file as smt writes it: a header line, then the answers in their order."""
    spec = {key: value for key, value in answers.items() if not key.startswith("_")}
    copier_keys = {key: value for key, value in answers.items() if key.startswith("_")}
    return SPEC_HEADER.format(name=name) + yaml.safe_dump({**copier_keys, **spec}, sort_keys=False, allow_unicode=True)


# --- status -----------------------------------------------------------------------------------

def template_version_of(directory: Path) -> str:
    """The template version a generated model was rendered from (its package's one version line)."""
    init = directory / directory.name / TEMPLATE_VERSION_FILE
    version = read_template_version(init.read_text()) if init.is_file() else None
    return version or "unknown"


def _pairs_at(root: Path, ref: str) -> set[tuple[str, str]]:
    """(model, technique) pairs in the specs committed at ``ref``."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref, "--", f"{GENERATED_DIR}/"], cwd=root, capture_output=True, text=True
    ).stdout.splitlines()
    pairs = set()
    for path in listing:
        if not path.endswith(f"/{ANSWERS_FILE}"):
            continue
        text = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=root, capture_output=True, text=True).stdout
        model = path.split("/")[1]
        try:
            spec = ModelAnswers(model, yaml.safe_load(text) or {})
        except (yaml.YAMLError, SmtError):
            continue  # a spec that was broken at that release counts no pairs
        pairs |= {(model, name) for name in spec.technique_names}
    return pairs


def adoption_history(root: Path) -> list[dict[str, Any]]:
    """Technique-model pairs adopted per release (git tags in version order), then unreleased HEAD."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True)
    if inside.returncode != 0:
        return []
    tags = subprocess.run(["git", "tag", "--list", "v*", "--sort=version:refname"], cwd=root, capture_output=True, text=True).stdout.split()
    head = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=root, capture_output=True, text=True)
    refs = [*tags, *(["HEAD"] if head.returncode == 0 else [])]
    history, previous = [], set()
    for ref in refs:
        pairs = _pairs_at(root, ref)
        history.append({"release": ref, "pairs": len(pairs), "adopted": len(pairs - previous), "dropped": len(previous - pairs)})
        previous = pairs
    return history
