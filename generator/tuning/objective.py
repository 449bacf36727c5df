"""A trial's value and constraints from per-model measurements (pure: no training, no Optuna study).

value = mean over the chosen models of the relative logloss change of the candidate (the trial's
defaults) against the model's current baseline, as ``smt qualify`` measures it (negative is better).
Constraints, Optuna's convention (feasible when every value <= 0), two per model in model order:
- regression: ``change - max_regression`` (the bound of ``qualification.yml``, on the mean change as
  ``smt qualify`` judges it: a standard error never excuses a regression);
- capacity: ``mflops_candidate - max_mflops_per_example`` (0 when the model has no budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..qualification.criterion import Criterion

CONSTRAINTS_ATTR = "constraints"
MODELS_ATTR = "models"
INFEASIBLE = 1e9  # a failed model: Optuna needs finite constraint values


@dataclass(frozen=True)
class ModelScore:
    """One model's measurement in one trial."""

    model: str
    change: float  # mean relative logloss change, candidate vs baseline (negative = better)
    se: float = 0.0
    mflops_baseline: float = 0.0
    mflops_candidate: float = 0.0
    max_mflops: float = 0.0
    error: str = ""


def constraints(scores: list[ModelScore], criterion: Criterion) -> list[float]:
    """[regression_1, capacity_1, regression_2, capacity_2, ...]; a failed model is infeasible (INFEASIBLE)."""
    out: list[float] = []
    for s in scores:
        if s.error or not math.isfinite(s.change):
            out += [INFEASIBLE, INFEASIBLE]
            continue
        out.append(s.change - criterion.max_regression)
        out.append(s.mflops_candidate - s.max_mflops if s.max_mflops else 0.0)
    return out


def value(scores: list[ModelScore]) -> float:
    """Mean relative logloss change over the models (inf when any failed, so it never wins)."""
    if not scores or any(s.error or not math.isfinite(s.change) for s in scores):
        return math.inf
    return sum(s.change for s in scores) / len(scores)


def violations(scores: list[dict[str, Any]] | list[ModelScore], criterion: Criterion) -> list[str]:
    """One line per violated constraint, naming the model (scores as ModelScore or their dicts)."""
    lines = []
    for raw in scores:
        s = raw if isinstance(raw, ModelScore) else ModelScore(**raw)
        if s.error:
            lines.append(f"{s.model}: trials failed: {s.error}")
            continue
        if s.change > criterion.max_regression:
            lines.append(f"{s.model}: logloss worse by {s.change:+.2%}, beyond the {criterion.max_regression:.2%} bound")
        if s.max_mflops and s.mflops_candidate > s.max_mflops:
            lines.append(f"{s.model}: {s.mflops_candidate:.4f} MFLOPs per example over the serving budget {s.max_mflops:g}")
    return lines


def constraint_names(scores: list[ModelScore]) -> list[str]:
    """Names of ``constraints(scores)`` in order: ``<model>.regression``, ``<model>.mflops``."""
    return [f"{s.model}.{kind}" for s in scores for kind in ("regression", "mflops")]


def record(trial: Any, scores: list[ModelScore], criterion: Criterion) -> list[float]:
    """Store the per-model results and constraints on the trial: user_attrs (read by reports,
    ``--apply`` and ``constraints_func``) and, on Optuna >= 5, ``Trial.set_constraint``."""
    values = constraints(scores, criterion)
    trial.set_user_attr(MODELS_ATTR, [s.__dict__ for s in scores])
    trial.set_user_attr(CONSTRAINTS_ATTR, values)
    if hasattr(trial, "set_constraint"):
        for name, value in zip(constraint_names(scores), values):
            trial.set_constraint(name, value)
    return values


def constraints_func(trial: Any) -> list[float]:
    """The sampler's ``constraints_func`` (Optuna < 5): read what ``record`` stored in user_attrs."""
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, [INFEASIBLE]))


def split_budget(total: int, models: list[str]) -> dict[str, int]:
    """``--per-model``: the same total trial budget split across models, ``total // n`` each and the
    remainder one each to the first models in name order; every model gets at least one trial."""
    if not models:
        return {}
    ordered = sorted(models)
    base, extra = divmod(max(total, len(ordered)), len(ordered))
    return {name: base + (1 if index < extra else 0) for index, name in enumerate(ordered)}
