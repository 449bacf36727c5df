"""A qualification's outputs: summary table (text/Markdown), JSON, a PNG plot and the verdict record.

Records (``qualification/records/<technique>.json``, committed) keep, per technique and per
(technique version, template version), the latest verdict of each change label (the technique
with its params): ``smt diff --since`` shows the latest and ``smt promote`` requires a passing one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .criterion import Criterion, applies_mean_gain, interval_text
from .gate import RECORDS_DIR, read_record
from .run import Qualification

REPORTS_DIR = Path("qualification") / "reports"


def _mean(stat: Any, scale: float = 1.0, fmt: str = "+.2f", unit: str = "") -> str:
    """A mean over seeds; no "±": a standard error of one or two seeds says little (the bootstrap
    interval of the logloss change is the uncertainty the report gives)."""
    if stat.n == 0 or not math.isfinite(stat.mean):
        return "n/a"
    return f"{stat.mean * scale:{fmt}}{unit}"


def summary_rows(q: Qualification) -> list[list[str]]:
    """The rows of the summary table: per model its objectives, and first, for a model with several,
    its objective-weighted change (what the regression rule judges)."""
    rows = []
    for result in q.results:
        problems = q.verdict.per_model.get(result.model, [])
        verdict = "FAIL" if problems else "ok"
        capacity = [
            f"{result.params_candidate - result.params_baseline:+,}",
            f"{result.mflops_candidate - result.mflops_baseline:+.4f}",
        ]
        if result.error:
            rows.append([result.model, "-", "error", "", "", "", "", "", *capacity, verdict])
            continue
        if len(result.objectives) > 1:
            rows.append([result.model, "(weighted)", _mean(result.rel_logloss, 100, "+.2f", "%"), interval_text(result.interval), "", "", "", "", *capacity, verdict])
        for objective in result.objectives:
            rows.append([
                result.model,
                objective.name,
                _mean(objective.rel_logloss, 100, "+.2f", "%"),
                interval_text(objective.interval),
                _mean(objective.d_ne, 1, "+.4f"),
                _mean(objective.d_auc, 1, "+.4f"),
                f"{objective.calibration_baseline.mean:.3f} → {objective.calibration_candidate.mean:.3f}",
                f"{objective.ne_baseline.mean:.3f} → {objective.ne_candidate.mean:.3f}",
                *capacity,
                verdict,
            ])
    return rows


def header(q: Qualification) -> list[str]:
    return ["model", "objective", "Δlogloss (rel.)", f"{q.criterion.confidence:.0%} interval", "ΔNE", "ΔAUC", "calibration", "NE", "Δparams", "ΔMFLOPs", "verdict"]


def rules(criterion: Criterion) -> list[str]:
    """The rules this verdict applied, in words (the gate's criterion has no mean-gain rule)."""
    low, high = criterion.calibration
    out = [f"mean gain over the models ≥ {criterion.min_mean_gain:.2%}"] if applies_mean_gain(criterion) else []
    return out + [
        f"each model's mean Δlogloss ≤ +{criterion.max_regression:.2%} (its {criterion.confidence:.0%} bootstrap interval is shown, never an excuse)",
        f"calibration in [{low:g}, {high:g}] or no further from 1 than the baseline's",
        f"no seed's NE reaches {criterion.max_ne:g} where the baseline's stays below",
        "MFLOPs and parameters within each model's serving budget",
        "every trial trains",
    ]


def headline(q: Qualification) -> str:
    verdict = "PASS" if q.verdict.passed else "FAIL"
    need = f" (need ≥ {q.criterion.min_mean_gain:.3%})" if applies_mean_gain(q.criterion) else ""
    return (
        f"{verdict}: {q.change.label} on {len(q.models)} model(s), {len(q.seeds)} paired seed(s), {q.steps} steps;"
        f" mean relative logloss gain {q.verdict.mean_gain:+.3%}{need}"
    )


def format_text(q: Qualification) -> str:
    rows = summary_rows(q)
    columns = header(q)
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    lines = [headline(q), "rules: " + "; ".join(rules(q.criterion)), ""]
    for row in [columns, *rows]:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    lines.append("")
    lines.extend(f"reason: {reason}" for reason in q.verdict.reasons)
    lines.extend(f"not applicable to {model}: {why}" for model, why in q.skipped)
    lines.extend(f"{r.model}: {r.note}" for r in q.results if r.note)
    lines.append(f"{q.trials_run} trial(s) run, {q.trials_cached} cached, {q.seconds:.0f} s ({q.parallel}); models chosen: {q.chosen_by}")
    return "\n".join(lines) + "\n"


def format_markdown(q: Qualification) -> str:
    c = q.criterion
    out = [f"# Qualification: `{q.change.label}`", "", f"**{headline(q)}**", ""]
    out.append(f"Template {q.template_version}" + (f", technique version {q.technique_version}" if q.technique_version else "") + f"; models: {q.chosen_by}.")
    out += ["", f"Rules (`qualification.yml`, split `{c.split}`):", *[f"- {rule}" for rule in rules(c)]]
    if any(r.note for r in q.results):
        out.append("- capacity-neutral: candidate MLPs shrunk to the baseline's MFLOPs")
    columns = header(q)
    out += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(row) + " |" for row in summary_rows(q)]
    out.append("")
    out.append(
        f"Deltas are candidate − baseline, means over paired seeds; negative Δlogloss is better. Intervals: paired bootstrap"
        f" over the {c.split} examples (and the seeds when there are several), {c.confidence:.0%}."
    )
    if q.verdict.reasons:
        out += ["", "Reasons:"] + [f"- {reason}" for reason in q.verdict.reasons]
    if q.skipped:
        out += ["", "Not applicable:"] + [f"- `{model}`: {why}" for model, why in q.skipped]
    notes = [f"- `{r.model}`: {r.note}" for r in q.results if r.note]
    if notes:
        out += ["", "Notes:", *notes]
    out += ["", f"{q.trials_run} trial(s) run, {q.trials_cached} from the cache, {q.seconds:.0f} s ({q.parallel}).", "", "![per-model deltas](deltas.png)"]
    return "\n".join(out) + "\n"


