"""From rendered template text to a model's final file: plan techniques, patch, format, add header.

``TemplateSources`` is everything besides the spec that decides the output: the template version,
its extension points and the technique library. ``FileRenderer.finish`` is a pure function of
(sources, target, rendered text, plan) and memoises on exactly that, so models that share rendered
text (every arch module of models with the same technique set) are patched and formatted once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import black
import yaml

from .config_params import add_technique_params
from .errors import SmtError
from .layout import add_header, format_python
from .patch import apply_patch, parse_patch
from .spec import ModelSpec, spec_field_error, validate_spec
from .technique import AppliedTechnique, Technique, load_library

TEMPLATE_DIR = "template_repo"
TECHNIQUES_DIR = "techniques"
VERSION_FILE = "VERSION"
EXTENSION_POINTS_FILE = "extension_points.yml"
CONFIG_TARGET = "config.py"


@dataclass(frozen=True, eq=False)  # identity: one loaded set of sources
class TemplateSources:
    """What, besides a model's spec, decides its generated code."""

    root: Path
    version: str
    extension_points: Mapping[str, Mapping[str, str]]  # target -> {name: description}
    library: Mapping[str, Technique]


def _stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector for the sources (paths, sizes and mtimes)."""
    paths = [root / TEMPLATE_DIR / VERSION_FILE, root / TEMPLATE_DIR / EXTENSION_POINTS_FILE]
    paths += sorted((root / TECHNIQUES_DIR).glob("*/*"))
    stamp = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        stamp.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(stamp)


_SOURCES: dict[Path, tuple[tuple[tuple[str, int, int], ...], TemplateSources]] = {}


def load_sources(root: Path) -> TemplateSources:
    """Load (or reuse) the template version, extension points and techniques under ``root``."""
    root = root.resolve()
    stamp = _stamp(root)
    cached = _SOURCES.get(root)
    if cached and cached[0] == stamp:
        return cached[1]
    version_path = root / TEMPLATE_DIR / VERSION_FILE
    points_path = root / TEMPLATE_DIR / EXTENSION_POINTS_FILE
    try:
        version = version_path.read_text().strip()
        points = yaml.safe_load(points_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SmtError(f"cannot read the template's {exc}") from None
    if not isinstance(points, dict) or not all(isinstance(names, dict) for names in points.values()):
        raise SmtError(f"{points_path}: expected a mapping of module -> {{extension point: description}}")
    sources = TemplateSources(root, version, points, load_library(root / TECHNIQUES_DIR))
    _SOURCES[root] = (stamp, sources)
    return sources


def plan_techniques(spec: ModelSpec, sources: TemplateSources) -> tuple[AppliedTechnique, ...]:
    """Check a model's techniques and order them: ``requires`` first, otherwise by name.

    Raises SmtError for unknown techniques or params, unmet preconditions, missing requirements,
    declared conflicts, cycles and two techniques replacing the same extension point.
    """
    model = spec.model_name
    library = sources.library
    chosen: dict[str, AppliedTechnique] = {}
    for index, use in enumerate(spec.techniques):
        where = f"{model}: techniques[{index}]"
        technique = library.get(use.name)
        if technique is None:
            known = ", ".join(library) or "none"
            raise SmtError(f"{where}.name: unknown technique {use.name!r} (known: {known}; see `smt techniques`)")
        counts = {
            "min_objectives": len(spec.objectives),
            "min_dense_features": len(spec.dense_features),
            "min_sparse_features": len(spec.sparse_features),
        }
        for condition, minimum in technique.applies_to:
            if counts[condition] < minimum:
                what = condition.removeprefix("min_").replace("_", " ")
                raise SmtError(f"{where}.name: technique {use.name!r} needs at least {minimum} {what}; this model has {counts[condition]}")
        chosen[use.name] = AppliedTechnique(technique, technique.resolve_params(use.params, where))
    for name, applied in chosen.items():
        for required in applied.technique.requires:
            if required not in chosen:
                raise SmtError(f"{model}: techniques: {name!r} requires technique {required!r}; add it to the spec")
        for other in applied.technique.conflicts:
            if other in chosen:
                raise SmtError(f"{model}: techniques: {name!r} conflicts with {other!r}; keep one of them")
    _check_replacements(model, chosen.values(), sources)
    return tuple(_order(model, chosen))


def _check_replacements(model: str, plan: Sequence[AppliedTechnique] | object, sources: TemplateSources) -> None:
    owner: dict[tuple[str, str], str] = {}
    for applied in plan:  # type: ignore[union-attr]
        technique = applied.technique
        for target, source in technique.patches:
            points = sources.extension_points.get(target)
            if points is None:
                raise SmtError(f"technique {technique.name}: patches {target}, which has no extension points in the template")
            parsed = parse_patch(source, f"{technique.directory / target}")
            for name, _ in parsed.definitions:
                if name not in points:
                    continue
                previous = owner.setdefault((target, name), technique.name)
                if previous != technique.name:
                    raise SmtError(f"{model}: techniques {previous!r} and {technique.name!r} both replace extension point {name} in {target}; keep one of them")


def _order(model: str, chosen: Mapping[str, AppliedTechnique]) -> list[AppliedTechnique]:
    ordered: list[AppliedTechnique] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*path, name))
            raise SmtError(f"{model}: techniques: requirement cycle {cycle}")
        state[name] = "visiting"
        for required in sorted(chosen[name].technique.requires):
            visit(required, (*path, name))
        state[name] = "done"
        ordered.append(chosen[name])

    for name in sorted(chosen):
        visit(name, ())
    return ordered


class FileRenderer:
    """Turns one rendered template file into the final generated file, with a memo."""

    def __init__(self, sources: TemplateSources) -> None:
        self.sources = sources
        self._memo: dict[tuple[object, ...], str] = {}

    def finish(self, target: str, text: str, plan: Sequence[AppliedTechnique]) -> str:
        key = (target, hashlib.sha256(text.encode()).hexdigest(), tuple(applied.key for applied in plan))
        result = self._memo.get(key)
        if result is None:
            result = self._finish(target, text, plan)
            self._memo[key] = result
        return result

    def _finish(self, target: str, text: str, plan: Sequence[AppliedTechnique]) -> str:
        touched: list[str] = []
        if target.endswith(".py"):
            points = self.sources.extension_points.get(target, {})
            for applied in plan:
                technique = applied.technique
                for patch_target, source in technique.patches:
                    if patch_target == target:
                        parsed = parse_patch(source, str(technique.directory / patch_target))
                        text = apply_patch(text, parsed, target=target, technique=technique.label, extension_points=points)
                        touched.append(technique.label)
            if target == CONFIG_TARGET:
                text = add_technique_params(text, plan, target)
                touched += [applied.technique.label for applied in plan if applied.technique.params and applied.technique.label not in touched]
            try:
                text = format_python(text)
            except black.InvalidInput as exc:
                raise SmtError(f"{target}: the rendered file is not valid Python after techniques {touched or 'none'} ({exc})") from None
        return add_header(text, target, self.sources.version, touched)


_RENDERERS: dict[TemplateSources, FileRenderer] = {}


def renderer_for(sources: TemplateSources) -> FileRenderer:
    """One FileRenderer (and memo) per loaded sources, shared by every model rendered in this process."""
    renderer = _RENDERERS.get(sources)
    if renderer is None:
        _RENDERERS.clear()  # sources changed: the old memo can never hit again
        renderer = _RENDERERS[sources] = FileRenderer(sources)
    return renderer


SPEC_KEYS = tuple(ModelSpec.model_fields)
_PLANS: dict[tuple[Path, str], tuple[TemplateSources, tuple[AppliedTechnique, ...]]] = {}


def _plan_for(root: Path, answers: Mapping[str, object]) -> tuple[TemplateSources, tuple[AppliedTechnique, ...]]:
    model = str(answers.get("model_name", "<unnamed model>"))
    sources = load_sources(root)
    key = (sources.root, json.dumps(answers, sort_keys=True, default=str))
    cached = _PLANS.get(key)
    if cached is None or cached[0] is not sources:
        spec = validate_spec(dict(answers), model)
        cached = _PLANS[key] = (sources, plan_techniques(spec, sources))
    return cached


def finish_file(root: Path, answers: Mapping[str, object], target: str, text: str) -> str:
    """The whole per-file step, as the template's Jinja filter calls it for every rendered file."""
    sources, plan = _plan_for(root, answers)
    return renderer_for(sources).finish(target, text, plan)


def describe_plan(root: Path, answers: Mapping[str, object]) -> list[dict[str, object]]:
    """The model's techniques in application order, with versions and effective params (for docs)."""
    _, plan = _plan_for(root, answers)
    return [
        {
            "name": applied.technique.name,
            "version": applied.technique.version,
            "summary": applied.technique.summary,
            "reference": applied.technique.reference,
            "params": [{"name": name, "value": value} for name, value in applied.params],
        }
        for applied in plan
    ]


def answer_problem(root: Path, answers: Mapping[str, object], field: str) -> str:
    """Copier's validator for one question: the first problem with ``field``, or ''.

    For ``techniques`` the whole plan is checked too (unknown techniques or params, preconditions,
    requires, conflicts), as ``smt`` does, so ``copier copy`` refuses the same specs.
    """
    problem = spec_field_error(dict(answers), field)
    if problem or field != "techniques":
        return problem
    model = str(answers.get("model_name", "<unnamed model>"))
    try:
        plan_techniques(validate_spec(dict(answers), model), load_sources(root))
    except SmtError as error:
        return str(error).removeprefix(f"{model}: ")
    return ""
