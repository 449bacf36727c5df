"""Technique: one ML improvement authored once as a code patch, loaded from ``techniques/<name>/``."""

from __future__ import annotations

import ast
import hashlib
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SmtError, brief
from .store import load_yaml, read_input_text

PARAM_TYPES = ("int", "float", "bool", "str", "list[int]", "list[float]")
PRECONDITIONS = ("min_objectives", "min_dense_features", "min_sparse_features")
METADATA_FILE = "technique.yml"
_METADATA_KEYS = {"name", "version", "summary", "reference", "params", "requires", "after", "builds_on", "conflicts", "applies_to"}
_PARAM_KEYS = {"type", "default", "min", "max", "choices", "help"}
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class Param:
    """A typed technique parameter with a default."""

    name: str
    type: str
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this param's type, or raise ValueError saying what is wrong."""
        if self.type in ("list[int]", "list[float]"):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"expected a list of {self.type[5:-1]}, got {brief(value)}")
            item = Param(self.name, self.type[5:-1], None, min=self.min, max=self.max)
            return tuple(item.coerce(element) for element in value)
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[self.type]
        if not ok:
            raise ValueError(f"expected {self.type}, got {brief(value)}")
        if self.type == "float":
            value = float(value)
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min}, got {brief(value)}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max}, got {brief(value)}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {list(self.choices)}, got {brief(value)}")
        return value

    @property
    def python_type(self) -> str:
        return {"list[int]": "tuple[int, ...]", "list[float]": "tuple[float, ...]"}.get(self.type, self.type)