def to_json(q: Qualification) -> dict[str, Any]:
    return {
        "change": q.change.label,
        "technique": q.change.technique,
        "params": q.change.params,
        "against": q.change.against,
        "template_version": q.template_version,
        "technique_version": q.technique_version,
        "passed": q.verdict.passed,
        "reasons": q.verdict.reasons,
        "mean_gain": q.verdict.mean_gain,
        "criterion": asdict(q.criterion),
        "models": q.models,
        "chosen_by": q.chosen_by,
        "seeds": q.seeds,
        "steps": q.steps,
        "seconds": q.seconds,
        "trials_run": q.trials_run,
        "trials_cached": q.trials_cached,
        "skipped": [{"model": m, "reason": r} for m, r in q.skipped],
        "results": [asdict(result) for result in q.results],
    }


def plot(q: Qualification, path: Path) -> None:
    """Per-model relative logloss change with its bootstrap interval and the criterion's lines;
    red where the model fails a rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in q.results if not r.error]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(measured) + 2), 3.6))
    names = [r.model for r in measured]
    means = [100 * r.rel_logloss.mean for r in measured]
    # asymmetric error bars: mean - low, high - mean (none without an interval)
    errors = [
        [100 * (r.rel_logloss.mean - r.interval.low) if r.interval else 0.0 for r in measured],
        [100 * (r.interval.high - r.rel_logloss.mean) if r.interval else 0.0 for r in measured],
    ]
    colors = ["tab:red" if q.verdict.per_model.get(r.model) else "tab:green" for r in measured]
    ax.bar(range(len(names)), means, yerr=errors, color=colors, capsize=4)
    ax.axhline(100 * q.criterion.max_regression, color="tab:red", linestyle="--", linewidth=1, label=f"bound +{q.criterion.max_regression:.1%}")
    if applies_mean_gain(q.criterion):
        ax.axhline(-100 * q.criterion.min_mean_gain, color="tab:green", linestyle=":", linewidth=1, label=f"mean gain goal -{q.criterion.min_mean_gain:.1%}")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("Δ logloss, % (candidate − baseline)")
    ax.set_title(f"{q.change.label}: {'PASS' if q.verdict.passed else 'FAIL'}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_report_dir(root: Path, q: Qualification) -> Path:
    version = f"-{q.technique_version}" if q.technique_version else ""
    return root / REPORTS_DIR / f"{q.change.slug}{version}-template-{q.template_version}"


def write_report(q: Qualification, directory: Path) -> list[Path]:
    """report.md, report.json and deltas.png in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.md").write_text(format_markdown(q))
    (directory / "report.json").write_text(json.dumps(to_json(q), indent=2, default=str) + "\n")
    plot(q, directory / "deltas.png")
    return [directory / "report.md", directory / "report.json", directory / "deltas.png"]


