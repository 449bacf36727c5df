"""Fleet impact reports for code review: what a change (or a candidate technique) does to every model.

``diff_since`` compares the generated tree committed at a git ref with a fresh regeneration of the
working tree (CI keeps ``generated/`` in sync at every commit, so the committed tree is what the ref
renders). ``preview`` compares a model's current code with the code it would get with one more
technique. Both produce a ``FleetReport``, formatted as text, Markdown (a PR description) or JSON.

A report is written for a reviewer: per model the spec diff and the parameter and MFLOP deltas;
models count as affected only when their code changed (a header that merely changed wording is not
a change); hunks that several models get are shown once with the list of those models; and each
technique involved is shown with its old -> new version, summary, reference and qualification.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engine import SmtError, Technique
from .engine.header import FileHeader, strip_header
from .engine.paths import TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import ANSWERS_FILE, GENERATED_DIR, Fleet, ModelAnswers, ModelEntry
from .render import RenderedTree, check_spec, render_model
from .sync import FileChange, compare, count_lines, write_tree

ENGINE_DIR = "generator/engine"
RUNTIME_PACKAGE = "runtime/smt_runtime"  # shared by every model: its diff is shown once


@dataclass
class ModelImpact:
    """One model's regenerated diff, its spec diff and its capacity before and after."""

    model: str
    changes: list[FileChange]
    techniques: list[str] = field(default_factory=list)
    note: str = ""
    spec_diff: str = ""  # unified diff of the spec (answers file), "" when unchanged
    params: tuple[int, int] | None = None  # (before, after), when measured
    mflops: tuple[float, float] | None = None

    @property
    def lines(self) -> tuple[int, int]:
        return count_lines(self.changes)


@dataclass(frozen=True)
class TechniqueChange:
    """A technique the report involves: new, changed or removed sources, or adopted/dropped by specs."""

    name: str
    status: str  # "new", "changed", "removed" or "unchanged" (only adopted or dropped)
    old_version: str | None
    new_version: str | None
    summary: str
    reference: str
    adopted_by: tuple[str, ...] = ()
    dropped_by: tuple[str, ...] = ()
    qualification: str = ""  # the stored verdict, "" when there is none

    @property
    def versions(self) -> str:
        if self.old_version and self.new_version and self.old_version != self.new_version:
            return f"{self.old_version} -> {self.new_version}"
        return self.new_version or self.old_version or "?"


@dataclass
class FleetReport:
    """Per-model diffs plus what caused them, sorted by impact (most changed lines first)."""

    title: str
    models: list[ModelImpact]
    unaffected: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    changed_sources: list[str] = field(default_factory=list)
    techniques: list[TechniqueChange] = field(default_factory=list)
    capacity_note: str = ""  # why deltas are missing, when they are
    runtime_diff: str = ""  # the runtime's own unified diff, once for every model that pins it

    @property
    def runtime_lines(self) -> tuple[int, int]:
        """(added, removed) lines of the runtime's diff."""
        lines = self.runtime_diff.splitlines()
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        return added, removed

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


def code_changes(old: RenderedTree, new: RenderedTree) -> list[FileChange]:
    """Files whose code differs. A file whose header only changed wording (same target and
    techniques, e.g. one written before the template version left the headers) is not a change,
    and such a file's diff shows its body only."""
    changes = []
    for change in compare(old, new):
        if change.kind == "modified":
            before, after = FileHeader.parse(change.old), FileHeader.parse(change.new)
            if before is not None and before == after:
                old_body, new_body = strip_header(change.old or ""), strip_header(change.new or "")
                if old_body == new_body:
                    continue
                header = after.render()
                change = FileChange(change.path, change.kind, header + old_body, header + new_body)
        changes.append(change)
    return changes


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr.strip().splitlines() or ["failed"])[-1:])
        raise SmtError(f"git {' '.join(args)}: {detail}; check that the ref exists (`git log --oneline`) and that this is a git checkout")
    return proc.stdout