@dataclass(frozen=True)
class Technique:
    """A technique's metadata plus its patch sources, keyed by the rendered module they patch."""

    name: str
    version: str
    summary: str
    reference: str
    params: tuple[Param, ...]
    requires: tuple[str, ...]
    conflicts: tuple[str, ...]
    after: tuple[str, ...]  # apply after these when both are used (ordering only)
    builds_on: tuple[str, ...]  # may re-replace extension points these replaced (implies after)
    applies_to: tuple[tuple[str, int], ...]
    patches: tuple[tuple[str, str], ...]  # (target, patch source)
    directory: Path = field(compare=False)
    local: bool = False  # a model's own technique, stored next to its spec

    @property
    def label(self) -> str:
        return f"{'local:' if self.local else ''}{self.name} {self.version}"

    @property
    def params_class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Params"

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(target for target, _ in self.patches)

    @property
    def fingerprint(self) -> str:
        """A content hash of metadata and patches (changes whenever what the technique does changes)."""
        digest = hashlib.sha256((self.directory / METADATA_FILE).read_bytes())
        for target, source in self.patches:
            digest.update(target.encode() + b"\0" + source.encode())
        return digest.hexdigest()[:16]

    def resolve_params(self, given: dict[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
        """The full, typed params for one model; raise SmtError naming ``where`` on a bad param."""
        known = {param.name: param for param in self.params}
        for key in given:
            if key not in known:
                names = ", ".join(known) or "none"
                raise SmtError(f"{where}.params.{key}: unknown param of technique {self.name!r}; use one of its params: {names}")
        resolved = []
        for param in self.params:
            value = given.get(param.name, param.default)
            try:
                resolved.append((param.name, param.coerce(value)))
            except ValueError as exc:
                raise SmtError(f"{where}.params.{param.name}: {exc}") from None
        return tuple(resolved)


@dataclass(frozen=True)
class AppliedTechnique:
    """A technique as one model uses it: with that model's resolved params."""

    technique: Technique
    params: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.technique.name, self.technique.version, self.technique.fingerprint, self.params)


def _fail(path: Path, problem: str) -> SmtError:
    return SmtError(f"{path}: {problem}")


def _load_param(path: Path, name: str, raw: Any) -> Param:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise _fail(path, f"params.{name}: param names must be Python identifiers")
    if not isinstance(raw, dict):
        raise _fail(path, f"params.{name}: expected a mapping with type and default")
    unknown = set(raw) - _PARAM_KEYS
    if unknown:
        raise _fail(path, f"params.{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_PARAM_KEYS)}")
    if raw.get("type") not in PARAM_TYPES:
        raise _fail(path, f"params.{name}.type: must be one of {list(PARAM_TYPES)}")
    if "default" not in raw:
        raise _fail(path, f"params.{name}.default: every param needs a default")
    choices = raw.get("choices")
    param = Param(
        name=name,
        type=raw["type"],
        default=raw["default"],
        help=str(raw.get("help", "")),
        min=raw.get("min"),
        max=raw.get("max"),
        choices=tuple(choices) if choices is not None else None,
    )
    try:
        param = Param(**{**param.__dict__, "default": param.coerce(param.default)})
    except ValueError as exc:
        raise _fail(path, f"params.{name}.default: {exc}") from None
    return param


def _patch_text(path: Path) -> str:
    """A patch file's text; one that defines nothing would silently drop the technique's code from
    every model using it, so it is refused (syntax errors are reported when the patch is parsed)."""
    text = read_input_text(path, "a technique patch")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return text
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    if not any(isinstance(statement, definitions) for statement in tree.body):
        raise _fail(path, "the patch defines nothing (no class, function or assignment); add what the technique adds or replaces, or delete the file")
    return text


def load_technique(directory: Path, local: bool = False) -> Technique:
    """Load one technique folder; raise SmtError naming the file on bad metadata."""
    path = directory / METADATA_FILE
    meta = load_yaml(path, "technique metadata")
    if not isinstance(meta, dict):
        raise _fail(path, "expected a mapping of technique metadata")
    unknown = set(meta) - _METADATA_KEYS
    if unknown:
        raise _fail(path, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_METADATA_KEYS)}")
    for key in ("name", "version", "summary", "reference"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise _fail(path, f"{key}: required, a non-empty string")
    if meta["name"] != directory.name:
        raise _fail(path, f"name: {meta['name']!r} must equal the folder name {directory.name!r}")
    if not _VERSION.match(meta["version"]):
        raise _fail(path, f"version: {meta['version']!r} must look like 1.2.3")
    params = tuple(_load_param(path, name, raw) for name, raw in (meta.get("params") or {}).items())
    lists = {}
    for key in ("requires", "conflicts", "after", "builds_on"):
        value = meta.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _fail(path, f"{key}: expected a list of technique names")
        lists[key] = tuple(value)
    applies_to = meta.get("applies_to") or {}
    if not isinstance(applies_to, dict) or set(applies_to) - set(PRECONDITIONS):
        raise _fail(path, f"applies_to: expected a mapping with keys from {list(PRECONDITIONS)}")
    patches = tuple(
        (patch.name, _patch_text(patch))
        for patch in sorted(directory.glob("*.py"))
        if not patch.name.startswith("test_") and patch.name != "conftest.py"
    )
    if not patches:
        raise _fail(directory, "a technique needs at least one patch file named after the module it changes (e.g. model.py)")
    return Technique(
        name=meta["name"],
        version=meta["version"],
        summary=meta["summary"].strip(),
        reference=meta["reference"].strip(),
        params=params,
        requires=lists["requires"],
        conflicts=lists["conflicts"],
        after=lists["after"],
        builds_on=lists["builds_on"],
        applies_to=tuple(sorted(applies_to.items())),
        patches=patches,
        directory=directory,
        local=local,
    )


def load_library(directory: Path, local: bool = False) -> dict[str, Technique]:
    """Every technique under ``directory`` (one folder each), by name, in name order."""
    if not directory.is_dir():
        if local:
            return {}
        raise SmtError(f"{directory}: technique library folder not found; run smt inside an SMT repository or set SMT_ROOT")
    library = {}
    for folder in sorted(directory.iterdir()):
        if folder.is_dir() and (folder / METADATA_FILE).is_file():
            technique = load_technique(folder, local=local)
            library[technique.name] = technique
    if not local:  # a shared technique can only name shared ones (a local one may name either)
        for technique in library.values():
            for key in ("requires", "builds_on", "after", "conflicts"):
                unknown = [name for name in getattr(technique, key) if name not in library]
                if unknown:
                    raise _fail(
                        technique.directory / METADATA_FILE,
                        f"{key}: {unknown[0]!r} is not a technique of the library; fix the name or remove it "
                        f"(techniques: {', '.join(library)})",
                    )
    return library
