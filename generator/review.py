"""Fleet impact reports for code review: what a change (or a candidate technique) does to every model.

``diff_since`` compares the generated tree committed at a git ref with a fresh regeneration of the
working tree (CI keeps ``generated/`` in sync at every commit, so the committed tree is what the ref
renders). ``preview`` compares a model's current code with the code it would get with one more
technique. Both produce a ``FleetReport``, formatted as text, Markdown (a PR description) or JSON.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .engine import SmtError
from .engine.header import FileHeader
from .fleet import GENERATED_DIR, Fleet
from .render import RenderedTree, render_model
from .sync import FileChange, compare, count_lines


@dataclass
class ModelImpact:
    """One model's regenerated diff."""

    model: str
    changes: list[FileChange]
    techniques: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def lines(self) -> tuple[int, int]:
        return count_lines(self.changes)


@dataclass
class FleetReport:
    """Per-model diffs plus what caused them, sorted by impact (most changed lines first)."""

    title: str
    models: list[ModelImpact]
    unaffected: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    changed_sources: list[str] = field(default_factory=list)

    def sort(self) -> None:
        self.models.sort(key=lambda impact: (-sum(impact.lines), impact.model))


def _header_techniques(text: str | None) -> set[str]:
    header = FileHeader.parse(text)
    return set(header.techniques) if header else set()


def _techniques_involved(changes: list[FileChange], changed: set[str]) -> list[str]:
    """Techniques behind the changes: adopted, dropped or re-versioned in a file's header, or in
    ``changed`` (techniques whose sources changed) and applied to a changed file."""
    labels: set[str] = set()
    for change in changes:
        old, new = _header_techniques(change.old), _header_techniques(change.new)
        labels |= old ^ new
        labels |= {label for label in old | new if label.split(" ")[0].removeprefix("local:") in changed}
    return sorted(labels)


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SmtError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def committed_tree(root: Path, ref: str, model: str) -> RenderedTree:
    """``generated/<model>/`` as committed at ``ref`` (spec and local techniques excluded)."""
    prefix = f"{GENERATED_DIR}/{model}/"
    listing = _git(root, "ls-tree", "-r", "--name-only", ref, "--", prefix)
    tree = {}
    for path in listing.splitlines():
        relative = path[len(prefix) :]
        if relative == ".copier-answers.yml" or relative.startswith("local_techniques/"):
            continue
        tree[relative] = _git(root, "show", f"{ref}:{path}")
    return tree


