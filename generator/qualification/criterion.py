"""The qualification criterion (``qualification.yml``) and the verdict it gives on measured numbers.

Per model, the relative logloss change of objective o at seed s is
``(candidate_logloss - baseline_logloss) / baseline_logloss`` on the criterion's split; the model's
change at seed s is the objective-weight-weighted mean over its objectives, and its change is the
mean over the paired seeds. Negative is better; gain = -change. Its uncertainty is a paired
bootstrap interval over the split's examples and the seeds (``bootstrap``), at ``confidence``, so
one seed has a real interval too; the interval is reported, never used to excuse a regression.

A change qualifies when all hold:
- mean over models of the gain >= ``min_mean_gain`` (g) (not applied by the verification gate,
  which stops harm; promotion asks for gain);
- no model's mean change is worse than ``max_regression`` (r), whatever its interval;
- every objective's mean calibration is within ``calibration`` bounds, or no further from 1 than
  the baseline's (a model already miscalibrated is not blamed on the change);
- at no seed does an objective's candidate NE reach ``max_ne`` (1.0: no better than predicting the
  base rate) where the baseline's stayed below it; a diverged seed fails the model however noisy
  the other seeds are;
- the candidate's MFLOPs per example and parameters are within the model's serving budget;
- every trial trained (a crash or a NaN is a failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ..engine import SmtError
from ..engine.store import load_yaml

if TYPE_CHECKING:
    from .bootstrap import Interval

CRITERION_FILE = "qualification.yml"


@dataclass(frozen=True)
class Criterion:
    """Thresholds of ``qualification.yml`` and the default budget of a qualification."""

    min_mean_gain: float = 0.002
    max_regression: float = 0.005
    confidence: float = 0.95
    calibration: tuple[float, float] = (0.8, 1.25)
    max_ne: float = 1.0
    split: str = "test"
    capacity_neutral: bool = False
    seeds: int = 2
    steps: int = 300
    on: str = "representatives"
    verify_seeds: int = 1
    verify_steps: int = 200


def load_criterion(root: Path) -> Criterion:
    """Read ``<root>/qualification.yml``; raise SmtError naming the field on a bad value."""
    path = root / CRITERION_FILE
    if not path.is_file():
        raise SmtError(f"{CRITERION_FILE}: not found at the repository root; restore it (it holds the qualification criterion)")
    data = load_yaml(path, "the qualification criterion") or {}
    budget = dict(data.get("budget") or {})
    if "models" in budget:
        budget["on"] = str(budget.pop("models"))
    fields = {str(key): value for key, value in {**(data.get("criterion") or {}), **budget}.items()}
    verify = data.get("verify") or {}
    known = set(Criterion.__dataclass_fields__)
    for key in fields:
        if key == "noise_sigmas":
            raise SmtError(
                f"{CRITERION_FILE}: noise_sigmas is no longer used (a standard error excused any regression); a model fails"
                f" when its mean change is beyond max_regression, and `confidence` sets its bootstrap interval's level: delete it"
            )
        if key not in known:
            raise SmtError(f"{CRITERION_FILE}: unknown field {key!r}; known: {', '.join(sorted(known))}")
    if "verify" in data:
        fields["verify_seeds"], fields["verify_steps"] = verify.get("seeds", 1), verify.get("steps", 200)
    try:
        if "calibration" in fields:
            low, high = fields["calibration"]
            fields["calibration"] = (float(low), float(high))
        criterion = Criterion(**fields)
    except (TypeError, ValueError):
        raise SmtError(f"{CRITERION_FILE}: calibration must be [low, high]") from None
    for name in ("min_mean_gain", "max_regression", "confidence"):
        if not isinstance(getattr(criterion, name), (int, float)):
            raise SmtError(f"{CRITERION_FILE}: {name} must be a number")
    if not 0.5 <= criterion.confidence < 1:
        raise SmtError(f"{CRITERION_FILE}: confidence must be between 0.5 and 1 (e.g. 0.95), not {criterion.confidence!r}")
    if criterion.split not in ("valid", "test"):
        raise SmtError(f"{CRITERION_FILE}: split must be valid or test, not {criterion.split!r}")
    return criterion


@dataclass(frozen=True)
class Stat:
    """Mean and standard error of a quantity over paired seeds."""

    mean: float
    se: float
    n: int
    max: float = math.nan

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        mean = sum(values) / n
        if n == 1:
            return cls(mean, 0.0, 1, mean)
        variance = sum((v - mean) ** 2 for v in values) / (n - 1)
        return cls(mean, math.sqrt(variance / n), n, max(values))


@dataclass(frozen=True)
class ObjectiveResult:
    """One objective of one model: paired deltas (candidate - baseline) over seeds."""

    name: str
    weight: float
    rel_logloss: Stat
    d_ne: Stat
    d_auc: Stat
    calibration_baseline: Stat
    calibration_candidate: Stat
    ne_baseline: Stat
    ne_candidate: Stat
    interval: Interval | None = None  # of rel_logloss's mean (bootstrap); None without predictions


@dataclass
class ModelResult:
    """One model's measured change: per objective, the weighted relative logloss change, capacity."""

    model: str
    objectives: list[ObjectiveResult] = field(default_factory=list)
    rel_logloss: Stat = Stat(math.nan, math.nan, 0)
    params_baseline: int = 0
    params_candidate: int = 0
    mflops_baseline: float = 0.0
    mflops_candidate: float = 0.0
    max_params: int = 0
    max_mflops: float = 0.0
    error: str = ""
    note: str = ""
    interval: Interval | None = None  # of rel_logloss's mean (bootstrap); None without predictions


