"""From rendered template text to a model's final file: plan techniques, patch, format, add header.

``TemplateSources`` is everything besides the spec that decides the output: the template version,
its extension points and the technique library. ``FileRenderer.finish`` is a pure function of
(sources, target, rendered text, plan) and memoises on exactly that, so models that share rendered
text (every arch module of models with the same technique set) are patched and formatted once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import black
import libcst as cst

from .config_params import add_technique_params
from .errors import SmtError
from .layout import add_header, format_python
from .patch import ExtensionPoint, apply_patch, parse_patch
from .shapes import shape_of, unshape
from .slots import fill_slots, slot_fields, unwrap_field, wrap_field
from .store import current_store, load_yaml
from .spec import ModelSpec, spec_field_error, validate_spec
from .technique import AppliedTechnique, Technique, load_library

from .paths import LOCAL_TECHNIQUES_DIR, TECHNIQUES_DIR, TEMPLATE_DIR
VERSION_FILE = "VERSION"
EXTENSION_POINTS_FILE = "extension_points.yml"
CONFIG_TARGET = "config.py"

Points = Mapping[str, Mapping[str, ExtensionPoint]]  # target -> name -> extension point


@dataclass(frozen=True, eq=False)  # identity: one loaded set of sources
class TemplateSources:
    """What, besides a model's spec, decides its generated code."""

    root: Path
    version: str
    extension_points: Points
    library: Mapping[str, Technique]
    fingerprint: str = ""  # engine code, libcst and black versions, template version and extension points


ENGINE_DIR = Path(__file__).resolve().parent


