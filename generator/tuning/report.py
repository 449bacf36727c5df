"""What a study found: best trial, parameter importances, optimization history (PNG), Markdown report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..qualification.criterion import Criterion
from . import objective

REPORTS_DIR = Path("tuning") / "reports"


@dataclass
class Summary:
    study: str
    storage: str
    models: list[str]
    counts: dict[str, int]
    best: dict[str, Any] | None  # number, value, params, models, feasible
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""
    violations: list[str] = field(default_factory=list)


def best_trial(study: Any) -> Any | None:
    """The completed trial with the lowest value, feasible or not (``--apply`` refuses an infeasible one)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None and math.isfinite(t.value)]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def feasible(trial: Any) -> bool:
    return all(c <= 0 for c in objective.constraints_func(trial))


def summarize(study: Any, storage: str, criterion: Criterion) -> Summary:
    import optuna

    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = best_trial(study)
    summary = Summary(study.study_name, storage, list(study.user_attrs.get("models", [])), counts, None)
    if best is not None:
        summary.best = {"number": best.number, "value": best.value, "params": best.params, "models": best.user_attrs.get(objective.MODELS_ATTR, []), "feasible": feasible(best)}
        summary.violations = objective.violations(best.user_attrs.get(objective.MODELS_ATTR, []), criterion)
    complete = counts.get("complete", 0)
    varied = best is not None and len(best.params) > 0
    if complete < 2 or not varied:
        summary.importance_note = f"parameter importances need at least 2 completed trials; this study has {complete}"
    else:
        try:
            summary.importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as error:
            summary.importance_note = f"parameter importances unavailable: {str(error).splitlines()[0]}"
    return summary


def plot_history(study: Any, path: Path) -> bool:
    """Each completed trial's value and the best-so-far line (feasible trials only for the line)."""
    import optuna

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None and math.isfinite(t.value)]
    if not done:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ok = [t for t in done if feasible(t)]
    bad = [t for t in done if not feasible(t)]
    if ok:
        ax.scatter([t.number for t in ok], [100 * t.value for t in ok], s=14, label="feasible trial")
    if bad:
        ax.scatter([t.number for t in bad], [100 * t.value for t in bad], s=14, marker="x", color="grey", label="violates a constraint")
    best, xs, ys = math.inf, [], []
    for t in sorted(ok, key=lambda t: t.number):
        best = min(best, t.value)
        xs.append(t.number)
        ys.append(100 * best)
    if xs:
        ax.step(xs, ys, where="post", color="C1", label="best feasible so far")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("mean relative logloss change (%)")
    ax.set_title(f"study {study.study_name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def format_text(summary: Summary) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items()))
    lines = [f"study {summary.study}: {counts or 'no trials'} (models: {', '.join(summary.models) or '-'})"]
    if summary.best is None:
        lines.append("best trial: none completed yet")
    else:
        b = summary.best
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
        lines.append(f"best trial #{b['number']}: mean relative logloss change {b['value']:+.3%} ({'feasible' if b['feasible'] else 'VIOLATES a constraint'}): {params}")
        for m in b["models"]:
            lines.append(f"  {m['model']}: {m['change']:+.3%}, MFLOPs {m['mflops_baseline']:.4f} -> {m['mflops_candidate']:.4f} (budget {m['max_mflops']:g})")
        lines += [f"  violation: {v}" for v in summary.violations]
    if summary.importances:
        lines.append("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.importances.items()))
    else:
        lines.append(summary.importance_note)
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(summary: Summary, study: Any, directory: Path, command: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    plotted = plot_history(study, directory / "history.png")
    (directory / "report.json").write_text(json.dumps(summary.__dict__, indent=2, default=str) + "\n")
    md = [f"# Tuning study `{summary.study}`", "", f"Command: `{command}`", f"Storage: `{summary.storage}`", "", "```", format_text(summary).rstrip(), "```", ""]
    if plotted:
        md += ["![optimization history](history.png)", ""]
    md += ["| trial | state | value | feasible | params |", "|---|---|---|---|---|"]
    for t in study.get_trials(deepcopy=False):
        value = f"{t.value:+.3%}" if t.value is not None and math.isfinite(t.value) else "-"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        md.append(f"| {t.number} | {t.state.name.lower()} | {value} | {'yes' if feasible(t) else 'no'} | {params} |")
    (directory / "report.md").write_text("\n".join(md) + "\n")
