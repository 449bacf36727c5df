"""The search space of ``smt tune`` (``tune.yml``) and what one point of it does to a model's spec.

A point sets template-level defaults: a hyperparameter default is what a model gets unless its spec
overrides it (``hyperparameters:``), so a trial adds the point's values only for the keys a spec does
not set. ``width_scale`` scales the template's default MLP widths; ``embedding_dim_policy`` chooses
how the common embedding width derives from the features' widths (max or min). Technique params are
set on every chosen model the technique applies to, as ``smt promote`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ..engine import SmtError
from ..engine.store import load_yaml

# Template hyperparameter defaults a space may tune: name -> python type (config.py.jinja holds the defaults).
HYPERPARAMETERS = {
    "learning_rate": float,
    "embedding_learning_rate": float,
    "weight_decay": float,
    "dropout": float,
    "batch_size": int,
}
# Derived knobs: not fields of ModelConfig, but policies over the template's defaults.
POLICIES = ("width_scale", "embedding_dim_policy")
WIDTHS = ("dense_arch_layers", "over_arch_layers", "tower_layers")
EMBEDDING_POLICIES = ("max", "min")
KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Dimension:
    """One tuned knob: ``float``/``int`` in [low, high] (``log`` scale optional) or ``categorical``."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TuneSpace:
    """``tune.yml``: the dimensions, plus the budget of each trial (steps, seeds) and its models."""

    hyperparameters: tuple[Dimension, ...]
    technique: str | None = None
    technique_params: tuple[Dimension, ...] = ()
    steps: int = 150
    seeds: int = 1
    on: str = "representatives"
    path: str = "tune.yml"

    def dimensions(self) -> list[tuple[str, Dimension]]:
        """(optuna parameter name, dimension); technique params are named ``<technique>.<param>``."""
        out = [(d.name, d) for d in self.hyperparameters]
        out += [(f"{self.technique}.{d.name}", d) for d in self.technique_params]
        return out


@dataclass(frozen=True)
class Setting:
    """One point of the space: template hyperparameter defaults and technique params."""

    hyperparameters: dict[str, Any] = field(default_factory=dict)
    technique: str | None = None
    technique_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, space: TuneSpace, params: dict[str, Any]) -> "Setting":
        """From an Optuna trial's ``params`` (names as in ``TuneSpace.dimensions``)."""
        hyper = {d.name: params[d.name] for d in space.hyperparameters if d.name in params}
        prefix = f"{space.technique}."
        tech = {name.removeprefix(prefix): value for name, value in params.items() if space.technique and name.startswith(prefix)}
        return cls(hyper, space.technique if tech or space.technique else None, tech)