def engine_fingerprint(*extra: bytes) -> str:
    """A hash of what decides the engine's output besides its inputs: its own code and the tools."""
    digest = hashlib.sha256(f"libcst {_version('libcst')}, black {black.__version__}".encode())
    for path in sorted(ENGINE_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for part in extra:
        digest.update(b"\0" + part)
    return digest.hexdigest()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _stamp(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector for source files (paths, sizes and mtimes)."""
    stamp = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        stamp.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def _technique_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*")) if directory.is_dir() else []


def _load_points(path: Path) -> Points:
    raw = load_yaml(path, "the template's extension points")
    if not isinstance(raw, dict) or not all(isinstance(names, dict) for names in raw.values()):
        raise SmtError(f"{path}: expected a mapping of module -> {{extension point: {{kind, description}}}}")
    points: dict[str, dict[str, ExtensionPoint]] = {}
    for target, names in raw.items():
        points[target] = {}
        for name, value in names.items():
            if not (isinstance(value, dict) and value.get("kind") in ("replace", "hook") and set(value) <= {"kind", "description"}):
                raise SmtError(f"{path}: {target}.{name}: expected {{kind: replace|hook, description: ...}}")
            points[target][name] = ExtensionPoint(name, value["kind"], str(value.get("description", "")))
    return points


_SOURCES: dict[Path, tuple[tuple[tuple[str, int, int], ...], TemplateSources]] = {}


_PINNED: list[dict[tuple[str, Path | None], Any]] = []  # one frame per open sources_pinned()


@contextmanager
def sources_pinned() -> Iterator[None]:
    """Within the block, source files are checked for changes once, not once per rendered file.

    A model's render calls the engine for each of its files; outside a render (or in the next one)
    every call checks the files' sizes and mtimes again, so an edit between renders is always seen.
    """
    _PINNED.append({})
    try:
        yield
    finally:
        _PINNED.pop()


def _pinned(kind: str, key: Path | None, load: Any) -> Any:
    """``load()``, or what it returned earlier in the innermost open ``sources_pinned`` block."""
    if not _PINNED:
        return load()
    frame = _PINNED[-1]
    if (kind, key) not in frame:
        frame[(kind, key)] = load()
    return frame[(kind, key)]


def load_sources(root: Path) -> TemplateSources:
    """Load (or reuse) the template version, extension points and techniques under ``root``."""
    return _pinned("sources", root, lambda: _load_sources(root))


def _load_sources(root: Path) -> TemplateSources:
    root = root.resolve()
    version_path = root / TEMPLATE_DIR / VERSION_FILE
    points_path = root / TEMPLATE_DIR / EXTENSION_POINTS_FILE
    stamp = _stamp([version_path, points_path, *_technique_files(root / TECHNIQUES_DIR)])
    cached = _SOURCES.get(root)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        version = version_path.read_text().strip()
    except OSError as exc:
        raise SmtError(f"{version_path}: cannot read the template version ({exc.strerror}); restore it (git checkout -- {VERSION_FILE})") from None
    points_text = points_path.read_bytes() if points_path.is_file() else b""
    fingerprint = engine_fingerprint(version.encode(), points_text)
    sources = TemplateSources(root, version, _load_points(points_path), load_library(root / TECHNIQUES_DIR), fingerprint)
    _SOURCES[root] = (stamp, sources)
    return sources


_LOCAL: dict[Path, tuple[tuple[tuple[str, int, int], ...], Mapping[str, Technique]]] = {}


def load_local_techniques(model_dir: Path | None) -> Mapping[str, Technique]:
    """A model's own techniques, from ``<model folder>/local_techniques/<name>/`` (none if absent)."""
    if model_dir is None:
        return {}
    return _pinned("local", model_dir, lambda: _load_local_techniques(model_dir))


def _load_local_techniques(model_dir: Path) -> Mapping[str, Technique]:
    directory = (model_dir / LOCAL_TECHNIQUES_DIR).resolve()
    stamp = _stamp(_technique_files(directory))
    cached = _LOCAL.get(directory)
    if cached and cached[0] == stamp:
        return cached[1]
    library = load_library(directory, local=True)
    _LOCAL[directory] = (stamp, library)
    return library


def plan_techniques(
    spec: ModelSpec, sources: TemplateSources, local: Mapping[str, Technique] | None = None
) -> tuple[AppliedTechnique, ...]:
    """Check a model's techniques and order them.

    Shared techniques come first, then the model's local ones; within each group ``requires``,
    ``builds_on`` and ``after`` come first, otherwise name order. Raises SmtError for unknown
    techniques or params, unmet preconditions, missing requirements, declared conflicts, cycles
    and two techniques replacing the same extension point.
    """
    model = spec.model_name
    local = local or {}
    for name in local:
        if name in sources.library:
            raise SmtError(f"{model}: {LOCAL_TECHNIQUES_DIR}/{name}: a shared technique has the same name; rename the local one")
    chosen: dict[str, AppliedTechnique] = {}
    for index, use in enumerate(spec.techniques):
        where = f"{model}: techniques[{index}]"
        technique = sources.library.get(use.name) or local.get(use.name)
        if technique is None:
            known = ", ".join([*sources.library, *(f"{name} (local)" for name in local)]) or "none"
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
        for key in ("requires", "builds_on"):  # a local technique may name one that exists nowhere
            for required in getattr(applied.technique, key):
                if required not in chosen and required not in sources.library and required not in (local or {}):
                    raise SmtError(
                        f"{applied.technique.directory / 'technique.yml'}: {key}: {required!r} is not a technique; fix the name or remove it"
                    )
        for required in applied.technique.requires:
            if required not in chosen:
                raise SmtError(f"{model}: techniques: {name!r} requires technique {required!r}; add it to the spec")
        for other in applied.technique.conflicts:
            if other in chosen:
                raise SmtError(f"{model}: techniques: {name!r} conflicts with {other!r}; keep one of them")
    shared = _order(model, {n: a for n, a in chosen.items() if not a.technique.local})
    own = _order(model, {n: a for n, a in chosen.items() if a.technique.local}, before={a.technique.name for a in shared})
    plan = (*shared, *own)
    _check_replacements(model, plan, sources)
    return plan


def _builds_on(applied: AppliedTechnique, other: str) -> bool:
    return other in applied.technique.builds_on


def _check_replacements(model: str, plan: Sequence[AppliedTechnique], sources: TemplateSources) -> None:
    """Two techniques replacing one extension point conflict, unless the later builds on the earlier."""
    owner: dict[tuple[str, str], AppliedTechnique] = {}
    for applied in plan:
        technique = applied.technique
        for target, source in technique.patches:
            points = sources.extension_points.get(target)
            if points is None:
                raise SmtError(f"technique {technique.name}: patches {target}, which has no extension points in the template")
            parsed = parse_patch(source, f"{technique.directory / target}")
            for name, _definition in parsed.definitions:
                touched = [name] if name in points else []
                for point in touched:
                    if points[point].kind == "hook":
                        continue
                    previous = owner.get((target, point))
                    if previous is not None and not _builds_on(applied, previous.technique.name):
                        raise SmtError(
                            f"{model}: techniques {previous.technique.name!r} and {technique.name!r} both replace extension point "
                            f"{point} in {target}; keep one of them (they are alternatives: declare conflicts: [{previous.technique.name}] in {technique.name}'s technique.yml)"
                        )
                    owner[(target, point)] = applied


def _order(model: str, chosen: Mapping[str, AppliedTechnique], before: set[str] | None = None) -> list[AppliedTechnique]:
    ordered: list[AppliedTechnique] = []
    state: dict[str, str] = {}
    done_elsewhere = before or set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*path, name))
            raise SmtError(f"{model}: techniques: ordering cycle {cycle} (from requires, builds_on and after)")
        state[name] = "visiting"
        technique = chosen[name].technique
        for first in sorted({*technique.requires, *technique.builds_on, *technique.after}):
            if first in chosen:
                visit(first, (*path, name))
            elif first in technique.builds_on and first not in done_elsewhere:
                raise SmtError(f"{model}: techniques: {name!r} builds on {first!r}, which the model does not use; add {first!r} to the spec")
        state[name] = "done"
        ordered.append(chosen[name])

    for name in sorted(chosen):
        visit(name, ())
    return ordered


