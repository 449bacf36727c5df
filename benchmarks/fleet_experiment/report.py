"""results.json, report.md and gain_vs_budget.png from the measured stages (no training here)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from . import evaluation


def budget_result(
    b: int,
    n: int,
    start_specs: dict[str, dict[str, Any]],
    snapshots: dict[str, dict[str, Any]],
    teams_stage: dict[str, Any],
    central: dict[str, Any],
    initial: dict[str, Any],
    eval_a: dict[str, Any],
    eval_b: dict[str, Any],
    tags: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """Everything measured at one budget: the comparison, each arm against the initial fleet,
    adoption, budget spent and engineering cost."""
    comparison = evaluation.compare(eval_a, eval_b)
    specs_a = {m: s["spec"] for m, s in snapshots.items()}
    cycles = max(1, len(central["cycles"]))
    pairs_a = evaluation.pairs_adopted(start_specs, specs_a)
    pairs_b = evaluation.pairs_adopted(start_specs, central["specs"])
    round_seconds = teams_stage.get("round_seconds", [])
    return {
        "b": b,
        "comparison": comparison,
        "by_tag": evaluation.by_tag(comparison["rows"], tags),
        "a_vs_initial": evaluation.compare(initial, eval_a)["summary"],
        "b_vs_initial": evaluation.compare(initial, eval_b)["summary"],
        "budget": {"a": sum(s["trials"] for s in snapshots.values()), "b": central["spent"], "b_allowed": b * n},
        "adoption": {
            "pairs_a": pairs_a, "pairs_b": pairs_b, "cycles": cycles,
            "pairs_per_cycle_a": pairs_a / cycles, "pairs_per_cycle_b": pairs_b / cycles,
            "ratio": pairs_b / pairs_a if pairs_a else math.inf if pairs_b else math.nan,
        },
        "engineering": {
            "a": {
                "commands_per_model": statistics.fmean(s["commands"] for s in snapshots.values()),
                "spec_lines_per_model": statistics.fmean(s["spec_lines"] for s in snapshots.values()),
                "seconds_per_model": sum(round_seconds[:b]) / n,
            },
            "b": {
                "commands": len(central["commands"]),
                "commands_per_model": len(central["commands"]) / n,
                "spec_lines_per_model": 0.0,  # promotion and tune --apply write the specs and the template
                "seconds_per_model": central["seconds"] / n,
            },
        },
        "releases": central["cycles"],
        "plan": central["plan"],
        "teams": {m: {"kept": s["kept"], "tried": s["tried"]} for m, s in snapshots.items()},
    }


def less(a: float, b: float) -> float:
    """How much less b is than a, as a share of a (the paper's "92 % less")."""
    return 1 - b / a if a else math.nan


def fewer(a: float, b: float) -> str:
    """"92 % fewer" (b below a) or "67 % more" (b above a)."""
    share = less(a, b)
    return "n/a" if not math.isfinite(share) else f"{share:.0%} fewer" if share >= 0 else f"{-share:.0%} more"


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value if value != 0 else 0.0:+.{digits}%}"  # -0.0 (a change of exactly nothing) prints as +0.00%


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def summary_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| b | trials (a) / (b) | gain of (b) over (a) ± se | improved | worst regression | MFLOPs (b) vs (a) | (a) vs initial | (b) vs initial | pairs (a) / (b) | commands per model (a) / (b) | hand-written spec lines per model (a) / (b) | paper's goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results["budgets"].items():
        s = r["comparison"]["summary"]
        e, ad, bu = r["engineering"], r["adoption"], r["budget"]
        lines.append(
            f"| {key} | {bu['a']} / {bu['b']} (of {bu['b_allowed']}) | {_pct(s['mean_gain'], 3)} ± {s['mean_gain_se']:.3%} | {s['share_improved']:.0%} "
            f"| {_pct(s['worst_regression'])} ({s['worst_model']}) | {_pct(s['mean_mflops_change'])} | {_pct(r['a_vs_initial']['mean_gain'], 3)} "
            f"| {_pct(r['b_vs_initial']['mean_gain'], 3)} | {ad['pairs_a']} / {ad['pairs_b']} | {e['a']['commands_per_model']:.1f} / {e['b']['commands_per_model']:.2f} "
            f"| {e['a']['spec_lines_per_model']:.1f} / {e['b']['spec_lines_per_model']:.0f} | {'met' if s['goal_met'] else 'missed'} |"
        )
    return lines