@dataclass
class Verdict:
    """Pass or fail, with one reason per violated rule and per-model verdicts."""

    passed: bool
    reasons: list[str]
    mean_gain: float
    per_model: dict[str, list[str]]


def paired_result(
    model: str,
    weights: dict[str, float],
    baseline: list[dict[str, Any]],
    candidate: list[dict[str, Any]],
    split: str,
    predictions: tuple[list[Path], list[Path]] | None = None,
    confidence: float = 0.95,
) -> ModelResult:
    """Per-objective paired deltas from the metrics.json of baseline and candidate runs (same seeds,
    same order); with their predictions.npz (baseline paths, candidate paths), bootstrap intervals."""
    result = ModelResult(model)
    per_seed_model: list[float] = [0.0] * len(baseline)
    total = sum(weights.values()) or 1.0
    intervals: dict[str, Interval] = {}
    if predictions is not None:
        from .bootstrap import load_losses, paired_bootstrap  # noqa: PLC0415 - numpy: only for measured trials

        sides = [[load_losses(path, split) for path in paths] for paths in predictions]
        result.interval, intervals = paired_bootstrap(sides[0], sides[1], weights, confidence)
    for name, weight in weights.items():
        rel, dne, dauc, cb, cc, nb, nc = [], [], [], [], [], [], []
        for index, (base, cand) in enumerate(zip(baseline, candidate)):
            b, c = base["metrics"][split][name], cand["metrics"][split][name]
            if not all(math.isfinite(float(v)) for v in (c["logloss"], c["ne"], c["auc"], c["calibration"])):
                result.error = f"objective {name}: candidate metrics are not finite at seed {cand.get('seed')}"
            change = (c["logloss"] - b["logloss"]) / b["logloss"]
            rel.append(change)
            per_seed_model[index] += weight / total * change
            dne.append(c["ne"] - b["ne"])
            dauc.append(c["auc"] - b["auc"])
            cb.append(b["calibration"])
            cc.append(c["calibration"])
            nb.append(b["ne"])
            nc.append(c["ne"])
        result.objectives.append(ObjectiveResult(name, weight, *map(Stat.of, (rel, dne, dauc, cb, cc, nb, nc)), intervals.get(name)))
    result.rel_logloss = Stat.of(per_seed_model)
    return result


def interval_text(interval: Interval | None, scale: float = 100.0, unit: str = "%") -> str:
    """``[+0.12%, +0.80%]``, or "no interval" when there is none."""
    if interval is None:
        return "no interval"
    return f"[{interval.low * scale:+.2f}{unit}, {interval.high * scale:+.2f}{unit}]"


def applies_mean_gain(criterion: Criterion) -> bool:
    """False for the verification gate's criterion (min_mean_gain = -inf: it stops harm only)."""
    return math.isfinite(criterion.min_mean_gain)


def evaluate(criterion: Criterion, results: list[ModelResult]) -> Verdict:
    """Apply the criterion to measured model results (see the module docstring)."""
    reasons: list[str] = []
    per_model: dict[str, list[str]] = {result.model: [] for result in results}
    measured = [result for result in results if not result.error]
    for result in results:
        if result.error:
            per_model[result.model].append(f"trials failed: {result.error}")
    for result in measured:
        change = result.rel_logloss
        if not change.mean <= criterion.max_regression:  # a NaN mean fails too
            level = f"{result.interval.level:.0%} interval " if result.interval else ""
            per_model[result.model].append(
                f"logloss worse by {change.mean:+.2%} ({level}{interval_text(result.interval)}), beyond the {criterion.max_regression:.2%} bound"
            )
        low, high = criterion.calibration
        for objective in result.objectives:
            if objective.ne_candidate.max >= criterion.max_ne > objective.ne_baseline.max:
                per_model[result.model].append(
                    f"{objective.name} NE reaches {objective.ne_candidate.max:.3f} at a seed (baseline at most {objective.ne_baseline.max:.3f}):"
                    f" no better than predicting the base rate"
                )
            cand, base = objective.calibration_candidate.mean, objective.calibration_baseline.mean
            if not low <= cand <= high and abs(math.log(max(cand, 1e-9))) > abs(math.log(max(base, 1e-9))):
                per_model[result.model].append(f"{objective.name} calibration {cand:.3f} outside [{low:g}, {high:g}] (baseline {base:.3f})")
        if result.max_mflops and result.mflops_candidate > result.max_mflops:
            per_model[result.model].append(f"{result.mflops_candidate:.4f} MFLOPs per example over the serving budget {result.max_mflops:g}")
        if result.max_params and result.params_candidate > result.max_params:
            per_model[result.model].append(f"{result.params_candidate:,} parameters over the serving budget {result.max_params:,}")
    gains = [-result.rel_logloss.mean for result in measured]
    mean_gain = sum(gains) / len(gains) if gains else math.nan
    if not measured:
        reasons.append("no model was measured")
    elif applies_mean_gain(criterion) and not mean_gain >= criterion.min_mean_gain:
        reasons.append(f"mean relative logloss gain {mean_gain:+.3%} is below the required {criterion.min_mean_gain:.3%}")
    for model, problems in per_model.items():
        reasons.extend(f"{model}: {problem}" for problem in problems)
    return Verdict(not reasons, reasons, mean_gain, per_model)
