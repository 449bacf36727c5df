"""``smt tune --apply``: a study's winner becomes the template's defaults, through ``smt promote``'s path.

Template-level hyperparameter defaults live in ONE place: the ``hp.get("name", DEFAULT)`` expressions of
``template_repo/template/{{ model_name }}/config.py.jinja``. Applying rewrites those defaults (a
model whose spec overrides a hyperparameter keeps its own value), sets tuned technique params as the
template's default technique entry and adopts them in every eligible spec (as ``smt promote`` does),
bumps ``template_repo/VERSION``, regenerates the fleet and adds a ``CHANGELOG.md`` entry citing the
study. Everything is rendered before anything is written; the template is restored on failure.

``--per-model --apply`` instead writes each model's own winner into its spec as ``hyperparameters:``
overrides and regenerates that model.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import adoption
from ..engine import SmtError, load_sources
from ..engine.paths import TEMPLATE_DIR
from ..fleet import Fleet
from ..changelog import add_release
from ..promotion import QUESTIONS, VERSION_FILE, _with_default, next_version, write_release
from ..render import render_model
from ..sync import write_tree
from . import objective
from .report import best_trial, feasible
from .space import Setting, TuneSpace, with_defaults

CONFIG_TEMPLATE = Path(TEMPLATE_DIR) / "template" / "{{ model_name }}" / "config.py.jinja"
_DEFAULT = re.compile(r'hp\.get\("(?P<name>\w+)", (?P<value>[^()]*?)\)')
_EMBEDDING = re.compile(r'(hp\.get\("embedding_dim", sparse_features \| map\(attribute="embedding_dim"\) \| )(max|min)\)')


def template_defaults(root: Path) -> dict[str, Any]:
    """The template's hyperparameter defaults, read from config.py.jinja (the one place they live)."""
    text = (root / CONFIG_TEMPLATE).read_text()
    out: dict[str, Any] = {}
    for match in _DEFAULT.finditer(text):
        try:
            out[match["name"]] = ast.literal_eval(match["value"])
        except (ValueError, SyntaxError):
            continue  # an expression, not a literal (e.g. label_rates)
    policy = _EMBEDDING.search(text)
    out["embedding_dim_policy"] = policy.group(2) if policy else "max"
    return out


def with_template_defaults(text: str, values: dict[str, Any]) -> str:
    """config.py.jinja with the given defaults (hyperparameter name -> value; ``embedding_dim_policy``)."""
    for name, value in values.items():
        if name == "embedding_dim_policy":
            text, n = _EMBEDDING.subn(lambda m: m.group(1) + str(value) + ")", text)
        else:
            literal = repr(list(value)) if isinstance(value, (list, tuple)) else repr(value)
            text, n = re.subn(rf'hp\.get\("{name}", [^()]*?\)', lambda m: f'hp.get("{name}", {literal})', text)
        if n != 1:
            raise SmtError(f"{CONFIG_TEMPLATE}: no single default for {name!r} to rewrite; restore its hp.get(...) expression")
    return text


def chosen_trial(study: Any, number: int | None, criterion: Any) -> Any:
    """The trial to apply: the best completed one, or ``--trial N``; refuse one that violates a constraint."""
    import optuna

    if number is None:
        trial = best_trial(study)
        if trial is None:
            raise SmtError(f"study {study.study_name}: no completed trial to apply; run `smt tune` first")
    else:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found or found[0].state != optuna.trial.TrialState.COMPLETE:
            raise SmtError(f"--trial {number}: no completed trial with that number in study {study.study_name}")
        trial = found[0]
    if not feasible(trial):
        problems = objective.violations(trial.user_attrs.get(objective.MODELS_ATTR, []), criterion) or ["a model's trials failed"]
        raise SmtError(f"study {study.study_name}: trial #{trial.number} violates a constraint ({problems[0]}); not applied (choose a feasible one with --trial N)")
    if not trial.value < 0:
        raise SmtError(f"study {study.study_name}: trial #{trial.number} does not beat the current defaults (mean change {trial.value:+.3%}); not applied")
    return trial