def _git_text(root: Path, ref: str, path: str) -> str | None:
    """A file's text at ``ref`` (path relative to ``root``), or None when it did not exist there."""
    proc = subprocess.run(["git", "show", f"{ref}:./{path}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def committed_tree(root: Path, ref: str, model: str) -> RenderedTree:
    """``generated/<model>/`` as committed at ``ref`` (spec and local techniques excluded)."""
    prefix = f"{GENERATED_DIR}/{model}/"
    listing = _git(root, "ls-tree", "-r", "--name-only", "--full-name", ref, "--", prefix)
    top = _git(root, "rev-parse", "--show-prefix").strip()
    tree = {}
    for path in listing.splitlines():
        relative = path[len(top) + len(prefix) :]
        if relative == ANSWERS_FILE or relative.startswith("local_techniques/"):
            continue
        tree[relative] = _git(root, "show", f"{ref}:{path}")
    return tree


def _spec_diff(model: str, old: str | None, new: str | None) -> str:
    """The spec's unified diff without context, comment lines left out (smt rewrites its header)."""
    path = f"{GENERATED_DIR}/{model}/{ANSWERS_FILE}"
    before, after = ([line for line in (text or "").splitlines() if not line.startswith("#")] for text in (old, new))
    lines = list(difflib.unified_diff(before, after, f"a/{path}", f"b/{path}", lineterm="", n=0))
    return "\n".join(lines) + "\n" if lines else ""


def _spec_names(text: str | None, model: str) -> list[str]:
    if not text:
        return []
    try:
        return ModelAnswers(model, yaml.safe_load(text) or {}).technique_names
    except (yaml.YAMLError, SmtError):
        return []  # a spec broken at that ref names no techniques we can trust


def _technique_meta(root: Path, ref: str, name: str) -> dict[str, Any] | None:
    text = _git_text(root, ref, f"{TECHNIQUES_DIR}/{name}/technique.yml")
    try:
        meta = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


def _verdict(root: Path, technique: Technique) -> str:
    from .engine import load_sources  # noqa: PLC0415
    from .qualification.report import latest_record  # noqa: PLC0415

    record = latest_record(root, technique.name, str(technique.version), load_sources(root).version)
    if record is None:
        return ""
    verdict = "PASS" if record["passed"] else "FAIL"
    return f"{verdict}, mean gain {record['mean_gain']:+.3%} on {', '.join(record['models'])} ({record['date']}; {record['report']})"


def _technique_changes(fleet: Fleet, ref: str, sources: list[str], adopted: dict[str, list[str]], dropped: dict[str, list[str]]) -> list[TechniqueChange]:
    from .engine import load_sources  # noqa: PLC0415

    library = load_sources(fleet.root).library
    touched = {path.split("/")[1] for path in sources if path.startswith(f"{TECHNIQUES_DIR}/") and path.count("/") >= 2}
    out = []
    for name in sorted(touched | set(adopted) | set(dropped)):
        old = _technique_meta(fleet.root, ref, name)
        now = library.get(name)
        status = "unchanged" if name not in touched else "new" if old is None else "removed" if now is None else "changed"
        meta = {"summary": now.summary, "reference": now.reference} if now is not None else (old or {})
        out.append(
            TechniqueChange(
                name,
                status,
                str(old["version"]) if old and "version" in old else None,
                str(now.version) if now is not None else None,
                str(meta.get("summary", "")),
                str(meta.get("reference", "")),
                tuple(adopted.get(name, ())),
                tuple(dropped.get(name, ())),
                _verdict(fleet.root, now) if now is not None else "",
            )
        )
    return out


def _not_applicable(fleet: Fleet, techniques: list[TechniqueChange], entries: list[ModelEntry], affected: set[str]) -> list[tuple[str, str]]:
    """Unaffected models that could not take a new or adopted technique, with the reason."""
    skipped = []
    for change in techniques:
        if change.new_version is None or (change.status != "new" and not change.adopted_by):
            continue
        for entry in entries:
            if entry.name in affected or entry.spec.uses_technique(change.name):
                continue
            try:
                check_spec(fleet.root, entry.spec.with_technique(change.name).as_dict(), entry.name, entry.directory)
            except SmtError as error:
                skipped.append((entry.name, f"{change.name}: {str(error).removeprefix(f'{entry.name}: ')}"))
    return skipped


def _measure(impacts: list[ModelImpact], old_trees: dict[str, RenderedTree], new_trees: dict[str, RenderedTree]) -> str:
    """Fill each impact's params and MFLOPs before and after (built, not trained); returns why not, or ""."""
    import importlib.util  # noqa: PLC0415

    measurable = [impact for impact in impacts if old_trees.get(impact.model)]
    if not measurable:
        return ""
    if importlib.util.find_spec("torch") is None:
        return "parameter and MFLOP deltas need PyTorch (pip install -e '.[torch]')"
    from .impact import measure_folders  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="smt-review-") as tmp:
        folders = {}
        for impact in measurable:
            for side, trees in (("old", old_trees), ("new", new_trees)):
                folder = Path(tmp) / side / impact.model
                write_tree(folder, trees[impact.model], "")  # the package alone decides its capacity
                folders[(impact.model, side)] = folder
        try:
            measured = measure_folders(list(folders.values()), "measuring capacity before and after")
        except SmtError as error:
            return str(error).splitlines()[0]
    for impact in measurable:
        old, new = measured[str(folders[(impact.model, "old")])], measured[str(folders[(impact.model, "new")])]
        impact.params = (int(old["parameters"]), int(new["parameters"]))
        impact.mflops = (float(old["mflops"]), float(new["mflops"]))
    return ""


def diff_since(fleet: Fleet, ref: str, names: list[str] | None = None, capacity: bool = True) -> FleetReport:
    """What the working tree's template, techniques and specs change relative to ``ref``."""
    _git(fleet.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    entries = fleet.models(names)
    sources = [
        line
        for line in _git(fleet.root, "diff", "--relative", "--name-only", ref, "--", TEMPLATE_DIR, TECHNIQUES_DIR, ENGINE_DIR, RUNTIME_PACKAGE).splitlines()
        if line
    ]
    changed = {path.split("/")[1] for path in sources if path.startswith(f"{TECHNIQUES_DIR}/") and path.count("/") >= 2}
    impacts, unaffected = [], []
    adopted: dict[str, list[str]] = {}
    dropped: dict[str, list[str]] = {}
    old_trees: dict[str, RenderedTree] = {}
    new_trees: dict[str, RenderedTree] = {}
    for entry in entries:
        spec_path = f"{GENERATED_DIR}/{entry.name}/{ANSWERS_FILE}"
        old_spec, new_spec = _git_text(fleet.root, ref, spec_path), entry.spec_path.read_text()
        before, after = _spec_names(old_spec, entry.name), entry.spec.technique_names
        for name in after:
            if name not in before and old_spec is not None:
                adopted.setdefault(name, []).append(entry.name)
        for name in before:
            if name not in after:
                dropped.setdefault(name, []).append(entry.name)
        old = committed_tree(fleet.root, ref, entry.name)
        new = render_model(fleet.root, entry.answers, entry.name, entry.directory)
        changes = code_changes(old, new)
        if not changes:
            unaffected.append(entry.name)
            continue
        old_trees[entry.name], new_trees[entry.name] = old, new
        impact = ModelImpact(entry.name, changes, _techniques_involved(changes, changed), "new model" if not old else "")
        impact.spec_diff = _spec_diff(entry.name, old_spec, new_spec)
        impacts.append(impact)
    report = FleetReport(f"Fleet impact since {ref}", impacts, unaffected, changed_sources=sources)
    report.runtime_diff = _git(fleet.root, "diff", "--relative", ref, "--", RUNTIME_PACKAGE)
    report.techniques = _technique_changes(fleet, ref, sources, adopted, dropped)
    report.skipped = _not_applicable(fleet, report.techniques, entries, {impact.model for impact in impacts})
    if capacity:
        report.capacity_note = _measure(impacts, old_trees, new_trees)
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


# --- shared hunks -------------------------------------------------------------------------------


@dataclass
class SharedHunk:
    """One diff hunk and every model that gets it (the model's name written as ``<model>``)."""

    path: str  # with <model> for the model's name
    header: str  # the "@@ ... @@" line of the first model
    lines: list[str]
    models: list[str]


HUNK_CONTEXT = 1  # lines of context: enough to place a hunk, few enough that models share it


def _hunks(model: str, change: FileChange) -> list[tuple[str, str, tuple[str, ...]]]:
    """(path, @@ line, body lines) of each hunk of one file's diff, the model's name made generic.
    Headers are left out: which techniques wrote a file is in the report's table."""
    generic = lambda text: text.replace(model, "<model>")  # noqa: E731
    old, new = strip_header(change.old or "").splitlines(), strip_header(change.new or "").splitlines()
    diff = list(difflib.unified_diff(old, new, lineterm="", n=0 if change.path.endswith(".md") else HUNK_CONTEXT))[2:]
    out: list[tuple[str, str, list[str]]] = []
    for line in diff:
        if line.startswith("@@"):
            out.append((generic(change.path), line, []))
        elif out:
            out[-1][2].append(generic(line))
    return [(path, header, tuple(lines)) for path, header, lines in out]


def shared_hunks(impacts: list[ModelImpact]) -> list[SharedHunk]:
    """Every hunk of the report once, with the models that get it, in first-seen order."""
    found: dict[tuple[str, tuple[str, ...]], SharedHunk] = {}
    for impact in sorted(impacts, key=lambda item: item.model):
        for change in impact.changes:
            for path, header, lines in _hunks(impact.model, change):
                key = (path, lines)
                if key in found:
                    found[key].models.append(impact.model)
                else:
                    found[key] = SharedHunk(path, header, list(lines), [impact.model])
    return list(found.values())


def _spec_hunks(impacts: list[ModelImpact]) -> list[SharedHunk]:
    found: dict[tuple[str, ...], SharedHunk] = {}
    for impact in sorted(impacts, key=lambda item: item.model):
        lines = impact.spec_diff.splitlines()[2:]
        chunks: list[tuple[str, list[str]]] = []
        for line in lines:
            if line.startswith("@@"):
                chunks.append((line, []))
            elif chunks:
                chunks[-1][1].append(line.replace(impact.model, "<model>"))
        for header, body in chunks:
            key = tuple(body)
            if key in found:
                found[key].models.append(impact.model)
            else:
                found[key] = SharedHunk(f"{ANSWERS_FILE}", header, body, [impact.model])
    return list(found.values())


def _delta(pair: tuple[float, float] | None, integer: bool) -> str:
    if pair is None:
        return "-"
    before, after = pair
    return f"{after - before:+,}" if integer else f"{after - before:+.4f}"


def _models_list(models: list[str], total: int) -> str:
    return "all affected models" if len(models) == total and total > 1 else ", ".join(models)


# --- formats ------------------------------------------------------------------------------------


def format_text(report: FleetReport, with_diffs: bool = True) -> str:
    lines = [report.title, ""]
    lines.append(f"{'model':<22} {'files':>5} {'+lines':>7} {'-lines':>7} {'Δparams':>10} {'ΔMFLOPs':>9}  techniques involved")
    for impact in report.models:
        added, removed = impact.lines
        note = f"  ({impact.note})" if impact.note else ""
        lines.append(
            f"{impact.model:<22} {len(impact.changes):>5} {added:>7} {removed:>7} {_delta(impact.params, True):>10} "
            f"{_delta(impact.mflops, False):>9}  {', '.join(impact.techniques) or '-'}{note}"
        )
    lines.append(f"{len(report.models)} model(s) affected, {len(report.unaffected)} unaffected" + (f": {', '.join(report.unaffected)}" if report.unaffected else ""))
    for model, reason in report.skipped:
        lines.append(f"not applicable to {model}: {reason}")
    if report.capacity_note:
        lines.append(f"note: {report.capacity_note}")
    for change in report.techniques:
        lines.append(f"technique {change.name} ({change.status}, {change.versions}): {change.summary}")
        lines.append(f"    reference: {change.reference}")
        if change.adopted_by:
            lines.append(f"    adopted by: {', '.join(change.adopted_by)}")
        if change.dropped_by:
            lines.append(f"    dropped by: {', '.join(change.dropped_by)}")
        if change.status == "unchanged":  # changed sources get theirs in the qualification section
            lines.append(f"    qualification: {change.qualification or 'none recorded'}")
    if report.changed_sources:
        lines.append("changed sources: " + ", ".join(report.changed_sources))
    if report.runtime_diff:
        added, removed = report.runtime_lines
        lines.append(f"runtime ({RUNTIME_PACKAGE}, shared by every model): +{added} -{removed} lines, shown once below")
    text = "\n".join(lines) + "\n"
    if with_diffs:
        total = len(report.models)
        if report.runtime_diff:
            text += f"\n# runtime: every model\n{report.runtime_diff}"
        for hunk in _spec_hunks(report.models):
            text += f"\n# spec: {_models_list(hunk.models, total)}\n{hunk.header}\n" + "\n".join(hunk.lines) + "\n"
        for hunk in shared_hunks(report.models):
            text += f"\n# {hunk.path}: {_models_list(hunk.models, total)}\n{hunk.header}\n" + "\n".join(hunk.lines) + "\n"
    return text


def format_markdown(report: FleetReport) -> str:
    out = [f"## {report.title}", ""]
    total_added = sum(impact.lines[0] for impact in report.models)
    total_removed = sum(impact.lines[1] for impact in report.models)
    out.append(
        f"**{len(report.models)}** model(s) affected (+{total_added} / -{total_removed} lines), "
        f"{len(report.unaffected)} unaffected, {len({model for model, _ in report.skipped})} not applicable."
    )
    if report.techniques:
        out += ["", "### Techniques", ""]
        for change in report.techniques:
            out.append(f"- **`{change.name}`** {change.status}, {change.versions}: {change.summary}")
            out.append(f"  - reference: {change.reference}")
            if change.adopted_by:
                out.append(f"  - adopted by: {', '.join(f'`{name}`' for name in change.adopted_by)}")
            if change.dropped_by:
                out.append(f"  - dropped by: {', '.join(f'`{name}`' for name in change.dropped_by)}")
            if change.status == "unchanged":  # changed sources get theirs in the Qualification section
                out.append(f"  - qualification: {change.qualification or 'none recorded'}")
    out += ["", "### Models", ""]
    out.append("| model | files | + lines | - lines | Δparams | ΔMFLOPs | techniques involved |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for impact in report.models:
        added, removed = impact.lines
        note = f" ({impact.note})" if impact.note else ""
        involved = ", ".join(f"`{t}`" for t in impact.techniques) or "-"
        out.append(f"| `{impact.model}`{note} | {len(impact.changes)} | {added} | {removed} | {_delta(impact.params, True)} | {_delta(impact.mflops, False)} | {involved} |")
    if report.capacity_note:
        out += ["", f"Δparams and ΔMFLOPs: {report.capacity_note}."]
    if report.unaffected:
        out += ["", "Unaffected: " + ", ".join(f"`{name}`" for name in report.unaffected)]
    if report.skipped:
        out += ["", "Not applicable:"] + [f"- `{model}`: {reason}" for model, reason in report.skipped]
    if report.changed_sources:
        out += ["", "Changed sources: " + ", ".join(f"`{path}`" for path in report.changed_sources)]
    total = len(report.models)
    spec_hunks = _spec_hunks(report.models)
    if spec_hunks:
        out += ["", "### Spec changes"]
        for hunk in spec_hunks:
            out += ["", f"`{GENERATED_DIR}/<model>/{hunk.path}` in {_models_list(hunk.models, total)}:", "", "```diff", hunk.header, *hunk.lines, "```"]
    if report.runtime_diff:
        added, removed = report.runtime_lines
        out += ["", "### Runtime", "", f"`{RUNTIME_PACKAGE}`, shared by every model (+{added} / -{removed} lines):", "", "```diff", report.runtime_diff.rstrip("\n"), "```"]
    hunks = shared_hunks(report.models)
    if hunks:
        out += ["", "### Code changes", "", "Each hunk once, with the models that get it (`<model>` stands for the model's name)."]
        for hunk in hunks:
            out += ["", f"`{hunk.path}` in {_models_list(hunk.models, total)}:", "", "```diff", hunk.header, *hunk.lines, "```"]
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
                "spec_diff": impact.spec_diff,
                "params": {"before": impact.params[0], "after": impact.params[1]} if impact.params else None,
                "mflops": {"before": impact.mflops[0], "after": impact.mflops[1]} if impact.mflops else None,
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
        "techniques": [
            {
                "name": change.name,
                "status": change.status,
                "old_version": change.old_version,
                "new_version": change.new_version,
                "summary": change.summary,
                "reference": change.reference,
                "adopted_by": list(change.adopted_by),
                "dropped_by": list(change.dropped_by),
                "qualification": change.qualification or None,
            }
            for change in report.techniques
        ],
        "shared_hunks": [{"path": hunk.path, "models": hunk.models, "diff": "\n".join([hunk.header, *hunk.lines]) + "\n"} for hunk in shared_hunks(report.models)],
        "capacity_note": report.capacity_note,
        "changed_sources": report.changed_sources,
        "runtime_diff": report.runtime_diff,
    }
    return json.dumps(data, indent=2) + "\n"


FORMATTERS = {"text": format_text, "markdown": format_markdown, "json": format_json}