def release_lines(r: dict[str, Any]) -> list[str]:
    plan = r["plan"]
    lines = [f"Plan: {plan['budget']} trials, {plan['reps']} representatives, {plan['seeds']} paired seed(s), {plan['cycles']} release cycles; spent {r['budget']['b']}."]
    for cycle in r["releases"]:
        qualified = "; ".join(
            f"{q['change']} {'PASS' if q['passed'] else 'FAIL' if q['exit'] == 1 else 'error'}"
            + (f" {q['mean_gain']:+.2%}" if isinstance(q.get("mean_gain"), (int, float)) else "")
            for q in cycle["qualified"]
        ) or "none"
        promoted = "; ".join(
            f"{p['change']} (template {p['from']} -> {p['to']}, {p['pairs']} pairs)" if p["exit"] == 0 else f"{p['change']} refused: {p.get('why', '')}"
            for p in cycle["promoted"]
        ) or "nothing"
        tune = cycle.get("tune")
        if tune is None:
            tuned = "no budget left"
        else:
            value = f"{tune['best_value']:+.3%}" if isinstance(tune.get("best_value"), (int, float)) else "none"
            params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (tune.get("best_params") or {}).items())
            tuned = (
                f"{tune['trials_asked']} trial(s), best mean validation change {value} ({params or 'no trial completed'}): "
                + ("applied" if tune["applied"] else f"not applied ({tune.get('why', '')})")
            )
        skipped = "; ".join(f"{s['change']}: {s['why']}" for s in cycle["skipped"])
        lines += [
            f"- cycle {cycle['cycle']} ({cycle['trials']} of {cycle['budget']} trials, template {cycle['template']}), representatives {', '.join(cycle['representatives'])}:",
            f"  - qualified: {qualified}",
            f"  - promoted: {promoted}",
            f"  - tuned: {tuned}",
        ] + ([f"  - not qualified: {skipped}"] if skipped else [])
    return lines


