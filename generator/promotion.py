"""smt promote: a qualified technique becomes a template default and the next template version.

Promotion passes the qualification gate (``qualification.gate``: a passing record of exactly this
change at the current technique and template versions, or ``--verify``, or ``--force --reason``).
It then:

1. adds the technique (with the qualified params) to the template's default ``techniques`` answer
   (``template_repo/questions.yml``), so every model created from now on gets it unless its spec
   lists techniques without it;
2. adopts it into the spec of every eligible model of the fleet, except the models that opt out
   (``--except a,b``; a model can also ``smt drop`` it later, and nothing adds it back);
3. bumps ``template_repo/VERSION`` (minor version), regenerates the fleet, and adds a
   ``CHANGELOG.md`` entry citing the evidence (the report, the verification, or the forced reason);
4. (the CLI) commits those files and tags the commit ``v<VERSION>`` (``generator.release``).

Everything is rendered before anything is written, as in ``smt adopt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import adoption
from .changelog import CHANGELOG, add_release
from .engine import SmtError, load_sources
from .engine.paths import TEMPLATE_DIR
from .fleet import GENERATED_DIR, Fleet
from .qualification.gate import Evidence, evidence
from .qualification.variants import parse_change
from .render import render_model
from .sync import compare, read_tree, write_tree

QUESTIONS = Path(TEMPLATE_DIR) / "questions.yml"
VERSION_FILE = Path(TEMPLATE_DIR) / "VERSION"
_DEFAULT_LINE = re.compile(r"^(techniques:\n(?:  .*\n)*?  default: )(.*)$", re.MULTILINE)


@dataclass
class Promotion:
    """What a promotion did."""

    technique: str
    params: dict[str, Any]
    old_version: str
    new_version: str
    adopted: list[str] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    regenerated: list[str] = field(default_factory=list)
    report: str = ""


def next_version(version: str) -> str:
    """0.2.0 -> 0.3.0 (a technique default is a minor release)."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    if not match:
        raise SmtError(f"{VERSION_FILE}: {version!r} is not MAJOR.MINOR.PATCH; fix it before promoting")
    major, minor, _ = map(int, match.groups())
    return f"{major}.{minor + 1}.0"


def _with_default(questions: str, use: dict[str, Any]) -> str:
    match = _DEFAULT_LINE.search(questions)
    if not match:
        raise SmtError(f"{QUESTIONS}: no `default:` under the techniques question; restore it")
    current = yaml.safe_load(yaml.safe_load(match.group(2)) or "[]") or []
    current = [item for item in current if isinstance(item, dict) and item.get("name") != use["name"]] + [use]
    flow = yaml.safe_dump(current, default_flow_style=True, width=10_000).strip()
    return questions[: match.start(2)] + '"' + flow.replace('"', '\\"') + '"' + questions[match.end(2) :]


@dataclass
class PromotionPlan:
    """What promoting a change would do, computed without writing (the gate and --verify read it)."""

    technique: str
    params: dict[str, Any]
    evidence: Evidence
    outcome: adoption.Outcome
    opt_out: list[str]

    @property
    def eligible(self) -> list[str]:
        """The models that would adopt the technique."""
        return [entry.name for entry, _, _ in self.outcome.changed]


def plan_promotion(fleet: Fleet, change: str, opt_out: list[str]) -> PromotionPlan:
    """Validate ``change`` (``T`` or ``T:k=v,...``, as qualified) and the opt-outs; render the
    adoption in memory. Raises SmtError; writes nothing."""
    root = fleet.root
    sources = load_sources(root)
    parsed = parse_change(change, None)
    technique = parsed.technique or ""
    if technique not in sources.library:
        raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
    unknown = [name for name in opt_out if name not in fleet.names()]
    if unknown:
        raise SmtError(f"--except {unknown[0]}: no such model; name models of generated/ (see `smt status`)")
    version = str(sources.library[technique].version)
    entries = [entry for entry in fleet.models() if entry.name not in opt_out]
    outcome = adoption.plan_adoption(fleet, entries, technique, parsed.params, drop=False)
    return PromotionPlan(technique, dict(parsed.params), evidence(root, technique, parsed.params, version, sources.version), outcome, sorted(opt_out))


def release_paths(*extra: Path) -> list[str]:
    """The files a template release writes (what its commit holds)."""
    return [str(QUESTIONS), str(VERSION_FILE), CHANGELOG, GENERATED_DIR, *map(str, extra)]


def write_release(fleet: Fleet, template_edits: dict[Path, str], specs: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Write a new template version: ``template_edits`` (path -> new text), then every model
    rendered at it, with the new ``specs`` where given. Every model is rendered before anything
    under generated/ is written; the template files are restored when a render fails. Returns
    (models whose spec changed, models regenerated)."""
    root = fleet.root
    old = {path: path.read_text() for path in template_edits}
    try:
        for path, text in template_edits.items():
            path.write_text(text)
        trees = {}
        for entry in fleet.models():
            answers = specs.get(entry.name, entry.answers)
            trees[entry.name] = (entry, answers, render_model(root, answers, entry.name, entry.directory))
    except BaseException:
        for path, text in old.items():
            path.write_text(text)
        raise
    adopted, regenerated = [], []
    for name, (entry, answers, tree) in trees.items():
        if name in specs:
            write_tree(entry.directory, tree, adoption.spec_text(name, answers))
            adopted.append(name)
        elif compare(read_tree(entry.directory), tree):
            write_tree(entry.directory, tree)
        regenerated.append(name)
    return adopted, regenerated


def promote(fleet: Fleet, plan: PromotionPlan, evidence_entry: str) -> Promotion:
    """Promote a planned change (the caller has passed the gate): the template default, the
    adoptions, VERSION, the regenerated fleet and a CHANGELOG entry ending with ``evidence_entry``."""
    root = fleet.root
    sources = load_sources(root)
    use: dict[str, Any] = {"name": plan.technique, "params": plan.params} if plan.params else {"name": plan.technique}
    new_version = next_version(sources.version)
    record = plan.evidence.record or {}
    promotion = Promotion(plan.technique, plan.params, sources.version, new_version, opted_out=plan.opt_out, report=str(record.get("report") or ""))
    promotion.not_applicable = plan.outcome.not_applicable
    questions_path, version_path = root / QUESTIONS, root / VERSION_FILE
    specs = {entry.name: answers for entry, answers, _ in plan.outcome.changed}
    edits = {version_path: new_version + "\n", questions_path: _with_default(questions_path.read_text(), use)}
    promotion.adopted, promotion.regenerated = write_release(fleet, edits, specs)
    params = ", ".join(f"{k}={v}" for k, v in promotion.params.items())
    add_release(root, new_version, [
        f"Promoted `{promotion.technique}`{f' ({params})' if params else ''} to a template default: adopted by"
        f" {', '.join(f'`{m}`' for m in promotion.adopted) or 'no model'}"
        + (f"; opted out: {', '.join(f'`{m}`' for m in promotion.opted_out)}" if promotion.opted_out else "")
        + (f"; not applicable: {', '.join(f'`{m}`' for m, _ in promotion.not_applicable)}" if promotion.not_applicable else "")
        + ".",
        evidence_entry,
    ])
    return promotion
