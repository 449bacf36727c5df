"""The final evaluation: every final model of a fleet trained on new seeds, read on the test split,
and the arithmetic of the comparison (pure functions, tested without training).

A fleet's model at seed s scores the objective-weighted test logloss of ``python -m MODEL train
--seed s`` (a seed draws a new world of the model's structure and new examples: the evaluation
seeds are ones neither arm developed on). Two fleets compare model by model, seed by seed:
change_s = (logloss_b,s - logloss_a,s) / logloss_a,s, the model's change is the mean over seeds
(standard error: sample std / sqrt(seeds)), negative is better; the fleet's gain is minus the mean
over models, with the standard error over models.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from . import training

GOAL_GAIN, GOAL_WORST, GOAL_MFLOPS = 0.0063, 0.002, 0.02  # the paper: +0.63 %, no model worse than 0.2 %, MFLOPs within 2 %


def evaluate_fleet(root: Path, specs: dict[str, dict[str, Any]], folder: Path, seeds: list[int], steps: int, pool: training.Pool) -> dict[str, dict[str, Any]]:
    """Per model: test logloss at each seed (nan where a trial failed), MFLOPs and parameters."""
    rendered = {name: training.render(root, name, spec, folder / name) for name, spec in specs.items()}
    built = training.capacity([r.folder for r in rendered.values()], "measuring the final models", next(iter(rendered.values())).runtime)
    results = pool.run([training.trial(r, seed, steps, "final") for r in rendered.values() for seed in seeds])
    out = {}
    for name, r in rendered.items():
        weights = training.objective_weights(specs[name])
        measured = built[str(r.folder)] or {"mflops": math.nan, "parameters": 0}  # a model that does not build: its trials fail too
        out[name] = {
            "logloss": [training.weighted_logloss(results[r.tree_key(seed, steps)], weights, "test") for seed in seeds],
            "mflops": float(measured["mflops"]),
            "parameters": int(measured["parameters"]),
            "techniques": [use["name"] for use in specs[name].get("techniques") or []],
            "over_budget": measured["mflops"] > float(specs[name]["serving"]["max_mflops_per_example"])
            or measured["parameters"] > int(specs[name]["serving"]["max_params"]),
        }
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for one value) of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    if len(finite) == 1:
        return finite[0], 0.0
    return statistics.fmean(finite), statistics.stdev(finite) / math.sqrt(len(finite))


def compare(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Fleet b against fleet a: per-model paired changes and the fleet's summary."""
    rows = []
    for model in sorted(a):
        pairs = [(x, y) for x, y in zip(a[model]["logloss"], b[model]["logloss"]) if math.isfinite(x) and math.isfinite(y) and x > 0]
        change, se = mean_se([(y - x) / x for x, y in pairs])
        mflops_a, mflops_b = a[model]["mflops"], b[model]["mflops"]
        rows.append({
            "model": model,
            "logloss_a": mean_se([x for x, _ in pairs])[0], "logloss_b": mean_se([y for _, y in pairs])[0],
            "change": change, "se": se, "seeds": len(pairs),
            "mflops_a": mflops_a, "mflops_b": mflops_b, "mflops_change": (mflops_b - mflops_a) / mflops_a if mflops_a else math.nan,
            "techniques_a": a[model]["techniques"], "techniques_b": b[model]["techniques"],
            "over_budget_a": bool(a[model].get("over_budget")), "over_budget_b": bool(b[model].get("over_budget")),
        })
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean gain (with its standard error over models), share improved, worst regression, MFLOPs."""
    ok = [r for r in rows if math.isfinite(r["change"])]
    change, se = mean_se([r["change"] for r in ok])
    sized = [r for r in ok if math.isfinite(r["mflops_change"])]
    total_a = sum(r["mflops_a"] for r in sized)
    summary = {
        "models": len(rows),
        "measured": len(ok),
        "mean_gain": -change,
        "mean_gain_se": se,
        "share_improved": sum(r["change"] < 0 for r in ok) / len(ok) if ok else math.nan,
        "worst_regression": max((r["change"] for r in ok), default=math.nan),
        "worst_model": max(ok, key=lambda r: r["change"])["model"] if ok else None,
        "best_gain": -min((r["change"] for r in ok), default=math.nan),
        "mean_mflops_change": mean_se([r["mflops_change"] for r in sized])[0],
        "total_mflops_change": (sum(r["mflops_b"] for r in sized) - total_a) / total_a if total_a else math.nan,
        "over_budget_a": sum(r.get("over_budget_a", False) for r in rows),
        "over_budget_b": sum(r.get("over_budget_b", False) for r in rows),
    }
    summary["goal"] = {
        "mean_gain": summary["mean_gain"] >= GOAL_GAIN,
        "worst_regression": summary["worst_regression"] <= GOAL_WORST,
        "mflops": abs(summary["mean_mflops_change"]) <= GOAL_MFLOPS,
    }
    summary["goal_met"] = bool(ok) and all(summary["goal"].values())
    return summary


def by_tag(rows: list[dict[str, Any]], tags: dict[str, tuple[str, ...]]) -> dict[str, dict[str, Any]]:
    """Mean change, its standard error and the share improved per world tag (where b wins, where it loses)."""
    out = {}
    for tag in sorted({t for ts in tags.values() for t in ts}):
        changes = [r["change"] for r in rows if tag in tags.get(r["model"], ()) and math.isfinite(r["change"])]
        if changes:
            mean, se = mean_se(changes)
            out[tag] = {"models": len(changes), "mean_gain": -mean, "se": se, "share_improved": sum(c < 0 for c in changes) / len(changes)}
    return out


def pairs_adopted(start: dict[str, dict[str, Any]], end: dict[str, dict[str, Any]]) -> int:
    """Technique-model pairs in the ``end`` specs that the ``start`` specs did not have."""
    def uses(spec: dict[str, Any]) -> set[str]:
        return {use["name"] for use in spec.get("techniques") or []}

    return sum(len(uses(end[m]) - uses(start[m])) for m in end)