def apply_technique(
    technique: Technique, params: Mapping[str, Any], target: str, text: str, points: Mapping[str, ExtensionPoint]
) -> str | None:
    """``text`` with one technique's patch for ``target`` applied; None if it has none."""
    changed = None
    for patch_target, source in technique.patches:
        if patch_target == target:
            parsed = parse_patch(source, str(technique.directory / patch_target))
            changed = apply_patch(text, parsed, target=target, technique=technique.label, extension_points=points)
    return changed


def technique_steps(
    sources: TemplateSources, target: str, text: str, plan: Sequence[AppliedTechnique]
) -> Iterator[tuple[str, str]]:
    """The pipeline's steps for one file, unformatted: (technique label, text after its step) for
    each technique whose patch changes ``text``, in plan order; then, on config.py, one step per
    technique with params (its Params class and ModelConfig field). ``FileRenderer`` keeps the last
    text and ``smt blame`` diffs them all, so both see the same steps."""
    points = sources.extension_points.get(target, {})
    for applied in plan:
        changed = apply_technique(applied.technique, dict(applied.params), target, text, points)
        if changed is not None:
            text = changed
            yield applied.technique.label, text
    if target == CONFIG_TARGET:
        for applied in plan:
            if applied.technique.params:
                text = add_technique_params(text, [applied], target)
                yield applied.technique.label, text


def trace_file(sources: TemplateSources, target: str, text: str, plan: Sequence[AppliedTechnique]) -> list[tuple[str, str]]:
    """The file after each step, formatted: [("template", text), (technique label, text), ...].

    ``smt blame`` diffs consecutive steps to attribute every line to the step that wrote it.
    """
    steps = [("template", text), *technique_steps(sources, target, text, plan)]
    return [(label, format_python(step_text)) for label, step_text in steps]


def relevant_plan(target: str, plan: Sequence[AppliedTechnique]) -> tuple[AppliedTechnique, ...]:
    """The techniques that can change ``target``: the others leave it as it is, so they are not part
    of what decides it (and models differing only in them share its work)."""
    if target == CONFIG_TARGET:
        return tuple(plan)
    if not target.endswith(".py"):
        return ()
    return tuple(a for a in plan if target in a.technique.targets)


def technique_texts(plan: Sequence[AppliedTechnique]) -> list[str]:
    """Everything the plan's techniques may put into a file (patches, header labels)."""
    texts = []
    for applied in plan:
        texts += [source for _, source in applied.technique.patches]
        texts += [applied.technique.label, repr(applied.params)]
    return texts