def model_table(r: dict[str, Any], fleet: dict[str, list[str]]) -> list[str]:
    lines = [
        "| model | world | kept by its team (a) | techniques (b) | logloss (a) | logloss (b) | change ± se | MFLOPs (a) | MFLOPs (b) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["comparison"]["rows"]:
        kept = r["teams"].get(row["model"], {}).get("kept", [])
        lines.append(
            f"| {row['model']} | {', '.join(fleet.get(row['model'], []))} | {'; '.join(kept) or '-'} | {', '.join(row['techniques_b']) or '-'} "
            f"| {row['logloss_a']:.4f} | {row['logloss_b']:.4f} | {_pct(row['change'])} ± {row['se']:.2%} "
            f"| {row['mflops_a']:.4f}{' (over budget)' if row.get('over_budget_a') else ''} | {row['mflops_b']:.4f}{' (over budget)' if row.get('over_budget_b') else ''} |"
        )
    return lines


def tag_table(results: dict[str, Any]) -> list[str]:
    budgets = list(results["budgets"])
    tags = sorted({t for r in results["budgets"].values() for t in r["by_tag"]})
    lines = ["| world | models | " + " | ".join(f"gain of (b) over (a), b={b}" for b in budgets) + " |", "|---|---|" + "---|" * len(budgets)]
    for tag in tags:
        cells = []
        for b in budgets:
            t = results["budgets"][b]["by_tag"].get(tag)
            cells.append(f"{_pct(t['mean_gain'])} ± {t['se']:.2%} ({t['share_improved']:.0%} improved)" if t else "-")
        count = next(r["by_tag"][tag]["models"] for r in results["budgets"].values() if tag in r["by_tag"])
        lines.append(f"| {tag} | {count} | " + " | ".join(cells) + " |")
    return lines


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The paper's numbers against what was measured, per budget."""
    lines = []
    for key, r in results["budgets"].items():
        s = r["comparison"]["summary"]
        e, ad = r["engineering"], r["adoption"]
        commands_a, commands_b = e["a"]["commands_per_model"], e["b"]["commands_per_model"]
        ratio = f"{ad['ratio']:.1f}x" if math.isfinite(ad["ratio"]) else "n/a (arm (a) adopted none)"
        lines.append(
            f"- b = {key}: mean CE gain {_pct(s['mean_gain'], 3)} (goal ≥ +0.63 %: {_met(s['goal']['mean_gain'])}); "
            f"worst regression {_pct(s['worst_regression'])} on {s['worst_model']} (goal ≤ +0.2 %: {_met(s['goal']['worst_regression'])}); "
            f"MFLOPs {_pct(s['mean_mflops_change'])} (goal within ±2 %: {_met(s['goal']['mflops'])}; models over their serving budget: "
            f"(a) {s.get('over_budget_a', 0)}, (b) {s.get('over_budget_b', 0)}); "
            f"commands per model (a) {commands_a:.1f}, (b) {commands_b:.2f}: {fewer(commands_a, commands_b)} (paper: 92 % less time per model); "
            f"hand-written spec lines per model (a) {e['a']['spec_lines_per_model']:.1f}, (b) {e['b']['spec_lines_per_model']:.0f}; "
            f"wall time per model in this run (a) {e['a']['seconds_per_model']:.0f} s, (b) {e['b']['seconds_per_model']:.0f} s (trials found in the cache cost none); "
            f"technique-model pairs per cycle (a) {ad['pairs_per_cycle_a']:.1f}, (b) {ad['pairs_per_cycle_b']:.1f}: {ratio} (paper: 6.3x)"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    st = results["settings"]
    lines = [
        "# Fleet experiment: independent teams (a) against the template (b)",
        "",
        f"{st['models']} models, budgets {st['budgets']} trials per model, {st['steps']} steps per trial, evaluation on seeds {st['eval_seeds']} (test split), "
        f"{st['jobs']} job(s); {st['seconds'] / 60:.1f} minutes, {st['trials_trained']} trials trained ({st['trials_asked']} asked for, the rest cached).",
        "",
        f"- command: `{st['command']}`",
        f"- machine: {st['machine']}; load average before {', '.join(f'{x:.2f}' for x in st['load_average_before'])}, after {', '.join(f'{x:.2f}' for x in st['load_average_after'])}",
        f"- date: {st['date']}, commit {st['commit']}",
        f"- fleet: {', '.join(f'{t} {c}' for t, c in st['composition'].items() if c)}",
        "",
        "Gain = minus the mean over models of the paired relative change of test logloss, (b) against (a); ± one standard error over models.",
        "",
        *summary_table(results),
        "",
        "![gain against budget](gain_vs_budget.png)",
        "",
        "## Against the paper's numbers",
        "",
        *verdict_lines(results),
        "",
        "## Where the template wins and where it loses (by world)",
        "",
        *tag_table(results),
        "",
    ]
    for key, r in results["budgets"].items():
        kept = [c for m in r["teams"].values() for c in m["kept"]]
        lines += [
            f"## b = {key}",
            "",
            f"Arm (a): {r['budget']['a']} trials; {len(kept)} changes kept across the fleet ({sum(1 for c in kept if c.startswith('add '))} technique additions); "
            f"{r['engineering']['a']['commands_per_model']:.1f} commands and {r['engineering']['a']['spec_lines_per_model']:.1f} hand-written spec lines per model.",
            "",
            "Arm (b) releases:",
            "",
            *release_lines(r),
            "",
            *model_table(r, results["fleet"]),
            "",
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Gain against budget: (b) over (a) with ±2 se, and each arm over the initial fleet."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    budgets = [int(b) for b in results["budgets"]]
    rows = list(results["budgets"].values())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    gain = [100 * r["comparison"]["summary"]["mean_gain"] for r in rows]
    err = [200 * r["comparison"]["summary"]["mean_gain_se"] for r in rows]
    ax.errorbar(budgets, gain, yerr=err, marker="o", capsize=4, label="template (b) over teams (a), ±2 se")
    ax.plot(budgets, [100 * r["a_vs_initial"]["mean_gain"] for r in rows], marker="s", linestyle="--", label="teams (a) over the initial fleet")
    ax.plot(budgets, [100 * r["b_vs_initial"]["mean_gain"] for r in rows], marker="^", linestyle="--", label="template (b) over the initial fleet")
    ax.axhline(0.63, color="grey", linestyle=":", label="paper: +0.63 %")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("budget b (trials per model; the template's central budget is b x models)")
    ax.set_ylabel("mean test cross-entropy gain (%)")
    ax.set_title("Where does standardization stop winning?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown(results))
    plot(results, out / "gain_vs_budget.png")
