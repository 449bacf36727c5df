"""Template releases and the technique-model pairs each one adopted, from git history.

A release is the first commit at which ``template_repo/VERSION`` holds a new version (``git log`` of
that file). The pairs a release adopted are the (model, technique) pairs of the specs committed at
that commit that the specs at the previous release did not have; the pairs it dropped, the reverse.
An adoption committed between two releases therefore counts for the first release that contains
it. The working tree's specs are compared with the last release as "unreleased". Release notes come
from ``CHANGELOG.md`` (``## VERSION (DATE)`` sections).

Specs are read straight from git's object store (one ``git cat-file --batch`` process) and parsed
once per distinct blob, so a 1,000-model fleet with a few releases costs a few seconds at most.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..engine.paths import TEMPLATE_DIR
from ..fleet import ANSWERS_FILE, GENERATED_DIR

VERSION_FILE = f"{TEMPLATE_DIR}/VERSION"
# Since runtime 0.6.0 template_repo/VERSION is a link to the runtime's VERSION, which git
# records as the link's target path; the version's history is the union of both files.
RUNTIME_VERSION_FILE = "runtime/smt_runtime/VERSION"
SYMLINK_MODE = "120000"
CHANGELOG = "CHANGELOG.md"
_SECTION = re.compile(r"^## (\S+)(?: \(([^)]*)\))?\s*$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Pair = tuple[str, str]  # (model, technique)


def technique_names(answers: Mapping[str, Any]) -> list[str]:
    """The technique names a spec lists (entries ``{name: ...}``, or bare names in old specs)."""
    names = []
    for use in answers.get("techniques") or []:
        if isinstance(use, Mapping) and isinstance(use.get("name"), str):
            names.append(use["name"])
        elif isinstance(use, str):
            names.append(use)
    return names


def changelog_notes(root: Path) -> dict[str, dict[str, str]]:
    """Version -> {"date", "notes"} from CHANGELOG.md's ``## VERSION (DATE)`` sections."""
    path = root / CHANGELOG
    if not path.is_file():
        return {}
    notes: dict[str, dict[str, str]] = {}
    current: str | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _SECTION.match(line)
        if match:
            if current is not None:
                notes[current]["notes"] = "\n".join(lines).strip()
            current, lines = match.group(1), []
            notes[current] = {"date": match.group(2) or "", "notes": ""}
        elif current is not None:
            lines.append(line)
    if current is not None:
        notes[current]["notes"] = "\n".join(lines).strip()
    return notes


class _Git:
    """git in ``root``: plain commands, and blobs read through one ``cat-file --batch`` process."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else None

    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        proc = subprocess.run(
            ["git", "cat-file", "--batch"], cwd=self.root, input="\n".join(wanted).encode() + b"\n", capture_output=True
        )
        out, data, position = {}, proc.stdout, 0
        for sha in wanted:
            end = data.index(b"\n", position)
            header = data[position:end].split()
            position = end + 1
            if len(header) < 3 or header[1] == b"missing":
                continue
            size = int(header[2])
            out[sha] = data[position : position + size]
            position += size + 1
        return out


def _version_commits(git: _Git) -> list[tuple[str, str, str]]:
    """(commit, date, version) of each commit that set VERSION to a new version, oldest first."""
    log = git.run("log", "--reverse", "--format=%H %cs", "--", VERSION_FILE, RUNTIME_VERSION_FILE)
    if not log:
        return []
    commits = [line.split(" ", 1) for line in log.splitlines() if line.strip()]
    listing = {}
    for commit, _ in commits:
        for path in (RUNTIME_VERSION_FILE, VERSION_FILE):
            tree = git.run("ls-tree", commit, "--", path)
            fields = tree.split() if tree else []
            if fields and fields[0] != SYMLINK_MODE:
                listing[commit] = fields[2]
                break
    texts = git.blobs(listing.values())
    releases, previous = [], None
    for commit, date in commits:
        version = texts.get(listing.get(commit, ""), b"").decode(errors="replace").strip()
        if version and version != previous:
            releases.append((commit, date, version))
            previous = version
    return releases


def _pairs_at(git: _Git, commit: str, parsed: dict[str, list[str]]) -> set[Pair]:
    """(model, technique) pairs of the specs committed at ``commit``; ``parsed`` caches blob -> names."""
    listing = git.run("ls-tree", "-r", commit, "--", f"{GENERATED_DIR}/") or ""
    specs: dict[str, str] = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == ANSWERS_FILE and not parts[1].startswith("."):
            specs[parts[1]] = meta.split()[2]
    missing = [sha for sha in specs.values() if sha not in parsed]
    for sha, data in git.blobs(missing).items():
        try:
            answers = yaml.load(data.decode("utf-8", errors="replace"), Loader=_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            answers = None  # a spec broken at that commit counts no pairs
        parsed[sha] = technique_names(answers) if isinstance(answers, Mapping) else []
    return {(model, name) for model, sha in specs.items() for name in parsed.get(sha, [])}


def _change(pairs: set[Pair], previous: set[Pair]) -> dict[str, Any]:
    return {
        "pairs": len(pairs),
        "adopted": sorted(pairs - previous),
        "dropped": sorted(previous - pairs),
    }


def release_history(root: Path, current_pairs: set[Pair], current_version: str) -> dict[str, Any]:
    """Every template release with its date, commit, CHANGELOG notes and adopted/dropped pairs,
    newest first, plus what the working tree has changed since the last release."""
    notes = changelog_notes(root)
    git = _Git(root)
    inside = git.run("rev-parse", "--is-inside-work-tree")
    if not inside or inside.strip() != "true":
        return {
            "source": "none",
            "note": "not a git repository: release history needs the git history of template_repo/VERSION",
            "releases": [],
            "unreleased": {"version": current_version, **_change(current_pairs, set())},
        }
    parsed: dict[str, list[str]] = {}
    releases, previous = [], set()
    for commit, date, version in _version_commits(git):
        pairs = _pairs_at(git, commit, parsed)
        entry = notes.get(version, {})
        releases.append({
            "version": version,
            "commit": commit[:10],
            "date": date,
            "changelog_date": entry.get("date", ""),
            "notes": entry.get("notes", ""),
            **_change(pairs, previous),
        })
        previous = pairs
    unreleased = {"version": current_version, **_change(current_pairs, previous)}
    return {
        "source": "git",
        "note": (
            "A release is the first commit at which template_repo/VERSION holds a new version. It adopted the "
            "technique-model pairs in the specs committed there that the previous release's specs lacked; "
            "'unreleased' compares the working tree's specs with the last release."
        ),
        "releases": list(reversed(releases)),
        "unreleased": unreleased,
    }