class FileRenderer:
    """Turns one rendered template file into the final generated file, with a memo."""

    def __init__(self, sources: TemplateSources) -> None:
        self.sources = sources
        self._memo: dict[tuple[object, ...], str] = {}

    def finish(self, target: str, text: str, plan: Sequence[AppliedTechnique], model_name: str | None = None) -> str:
        """The final file; ``model_name`` lets files that differ between models only by it share the work."""
        plan = relevant_plan(target, plan)
        if target == CONFIG_TARGET:
            slotted = self._finish_slotted(target, text, plan, model_name)
            if slotted is not None:
                return slotted
            return self._finish_memo(target, text, plan)
        return self._finish_named(target, text, plan, model_name)

    def _finish_named(self, target: str, text: str, plan: Sequence[AppliedTechnique], model_name: str | None) -> str:
        """Finish ``text`` through its name shape when ``shape_of`` agrees (shapes.py)."""
        shaped = shape_of(model_name, text, technique_texts(plan)) if model_name is not None else None
        if shaped is not None:
            try:
                return unshape(str(model_name), self._finish_memo(target, shaped, plan))
            except SmtError as error:  # say it with the model's name, not the placeholder
                raise SmtError(unshape(str(model_name), str(error))) from None
        return self._finish_memo(target, text, plan)

    def _finish_slotted(self, target: str, text: str, plan: Sequence[AppliedTechnique], model_name: str | None) -> str | None:
        """config.py through its slots (slots.py): the shape once per name shape, each field alone;
        None when the file does not split cleanly or a technique patches config.py itself."""
        if any(target in a.technique.targets for a in plan):
            return None
        split = slot_fields(text)
        if split is None:
            return None
        shape, fields = split
        return fill_slots(self._finish_named(target, shape, plan, model_name), fields, self._format_field)

    def _format_field(self, field: str) -> str | None:
        """One ModelConfig field formatted alone (slots.py), memoised and stored like whole files."""
        key = ("field", hashlib.sha256(field.encode()).hexdigest())
        result = self._memo.get(key)
        store = current_store()
        store_key = hashlib.sha256(f"{self.sources.fingerprint}\0field\0{field}".encode()).hexdigest()
        if result is None and store is not None:
            result = store.get(store_key)
        if result is None:
            try:
                result = unwrap_field(format_python(wrap_field(field)))
            except black.InvalidInput:
                return None
            if result is None:
                return None
            if store is not None:
                store.put(store_key, result)
        self._memo[key] = result
        return result

    def _finish_memo(self, target: str, text: str, plan: Sequence[AppliedTechnique]) -> str:
        key = (target, hashlib.sha256(text.encode()).hexdigest(), tuple(applied.key for applied in plan))
        result = self._memo.get(key)
        store = current_store()
        if result is None and store is not None:
            result = store.get(self.store_key(target, text, plan))
        if result is None:
            result = self._finish(target, text, plan)
            if store is not None:
                store.put(self.store_key(target, text, plan), result)
        self._memo[key] = result
        return result

    def store_key(self, target: str, text: str, plan: Sequence[AppliedTechnique]) -> str:
        """Content address of one finish step: engine and tools, template version and extension
        points, the target, its text and each relevant technique's fingerprint and params."""
        digest = hashlib.sha256(self.sources.fingerprint.encode())
        digest.update(json.dumps([target, [list(map(str, applied.key)) for applied in plan]]).encode())
        digest.update(b"\0" + text.encode())
        return digest.hexdigest()

    def _finish(self, target: str, text: str, plan: Sequence[AppliedTechnique]) -> str:
        touched: list[str] = []
        if target.endswith(".py"):
            steps = list(technique_steps(self.sources, target, text, plan))
            if steps:
                text = steps[-1][1]
            touched = list(dict.fromkeys(label for label, _ in steps))  # a technique's patch and params: once
            try:
                text = format_python(text)
            except black.InvalidInput:
                raise SmtError(f"{target}: {python_problem(text)} after techniques {', '.join(touched) or 'none'}; fix that line in the template or technique") from None
        return add_header(text, target, touched)  # no template version: see header.py


