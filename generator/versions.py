"""Technique versions: a recorded fingerprint per technique, so a change without a version bump fails.

``techniques/fingerprints.yml`` maps each technique to the version and content fingerprint (metadata
plus patch sources) last recorded with ``smt techniques lock``. A technique whose code changed but
whose version did not is an error; so is a new version that was not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .engine import SmtError, Technique

LOCK_FILE = Path("techniques") / "fingerprints.yml"


@dataclass(frozen=True)
class VersionProblem:
    technique: str
    message: str


def read_lock(root: Path) -> dict[str, dict[str, str]]:
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise SmtError(f"{path}: invalid YAML; regenerate it with `smt techniques lock`") from None
    if not isinstance(data, dict):
        raise SmtError(f"{path}: expected a mapping of technique -> {{version, fingerprint}}")
    return data


def version_problems(root: Path, library: Mapping[str, Technique]) -> list[VersionProblem]:
    """Techniques whose recorded version and fingerprint disagree with their sources."""
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
    entries = {name: {"version": t.version, "fingerprint": t.fingerprint} for name, t in library.items()}
    header = "# Recorded technique versions and content fingerprints; update with `smt techniques lock`.\n"
    (root / LOCK_FILE).write_text(header + yaml.safe_dump(entries, sort_keys=True))