def diff_since(fleet: Fleet, ref: str, names: list[str] | None = None) -> FleetReport:
    """What the working tree's template, techniques and specs change relative to ``ref``."""
    _git(fleet.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    entries = fleet.models(names)
    sources = [
        line
        for line in _git(fleet.root, "diff", "--name-only", ref, "--", "template_repo", "techniques", "generator/engine").splitlines()
        if line
    ]
    changed = {path.split("/")[1] for path in sources if path.startswith("techniques/") and path.count("/") >= 2}
    impacts, unaffected = [], []
    for entry in entries:
        old = committed_tree(fleet.root, ref, entry.name)
        new = render_model(fleet.root, entry.answers, entry.name, entry.directory)
        changes = compare(old, new)
        if not changes:
            unaffected.append(entry.name)
            continue
        impacts.append(ModelImpact(entry.name, changes, _techniques_involved(changes, changed), "new model" if not old else ""))
    report = FleetReport(f"Fleet impact since {ref}", impacts, unaffected, changed_sources=sources)
    report.sort()
    return report


def preview(fleet: Fleet, technique: str, names: list[str], params: dict[str, object]) -> FleetReport:
    """What adopting ``technique`` (with ``params``) would change in each named model; writes nothing."""
    impacts, unaffected, skipped = [], [], []
    for entry in fleet.models(names):
        if entry.spec.uses_technique(technique):
            skipped.append((entry.name, "already uses it"))
            continue
        answers = entry.spec.with_technique(technique, params).as_dict()
        try:
            new = render_model(fleet.root, answers, entry.name, entry.directory)
        except SmtError as error:
            skipped.append((entry.name, str(error).removeprefix(f"{entry.name}: ")))
            continue
        # Both sides fresh, so drift or unrelated template edits do not show up as the technique's doing.
        changes = compare(render_model(fleet.root, entry.answers, entry.name, entry.directory), new)
        if changes:
            impacts.append(ModelImpact(entry.name, changes, _techniques_involved(changes, {technique})))
        else:
            unaffected.append(entry.name)
    report = FleetReport(f"Preview: adopting {technique}", impacts, unaffected, skipped)
    report.sort()
    return report


def format_text(report: FleetReport, with_diffs: bool = True) -> str:
    lines = [report.title, ""]
    lines.append(f"{'model':<22} {'files':>5} {'+lines':>7} {'-lines':>7}  techniques involved")
    for impact in report.models:
        added, removed = impact.lines
        lines.append(f"{impact.model:<22} {len(impact.changes):>5} {added:>7} {removed:>7}  {', '.join(impact.techniques) or '-'}{'  (' + impact.note + ')' if impact.note else ''}")
    lines.append(f"{len(report.models)} model(s) affected, {len(report.unaffected)} unaffected" + (f": {', '.join(report.unaffected)}" if report.unaffected else ""))
    for model, reason in report.skipped:
        lines.append(f"not applicable to {model}: {reason}")
    if report.changed_sources:
        lines.append("changed sources: " + ", ".join(report.changed_sources))
    text = "\n".join(lines) + "\n"
    if with_diffs:
        for impact in report.models:
            text += "\n" + "".join(change.unified_diff(impact.model) for change in impact.changes)
    return text


def format_markdown(report: FleetReport) -> str:
    out = [f"## {report.title}", ""]
    total_added = sum(impact.lines[0] for impact in report.models)
    total_removed = sum(impact.lines[1] for impact in report.models)
    out.append(f"**{len(report.models)}** model(s) affected (+{total_added} / -{total_removed} lines), {len(report.unaffected)} unaffected.")
    out.append("")
    out.append("| model | files | + lines | - lines | techniques involved |")
    out.append("|---|---:|---:|---:|---|")
    for impact in report.models:
        added, removed = impact.lines
        note = f" ({impact.note})" if impact.note else ""
        out.append(f"| `{impact.model}`{note} | {len(impact.changes)} | {added} | {removed} | {', '.join(f'`{t}`' for t in impact.techniques) or '-'} |")
    if report.unaffected:
        out += ["", "Unaffected: " + ", ".join(f"`{name}`" for name in report.unaffected)]
    if report.skipped:
        out += ["", "Not applicable:"] + [f"- `{model}`: {reason}" for model, reason in report.skipped]
    if report.changed_sources:
        out += ["", "Changed sources: " + ", ".join(f"`{path}`" for path in report.changed_sources)]
    for impact in report.models:
        added, removed = impact.lines
        out += ["", f"<details><summary><code>{impact.model}</code>: {len(impact.changes)} file(s), +{added} -{removed}</summary>", "", "```diff"]
        out.append("".join(change.unified_diff(impact.model) for change in impact.changes).rstrip("\n"))
        out += ["```", "", "</details>"]
    return "\n".join(out) + "\n"


def format_json(report: FleetReport) -> str:
    data = {
        "title": report.title,
        "affected": [
            {
                "model": impact.model,
                "note": impact.note,
                "added_lines": impact.lines[0],
                "removed_lines": impact.lines[1],
                "techniques": impact.techniques,
                "files": [
                    {"path": change.path, "kind": change.kind, "added_lines": count_lines([change])[0], "removed_lines": count_lines([change])[1]}
                    for change in impact.changes
                ],
                "diff": "".join(change.unified_diff(impact.model) for change in impact.changes),
            }
            for impact in report.models
        ],
        "unaffected": report.unaffected,
        "not_applicable": [{"model": model, "reason": reason} for model, reason in report.skipped],
        "changed_sources": report.changed_sources,
    }
    return json.dumps(data, indent=2) + "\n"


FORMATTERS = {"text": format_text, "markdown": format_markdown, "json": format_json}