def python_problem(text: str) -> str:
    """Where and why ``text`` is not valid Python, in one line (black's own message spans several)."""
    try:
        compile(text, "<rendered>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        return f"line {exc.lineno} is not valid Python ({exc.msg}: {line[:80]!r})"
    return "the file is not valid Python for black's target version"


_RENDERERS: dict[TemplateSources, FileRenderer] = {}
def renderer_for(sources: TemplateSources) -> FileRenderer:
    """One FileRenderer (and memo) per loaded sources, shared by every model rendered in this process."""
    renderer = _RENDERERS.get(sources)
    if renderer is None:
        _RENDERERS.clear()  # sources changed: the old memo can never hit again
        renderer = _RENDERERS[sources] = FileRenderer(sources)
    return renderer


SPEC_KEYS = tuple(ModelSpec.model_fields)
_PLANS: dict[tuple[Path, str, str], tuple[TemplateSources, Mapping[str, Technique], tuple[AppliedTechnique, ...]]] = {}


def plan_for(root: Path, answers: Mapping[str, object], model_dir: Path | None = None) -> tuple[TemplateSources, tuple[AppliedTechnique, ...]]:
    """Validate a model's answers and plan its techniques (memoised per answers and sources)."""
    model = str(answers.get("model_name", "<unnamed model>"))
    sources = load_sources(root)
    local = load_local_techniques(model_dir)
    key = (sources.root, str(model_dir), json.dumps(answers, sort_keys=True, default=str))
    cached = _PLANS.get(key)
    if cached is None or cached[0] is not sources or cached[1] is not local:
        spec = validate_spec(dict(answers), model)
        cached = _PLANS[key] = (sources, local, plan_techniques(spec, sources, local))
    return cached[0], cached[2]


def finish_file(root: Path, answers: Mapping[str, object], target: str, text: str, model_dir: Path | None = None) -> str:
    """The whole per-file step, as the template's Jinja filter calls it for every rendered file."""
    sources, plan = plan_for(root, answers, model_dir)
    name = answers.get("model_name")
    return renderer_for(sources).finish(target, text, plan, name if isinstance(name, str) else None)


def describe_plan(root: Path, answers: Mapping[str, object], model_dir: Path | None = None) -> list[dict[str, object]]:
    """The model's techniques in application order, with versions and effective params (for docs)."""
    _, plan = plan_for(root, answers, model_dir)
    return [
        {
            "name": applied.technique.name,
            "version": applied.technique.version,
            "local": applied.technique.local,
            "summary": applied.technique.summary,
            "reference": applied.technique.reference,
            "params": [{"name": name, "value": value} for name, value in applied.params],
        }
        for applied in plan
    ]


def answer_problem(root: Path, answers: Mapping[str, object], field: str, model_dir: Path | None = None) -> str:
    """Copier's validator for one question: the first problem with ``field``, or ''.

    For ``techniques`` the whole plan is checked too (unknown techniques or params, preconditions,
    requires, conflicts), as ``smt`` does, so ``copier copy`` refuses the same specs.
    """
    problem = spec_field_error(dict(answers), field)
    if problem or field != "techniques":
        return problem
    model = str(answers.get("model_name", "<unnamed model>"))
    try:
        plan_for(root, _parsed_later_answers(answers), model_dir)
    except SmtError as error:
        return str(error).removeprefix(f"{model}: ")
    return ""


_TEXT_FIELDS = ("model_name", "description")


def _parsed_later_answers(answers: Mapping[str, object]) -> dict[str, object]:
    """The answers with those of questions after ``techniques`` parsed as Copier will parse them.

    Copier validates questions in order; an answer given with ``--data`` for a later question
    (``hyperparameters``, ``data``, ``synthetic``: YAML questions) is still its raw text when
    ``techniques`` is validated. One that does not parse is left out here: its own validator
    reports it.
    """
    import yaml  # noqa: PLC0415 - PyYAML, Copier's own dependency

    parsed: dict[str, object] = {}
    for key, value in answers.items():
        if isinstance(value, str) and key not in _TEXT_FIELDS:
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
        parsed[key] = value
    return parsed
