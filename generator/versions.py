"""Technique versions: a recorded fingerprint per technique, so a change without a version bump fails.

``techniques/fingerprints.yml`` maps each technique to the version and content fingerprint (metadata
plus patch sources) last recorded with ``smt techniques lock``, and to a fingerprint of every
template definition it replaces (as rendered for the reference model). A technique whose code
changed but whose version did not is an error; so is a new version that was not recorded; so is a
template definition that changed under a technique replacing it: the technique carries its own
version of that definition, so the change would silently skip every model using the technique.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .engine import TEMPLATE_DIR, SmtError, Technique
from .reference import template_definitions
from .engine.store import load_yaml

LOCK_FILE = Path("techniques") / "fingerprints.yml"


@dataclass(frozen=True)
class VersionProblem:
    technique: str
    message: str


def read_lock(root: Path) -> dict[str, dict[str, Any]]:
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = load_yaml(path, "the technique lock") or {}
    except SmtError as error:  # bounded, one line with file:line
        raise SmtError(f"{error}; or regenerate it with `smt techniques lock`") from None
    if not isinstance(data, dict):
        raise SmtError(f"{path}: expected a mapping of technique -> {{version, fingerprint}}")
    return data


def version_problems(root: Path, library: Mapping[str, Technique]) -> list[VersionProblem]:
    """Techniques whose recorded version and fingerprint disagree with their sources, or whose
    replaced template definitions changed (``template_drift``)."""
    lock = read_lock(root)
    problems = []
    for name, technique in library.items():
        recorded = lock.get(name)
        if recorded is None:
            problems.append(VersionProblem(name, f"{name} {technique.version} is not recorded; run `smt techniques lock`"))
        elif recorded.get("version") == technique.version and recorded.get("fingerprint") != technique.fingerprint:
            problems.append(
                VersionProblem(name, f"{name} changed but its version is still {technique.version}; bump version in techniques/{name}/technique.yml, then run `smt techniques lock`")
            )
        elif recorded.get("version") != technique.version:
            problems.append(VersionProblem(name, f"{name} is now {technique.version} (recorded {recorded.get('version')}); run `smt techniques lock`"))
    for name in sorted(set(lock) - set(library)):
        problems.append(VersionProblem(name, f"{name} is recorded but no longer exists; run `smt techniques lock`"))
    return problems + template_drift(root, library)


def replaced_definitions(root: Path, library: Mapping[str, Technique]) -> dict[str, dict[str, str | None]]:
    """Technique -> {"<target>:<name>": fingerprint of the template's definition it replaces} (None
    where the template no longer defines it). Reads patches with ``ast`` and the extension points
    with PyYAML, so that ``smt check`` on a fleet the cache vouches for imports neither libcst nor black."""
    kinds = _point_kinds(root)
    replaced: dict[str, list[tuple[str, str]]] = {}
    for name, technique in library.items():
        replaced[name] = sorted(
            (target, point)
            for target, source in technique.patches
            for point in _defined_names(source, technique.directory / target)
            if kinds.get(target, {}).get(point) == "replace"
        )
    targets = sorted({target for pairs in replaced.values() for target, _ in pairs})
    template = template_definitions(root, targets) if targets else {}
    return {name: {f"{target}:{point}": template[target].get(point) for target, point in pairs} for name, pairs in replaced.items()}


def _point_kinds(root: Path) -> dict[str, dict[str, str]]:
    path = root / TEMPLATE_DIR / "extension_points.yml"
    raw = load_yaml(path, "the template's extension points") or {}
    return {
        target: {name: value.get("kind") for name, value in names.items() if isinstance(value, dict)}
        for target, names in raw.items()
        if isinstance(names, dict)
    }


def _defined_names(source: str, path: Path) -> list[str]:
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise SmtError(f"{path}: not valid Python ({exc.msg} at line {exc.lineno})") from None
    return [node.name for node in module.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]


def template_drift(root: Path, library: Mapping[str, Technique]) -> list[VersionProblem]:
    """Unchanged techniques replacing a template definition that changed since they were locked."""
    lock = read_lock(root)
    problems = []
    current = replaced_definitions(root, library)
    for name, technique in library.items():
        recorded = lock.get(name) or {}
        if recorded.get("version") != technique.version or recorded.get("fingerprint") != technique.fingerprint:
            continue  # the technique itself changed: version_problems says so, and the lock re-records
        locked = recorded.get("replaces") or {}
        for key, fingerprint in current[name].items():
            if locked.get(key) == fingerprint:
                continue
            target, point = key.split(":", 1)
            if fingerprint is None:
                why = "which the template no longer defines; update techniques/{name}/{target} to the template"
            elif key not in locked:
                why = "whose template definition is not recorded; check techniques/{name}/{target} against it"
            else:
                why = "whose template definition changed since it was locked; port the change into techniques/{name}/{target}"
            problems.append(
                VersionProblem(name, f"technique {name} replaces {point} of {target}, {why.format(name=name, target=target)}, then run `smt techniques lock`")
            )
    return problems


def changed_techniques(root: Path, library: Mapping[str, Technique]) -> list[tuple[Technique, str | None]]:
    """Techniques whose code differs from what was recorded, with the recorded version."""
    lock = read_lock(root)
    return [
        (technique, lock.get(name, {}).get("version"))
        for name, technique in library.items()
        if lock.get(name, {}).get("fingerprint") != technique.fingerprint
    ]


def write_lock(root: Path, library: Mapping[str, Technique]) -> None:
    replaced = replaced_definitions(root, library)
    entries: dict[str, dict[str, object]] = {}
    for name, technique in library.items():
        entries[name] = {"version": technique.version, "fingerprint": technique.fingerprint}
        if replaced[name]:
            entries[name]["replaces"] = replaced[name]
    header = (
        "# Recorded technique versions and content fingerprints, and fingerprints of the template\n"
        "# definitions each technique replaces (<module>:<name>); update with `smt techniques lock`.\n"
    )
    (root / LOCK_FILE).write_text(header + yaml.safe_dump(entries, sort_keys=True))