def record_path(root: Path, technique: str) -> Path:
    return root / RECORDS_DIR / f"{technique}.json"


def write_record(root: Path, q: Qualification, report_dir: Path) -> Path | None:
    """Store the verdict under (technique version, template version) in the technique's record file."""
    if not q.change.technique:
        return None
    path = record_path(root, q.change.technique)
    records = json.loads(path.read_text()) if path.is_file() else {}
    try:
        report = report_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        report = str(report_dir)
    runs = records.setdefault(f"{q.technique_version}@template-{q.template_version}", {})
    runs[q.change.label] = {
        "technique": q.change.technique,
        "technique_version": q.technique_version,
        "template_version": q.template_version,
        "change": q.change.label,
        "params": q.change.params,
        "passed": q.verdict.passed,
        "mean_gain": q.verdict.mean_gain,
        "reasons": q.verdict.reasons,
        "models": q.models,
        # the models a rule failed: `smt adopt` refuses the change on each of them (qualification.gate)
        "failed_models": sorted(model for model, problems in q.verdict.per_model.items() if problems),
        "seeds": len(q.seeds),
        "steps": q.steps,
        "report": report,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "recorded_at": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return path


def latest_record(root: Path, technique: str, technique_version: str, template_version: str, change: str | None = None) -> dict[str, Any] | None:
    """The stored verdict of ``technique`` at these versions: of the change labelled ``change``
    (``dcn_v2`` or ``dcn_v2:low_rank=8``) when given, else the latest of any params; or None."""
    if change is not None:
        return read_record(root / RECORDS_DIR, technique, technique_version, template_version, change)
    path = record_path(root, technique)
    if not path.is_file():
        return None
    runs = json.loads(path.read_text()).get(f"{technique_version}@template-{template_version}") or {}
    return max(runs.values(), key=lambda record: record.get("recorded_at", 0), default=None)


def verdicts_for_changes(root: Path, changed_sources: list[str]) -> list[dict[str, Any]]:
    """For each technique whose sources changed, its stored verdict at the current technique and
    template versions (``smt diff --since``)."""
    from ..engine import load_sources

    sources = load_sources(root)
    names = sorted({path.split("/")[1] for path in changed_sources if path.startswith("techniques/") and path.count("/") >= 2})
    out = []
    for name in names:
        technique = sources.library.get(name)
        if technique is None:
            continue
        record = latest_record(root, name, str(technique.version), sources.version)
        out.append({"technique": name, "version": str(technique.version), "template_version": sources.version, "record": record})
    return out


def format_verdicts(verdicts: list[dict[str, Any]], markdown: bool = False) -> str:
    """One line per changed technique: its verdict and report, or that it has none."""
    lines = []
    for item in verdicts:
        record = item["record"]
        where = f"{item['technique']} {item['version']} (template {item['template_version']})"
        if record is None:
            text = f"qualification of {where}: none; run `smt qualify {item['technique']}` before propagating"
        else:
            verdict = "PASS" if record["passed"] else "FAIL"
            text = f"qualification of {where}: {verdict}, mean gain {record['mean_gain']:+.3%} on {', '.join(record['models'])} ({record['date']}; {record['report']})"
        lines.append(f"- {text}" if markdown else text)
    if not lines:
        return ""
    return ("\n### Qualification\n\n" if markdown else "\n") + "\n".join(lines) + "\n"