def per_model_winner(study: Any) -> Any | None:
    """``--per-model --apply``: the best feasible completed trial that beats the model's current
    config (value < 0), or None (the model keeps its spec: tuning found nothing better)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None and t.value < 0 and feasible(t)]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


@dataclass
class Applied:
    old_version: str
    new_version: str
    defaults: dict[str, Any]
    technique: str | None = None
    adopted: list[str] = field(default_factory=list)
    regenerated: list[str] = field(default_factory=list)


def apply_template(fleet: Fleet, space: TuneSpace, trial: Any, study: str, report: str, evidence_entry: str | None = None) -> Applied:
    """Write the trial's setting as the template's defaults (see the module docstring); a tuned
    technique goes in on the evidence ``evidence_entry`` says (the caller passed the gate)."""
    root = fleet.root
    setting = Setting.from_params(space, trial.params)
    current = template_defaults(root)
    defaults: dict[str, Any] = {}
    for name, value in setting.hyperparameters.items():
        if name == "width_scale":
            for layer in ("dense_arch_layers", "over_arch_layers", "tower_layers"):
                defaults[layer] = [max(1, int(round(w * float(value)))) for w in current[layer]]
        else:
            defaults[name] = value
    sources = load_sources(root)
    new_version = next_version(sources.version)
    config_path, questions_path, version_path = root / CONFIG_TEMPLATE, root / QUESTIONS, root / VERSION_FILE
    edits = {config_path: with_template_defaults(config_path.read_text(), defaults), version_path: new_version + "\n"}
    specs: dict[str, dict[str, Any]] = {}
    done = Applied(sources.version, new_version, defaults)
    if setting.technique and setting.technique_params:
        edits[questions_path] = _with_default(questions_path.read_text(), {"name": setting.technique, "params": setting.technique_params})
        outcome = adoption.plan_adoption(fleet, fleet.models(), setting.technique, setting.technique_params, drop=False)
        specs = {entry.name: answers for entry, answers, _ in outcome.changed}
        done.technique = setting.technique
    done.adopted, done.regenerated = write_release(fleet, edits, specs)
    _changelog(root, done, setting, trial, study, report, evidence_entry)
    return done


def apply_per_model(fleet: Fleet, space: TuneSpace, model: str, trial: Any) -> dict[str, Any]:
    """Write one model's winner into its spec as ``hyperparameters:`` overrides; regenerate it."""
    entry = fleet.model(model)
    setting = Setting.from_params(space, trial.params)
    answers = with_defaults(entry.answers, Setting(setting.hyperparameters), template_defaults(fleet.root))
    answers = {**entry.answers, "hyperparameters": {**(answers.get("hyperparameters") or {})}}
    if setting.technique and setting.technique_params:
        outcome = adoption.plan_adoption(fleet, [fleet.model(model)], setting.technique, setting.technique_params, drop=False)
        for _, adopted, _ in outcome.changed:
            answers = {**answers, "techniques": adopted["techniques"]}
    tree = render_model(fleet.root, answers, model, entry.directory)
    write_tree(entry.directory, tree, adoption.spec_text(model, answers))
    return answers["hyperparameters"]


def _changelog(root: Path, done: Applied, setting: Setting, trial: Any, study: str, report: str, evidence_entry: str | None) -> None:
    defaults = ", ".join(f"{k}={v}" for k, v in done.defaults.items())
    models = trial.user_attrs.get(objective.MODELS_ATTR, [])
    add_release(root, done.new_version, [
        f"Tuned template defaults: {defaults or 'none'}"
        + (f"; `{done.technique}` params {setting.technique_params} adopted by {', '.join(f'`{m}`' for m in done.adopted) or 'no model'}" if done.technique else "")
        + ".",
        f"Study `{study}` trial #{trial.number} (template {done.old_version}, on {', '.join(m['model'] for m in models)}):"
        f" mean relative logloss change {trial.value:+.3%}, every constraint met; report [{report}]({report}/report.md).",
        *([evidence_entry] if evidence_entry else []),
    ])
