"""Why a generated file drifted: a spec, template, technique or engine change, or a hand edit.

``smt check`` finds files that differ from a fresh regeneration; this module says what caused each.
In a git checkout the committed file stands for what the committed inputs produce (CI keeps
``generated/`` in sync at every commit, as ``smt diff --since`` also assumes): a file equal to its
committed text drifted because an input changed since, and the changed inputs that feed it are
named; a file that differs from its committed text while none of its inputs changed was edited by
hand. Outside git, only technique changes can be told (from ``techniques/fingerprints.yml``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .blame import template_source
from .engine import Technique
from .engine.header import FileHeader
from .engine.paths import LOCAL_TECHNIQUES_DIR, TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import ANSWERS_FILE, GENERATED_DIR, ModelEntry
from .sync import FileChange
from .versions import changed_techniques

ENGINE_DIR = "generator/engine"


@dataclass(frozen=True)
class Drift:
    """One drifted file and what caused it."""

    path: str  # generated/<model>/<file>
    kind: str  # as FileChange.kind: "modified", "added" (missing on disk) or "removed" (extra on disk)
    causes: tuple[str, ...]  # input changes that explain it, e.g. "technique dcn_v2 changed (1.0.0 -> 1.0.1)"
    hand_edit: bool

    def describe(self) -> str:
        if self.hand_edit and self.causes:
            because = f"a hand edit, or a regeneration before later input changes ({'; '.join(self.causes)})"
        elif self.hand_edit:
            because = "a hand edit (it differs from its committed text and none of its inputs changed)"
        else:
            because = "; ".join(self.causes)
        return f"{self.path}: {self.kind}, caused by {because}"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def _in_git(root: Path) -> bool:
    return _git(root, "rev-parse", "--verify", "--quiet", "HEAD").returncode == 0


def _changed_since_head(root: Path) -> set[str]:
    """Paths (relative to ``root``) of inputs changed in the working tree since HEAD, untracked included."""
    paths = [TEMPLATE_DIR, TECHNIQUES_DIR, ENGINE_DIR, GENERATED_DIR]
    tracked = _git(root, "diff", "--relative", "--name-only", "HEAD", "--", *paths).stdout.split("\n")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *paths).stdout.split("\n")
    return {path for path in [*tracked, *untracked] if path}


def _committed(root: Path, path: str) -> str | None:
    proc = _git(root, "show", f"HEAD:./{path}")
    return proc.stdout if proc.returncode == 0 else None


def _labels(text: str | None) -> dict[str, str]:
    """Technique name -> label ("dcn_v2 1.0.1") from a generated file's header."""
    header = FileHeader.parse(text)
    return {label.split(" ")[0].removeprefix("local:"): label for label in (header.techniques if header else ())}


def _technique_causes(changed: set[str], change: FileChange) -> list[str]:
    old, new = _labels(change.old), _labels(change.new)
    causes = []
    for name in sorted(set(old) | set(new)):
        touched = sorted(path for path in changed if path.startswith(f"{TECHNIQUES_DIR}/{name}/"))
        if old.get(name) != new.get(name) and name in old and name in new:
            causes.append(f"technique {name} changed ({old[name].split(' ')[-1]} -> {new[name].split(' ')[-1]})")
        elif touched:
            causes.append(f"technique {name} changed ({', '.join(touched)})")
    return causes


def _git_causes(root: Path, entry: ModelEntry, change: FileChange, changed: set[str]) -> tuple[list[str], bool]:
    model_dir = f"{GENERATED_DIR}/{entry.name}"
    causes: list[str] = []
    if f"{model_dir}/{ANSWERS_FILE}" in changed:
        causes.append(f"its spec changed ({model_dir}/{ANSWERS_FILE})")
    local = sorted(path for path in changed if path.startswith(f"{model_dir}/{LOCAL_TECHNIQUES_DIR}/"))
    if local:
        causes.append(f"its local techniques changed ({', '.join(local)})")
    old, new = _labels(change.old), _labels(change.new)
    if set(old) != set(new):
        added, dropped = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        causes += [f"technique {name} now applies to it" for name in added] + [f"technique {name} no longer applies to it" for name in dropped]
    causes += _technique_causes(changed, change)
    source = template_source(entry.name, change.path)
    # Another file's template does not feed this one; the questions, extension points and extension do.
    template = sorted(path for path in changed if path.startswith(f"{TEMPLATE_DIR}/") and (path == source or not path.startswith(f"{TEMPLATE_DIR}/template/")))
    if template:
        causes.append(f"the template changed ({', '.join(template[:3])}{', ...' if len(template) > 3 else ''})")
    if any(path.startswith(f"{ENGINE_DIR}/") for path in changed):
        causes.append(f"the engine changed ({ENGINE_DIR}/)")
    on_disk = change.old
    edited = on_disk != _committed(root, f"{model_dir}/{change.path}")
    return causes, edited


def explain(root: Path, stale: list[tuple[ModelEntry, FileChange]], library: Mapping[str, Technique]) -> list[Drift]:
    """What caused each drifted file, in the order given."""
    if _in_git(root):
        changed = _changed_since_head(root)
        drifts = []
        for entry, change in stale:
            causes, edited = _git_causes(root, entry, change, changed)
            if not causes and not edited:
                causes = ["inputs committed without regenerating generated/ (or other black/libcst versions)"]
            drifts.append(Drift(f"{GENERATED_DIR}/{entry.name}/{change.path}", change.kind, tuple(causes), edited))
        return drifts
    recorded = {technique.name: version for technique, version in changed_techniques(root, library)}
    drifts = []
    for entry, change in stale:
        old, new = _labels(change.old), _labels(change.new)
        causes = [
            f"technique {name} changed since version {recorded[name]} was recorded" if recorded[name] else f"technique {name} changed (not yet recorded)"
            for name in sorted(set(old) | set(new))
            if name in recorded
        ]
        if not causes:
            causes = ["a hand edit or a spec or template change (not a git checkout: cannot tell which)"]
        drifts.append(Drift(f"{GENERATED_DIR}/{entry.name}/{change.path}", change.kind, tuple(causes), False))
    return drifts