def _dimension(where: str, name: str, raw: Any) -> Dimension:
    if not isinstance(raw, dict):
        raise SmtError(f"{where}.{name}: give a mapping like {{type: float, low: 0.001, high: 0.01, log: true}}")
    kind = str(raw.get("type", "categorical" if "choices" in raw else "float"))
    if kind not in KINDS:
        raise SmtError(f"{where}.{name}.type: {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SmtError(f"{where}.{name}.choices: give a non-empty list")
        return Dimension(name, kind, choices=tuple(choices))
    try:
        low, high = float(raw["low"]), float(raw["high"])
    except (KeyError, TypeError, ValueError):
        raise SmtError(f"{where}.{name}: a {kind} needs numeric low and high") from None
    if not low <= high or (raw.get("log") and low <= 0):
        raise SmtError(f"{where}.{name}: need low <= high (and low > 0 with log: true)")
    return Dimension(name, kind, low, high, bool(raw.get("log", False)))


def parse_space(data: Any, path: str = "tune.yml") -> TuneSpace:
    """Validate a parsed ``tune.yml``; raise SmtError naming the file and field."""
    if not isinstance(data, dict):
        raise SmtError(f"{path}: must be a mapping with `hyperparameters:` (and optionally `technique:`, `budget:`)")
    known = {"hyperparameters", "technique", "budget"}
    for key in data:
        if key not in known:
            raise SmtError(f"{path}: unknown field {key!r}; known: {', '.join(sorted(known))}")
    dims = []
    for name, raw in (data.get("hyperparameters") or {}).items():
        if name not in HYPERPARAMETERS and name not in POLICIES:
            raise SmtError(f"{path}: hyperparameters.{name}: not a tunable template default; known: {', '.join([*HYPERPARAMETERS, *POLICIES])}")
        dim = _dimension(f"{path}: hyperparameters", name, raw)
        if name == "embedding_dim_policy" and (dim.kind != "categorical" or not set(dim.choices) <= set(EMBEDDING_POLICIES)):
            raise SmtError(f"{path}: hyperparameters.embedding_dim_policy: give choices among {', '.join(EMBEDDING_POLICIES)}")
        dims.append(dim)
    technique, tech_dims = None, []
    if data.get("technique"):
        raw = data["technique"]
        if not isinstance(raw, dict) or not raw.get("name"):
            raise SmtError(f"{path}: technique: give {{name: T, params: {{p: {{...}}}}}}")
        technique = str(raw["name"])
        tech_dims = [_dimension(f"{path}: technique.params", n, r) for n, r in (raw.get("params") or {}).items()]
    if not dims and not tech_dims:
        raise SmtError(f"{path}: nothing to tune; list hyperparameters or technique params")
    budget = data.get("budget") or {}
    try:
        steps, seeds = int(budget.get("steps", 150)), int(budget.get("seeds", 1))
    except (TypeError, ValueError):
        raise SmtError(f"{path}: budget.steps and budget.seeds must be integers") from None
    if steps < 1 or seeds < 1:
        raise SmtError(f"{path}: budget.steps and budget.seeds must be at least 1")
    return TuneSpace(tuple(dims), technique, tuple(tech_dims), steps, seeds, str(budget.get("models", "representatives")), path)


def load_space(path: Path) -> TuneSpace:
    if not path.is_file():
        raise SmtError(f"{path}: no such search space; write one (see the example tune.yml at the repository root)")
    data = load_yaml(path, "the search space")
    return parse_space(data, str(path))


def suggest(trial: Any, space: TuneSpace) -> Setting:
    """Ask an Optuna trial for one point of the space."""
    params: dict[str, Any] = {}
    for name, dim in space.dimensions():
        if dim.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.kind == "int":
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return Setting.from_params(space, params)


def scaled_widths(template: dict[str, Any], scale: float) -> dict[str, list[int]]:
    """The template's default MLP widths (``template``: apply.template_defaults) times ``scale``."""
    return {name: [max(1, int(round(w * float(scale)))) for w in template[name]] for name in WIDTHS}


def defaults_for(answers: dict[str, Any], setting: Setting, template: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameter values the setting's defaults give this spec (before the spec's own overrides)."""
    hyper: dict[str, Any] = {}
    for name, value in setting.hyperparameters.items():
        if name == "width_scale":
            hyper.update(scaled_widths(template, value))
        elif name == "embedding_dim_policy":
            dims = [int(f["embedding_dim"]) for f in answers.get("sparse_features") or [] if isinstance(f, dict)]
            if dims:
                hyper["embedding_dim"] = max(dims) if value == "max" else min(dims)
        else:
            hyper[name] = HYPERPARAMETERS[name](value)
    return hyper


def with_defaults(answers: dict[str, Any], setting: Setting, template: dict[str, Any]) -> dict[str, Any]:
    """The spec as the model would render under the setting's template defaults: the spec's own
    ``hyperparameters:`` overrides win over the tuned defaults."""
    own = dict(answers.get("hyperparameters") or {})
    merged = {**defaults_for(answers, setting, template), **own}
    return {**answers, "hyperparameters": merged} if merged else dict(answers)
