"""smt promote: a qualified technique becomes a template default and the next template version.

Promotion needs a passing qualification record for the technique's current version at the current
template version (``qualification/records/<technique>.json``). It then:

1. adds the technique (with the qualified params) to the template's default ``techniques`` answer
   (``template_repo/questions.yml``), so every model created from now on gets it unless its spec
   lists techniques without it;
2. adopts it into the spec of every eligible model of the fleet, except the models that opt out
   (``--except a,b``; a model can also ``smt drop`` it later, and nothing adds it back);
3. bumps ``template_repo/VERSION`` (minor version), regenerates the fleet, and adds a
   ``CHANGELOG.md`` entry citing the qualification report.

Everything is rendered before anything is written, as in ``smt adopt``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import adoption
from .engine import SmtError, load_sources
from .engine.paths import TEMPLATE_DIR
from .fleet import Fleet
from .qualification.report import latest_record
from .render import render_model
from .sync import compare, read_tree, write_tree

QUESTIONS = Path(TEMPLATE_DIR) / "questions.yml"
VERSION_FILE = Path(TEMPLATE_DIR) / "VERSION"
CHANGELOG = "CHANGELOG.md"
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


def promote(fleet: Fleet, change: str, opt_out: list[str]) -> Promotion:
    """Promote ``change`` (``T`` or ``T:k=v,...``, as qualified); raise SmtError (nothing written)
    without a passing record of exactly that change."""
    root = fleet.root
    sources = load_sources(root)
    technique = change.partition(":")[0]
    if technique not in sources.library:
        raise SmtError(f"{technique}: unknown technique (see `smt techniques`)")
    version = str(sources.library[technique].version)
    record = latest_record(root, technique, version, sources.version, change)
    if record is None:
        raise SmtError(
            f"{change}: no qualification record for {technique} {version} at template {sources.version};"
            f" run `smt qualify {change}` first"
        )
    if not record["passed"]:
        raise SmtError(f"{technique} {version}: its qualification at template {sources.version} failed ({'; '.join(record['reasons'][:2])}); not promoted")
    unknown = [name for name in opt_out if name not in fleet.names()]
    if unknown:
        raise SmtError(f"--except {unknown[0]}: no such model; name models of generated/ (see `smt status`)")
    params = dict(record.get("params") or {})
    use: dict[str, Any] = {"name": technique, "params": params} if params else {"name": technique}
    entries = [entry for entry in fleet.models() if entry.name not in opt_out]
    outcome = adoption.plan_adoption(fleet, entries, technique, params, drop=False)
    new_version = next_version(sources.version)
    promotion = Promotion(technique, params, sources.version, new_version, opted_out=sorted(opt_out), report=record["report"])
    promotion.not_applicable = outcome.not_applicable
    questions_path, version_path = root / QUESTIONS, root / VERSION_FILE
    old_questions, old_version_text = questions_path.read_text(), version_path.read_text()
    new_questions = _with_default(old_questions, use)
    specs = {entry.name: answers for entry, answers, _ in outcome.changed}
    # Render every model at the new version before writing anything; restore the template on failure.
    try:
        version_path.write_text(new_version + "\n")
        questions_path.write_text(new_questions)
        trees = {}
        for entry in fleet.models():
            answers = specs.get(entry.name, entry.answers)
            trees[entry.name] = (entry, answers, render_model(root, answers, entry.name, entry.directory))
    except BaseException:
        version_path.write_text(old_version_text)
        questions_path.write_text(old_questions)
        raise
    for name, (entry, answers, tree) in trees.items():
        if name in specs:
            write_tree(entry.directory, tree, adoption.spec_text(name, answers))
            promotion.adopted.append(name)
        elif compare(read_tree(entry.directory), tree):
            write_tree(entry.directory, tree)
        promotion.regenerated.append(name)
    _add_changelog(root, promotion, record)
    return promotion


def _add_changelog(root: Path, promotion: Promotion, record: dict[str, Any]) -> None:
    path = root / CHANGELOG
    old = path.read_text() if path.is_file() else "# Changelog\n\nTemplate releases (`template_repo/VERSION`), newest first.\n"
    cut = old.find("\n## ")
    head, rest = (old, "") if cut < 0 else (old[: cut + 1], old[cut + 1 :])
    params = ", ".join(f"{k}={v}" for k, v in promotion.params.items())
    entry = [
        f"## {promotion.new_version} ({time.strftime('%Y-%m-%d', time.gmtime())})",
        "",
        f"- Promoted `{promotion.technique}`{f' ({params})' if params else ''} to a template default: adopted by"
        f" {', '.join(f'`{m}`' for m in promotion.adopted) or 'no model'}"
        + (f"; opted out: {', '.join(f'`{m}`' for m in promotion.opted_out)}" if promotion.opted_out else "")
        + (f"; not applicable: {', '.join(f'`{m}`' for m, _ in promotion.not_applicable)}" if promotion.not_applicable else "")
        + ".",
        f"- Qualification (template {promotion.old_version}, {record['seeds']} seed(s), {record['steps']} steps, on"
        f" {', '.join(record['models'])}): PASS, mean relative logloss gain {record['mean_gain']:+.3%}; report"
        f" [{record['report']}]({record['report']}/report.md).",
    ]
    path.write_text(head.rstrip("\n") + "\n\n" + "\n".join(entry) + "\n" + ("\n" + rest if rest else ""))
