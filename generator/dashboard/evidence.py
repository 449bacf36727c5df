"""Qualification and tuning evidence, read from the reports smt writes.

Qualifications: every ``qualification/reports/<dir>/report.json`` (``smt qualify``), with its
per-model deltas and ``deltas.png``, dated by the verdict record that cites it
(``qualification/records/<technique>.json``), else by the last commit of the report, else by the
file's time. A record whose report folder is gone is listed from the record alone.

Tuning studies: every ``tuning/reports/<study>/report.json`` (``smt tune``), its trial history from
the trial table of its ``report.md`` (the only per-trial record that is committed; the Optuna
storage may be a database this machine cannot reach) and ``history.png``.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

QUALIFICATION_RECORDS = Path("qualification") / "records"
QUALIFICATION_REPORTS = Path("qualification") / "reports"
TUNING_REPORTS = Path("tuning") / "reports"

Plots = dict[str, Path]  # path inside the dashboard -> the file to copy there


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def finite_number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _records(root: Path) -> list[dict[str, Any]]:
    """Every verdict of every record file, flattened."""
    out = []
    for path in sorted((root / QUALIFICATION_RECORDS).glob("*.json")):
        data = _read_json(path)
        if not isinstance(data, Mapping):
            continue
        for runs in data.values():
            if isinstance(runs, Mapping):
                out.extend(record for record in runs.values() if isinstance(record, Mapping))
    return out


def _commit_dates(root: Path, folder: Path) -> dict[str, str]:
    """Report folder name -> date of the last commit touching it (one ``git log`` for all)."""
    proc = subprocess.run(
        ["git", "log", "--format=@%cs", "--name-only", "--", folder.as_posix()], cwd=root, capture_output=True, text=True
    )
    dates: dict[str, str] = {}
    date = ""
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        if line.startswith("@"):
            date = line[1:]
        elif line.strip():
            parts = Path(line).parts
            if len(parts) > len(folder.parts):
                dates.setdefault(parts[len(folder.parts)], date)  # newest first: keep the first seen
    return dates


def _model_row(result: Mapping[str, Any], reasons: list[str]) -> dict[str, Any]:
    model = str(result.get("model", ""))
    rel = result.get("rel_logloss") or {}
    problems = [reason.removeprefix(f"{model}: ") for reason in reasons if reason.startswith(f"{model}: ")]
    measured = "params_candidate" in result  # a record names its models without measurements
    params = (result.get("params_candidate") or 0) - (result.get("params_baseline") or 0) if measured else None
    mflops = (finite_number(result.get("mflops_candidate")) or 0.0) - (finite_number(result.get("mflops_baseline")) or 0.0) if measured else None
    return {
        "model": model,
        "delta": finite_number(rel.get("mean")),
        "se": finite_number(rel.get("se")),
        "objectives": [
            {"name": o.get("name"), "delta": finite_number((o.get("rel_logloss") or {}).get("mean")), "se": finite_number((o.get("rel_logloss") or {}).get("se"))}
            for o in result.get("objectives") or []
            if isinstance(o, Mapping)
        ],
        "params_delta": params,
        "mflops_delta": mflops,
        "error": result.get("error") or "",
        "verdict": ("FAIL" if problems or result.get("error") else "ok") if measured else "",
        "problems": problems,
    }


def _qualification(source: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """One qualification as the page shows it: what a report.json and a record share (same keys),
    completed by ``fields``."""
    seeds = source.get("seeds")
    return {
        "change": source.get("change"),
        "technique": source.get("technique"),
        "technique_version": source.get("technique_version"),
        "template_version": source.get("template_version"),
        "against": source.get("against"),
        "passed": bool(source.get("passed")),
        "mean_gain": finite_number(source.get("mean_gain")),
        "reasons": [str(reason) for reason in source.get("reasons") or []],
        "seeds": len(seeds) if isinstance(seeds, list) else seeds,  # a report lists them, a record counts them
        "steps": source.get("steps"),
        **fields,
    }


def qualifications(root: Path) -> tuple[list[dict[str, Any]], Plots]:
    """Every qualification, newest first, and the plots to copy."""
    records = _records(root)
    by_report = {str(record.get("report", "")).rstrip("/"): record for record in records}
    folders = sorted(path.parent for path in (root / QUALIFICATION_REPORTS).glob("*/report.json"))
    commit_dates = _commit_dates(root, QUALIFICATION_REPORTS) if folders else {}
    items, plots, seen = [], {}, set()
    for folder in folders:
        report = _read_json(folder / "report.json")
        if not isinstance(report, Mapping):
            continue
        relative = (QUALIFICATION_REPORTS / folder.name).as_posix()
        seen.add(relative)
        record = by_report.get(relative) or {}
        date, dated_by = record.get("date"), "record"
        if not date and folder.name in commit_dates:
            date, dated_by = commit_dates[folder.name], "commit"
        if not date:
            date, dated_by = time.strftime("%Y-%m-%d", time.gmtime((folder / "report.json").stat().st_mtime)), "file time"
        plot = None
        if (folder / "deltas.png").is_file():
            plot = f"plots/qualification/{folder.name}.png"
            plots[plot] = folder / "deltas.png"
        reasons = [str(reason) for reason in report.get("reasons") or []]
        items.append(_qualification(
            report,
            id=folder.name,
            change=report.get("change") or folder.name,
            date=date,
            dated_by=dated_by,
            seconds=finite_number(report.get("seconds")),
            chosen_by=report.get("chosen_by"),
            models=[_model_row(result, reasons) for result in report.get("results") or [] if isinstance(result, Mapping)],
            skipped=[item for item in report.get("skipped") or [] if isinstance(item, Mapping)],
            report=relative,
            plot=plot,
        ))
    for record in records:  # verdicts whose report folder is not here
        relative = str(record.get("report", "")).rstrip("/")
        if relative in seen:
            continue
        seen.add(relative)
        items.append(_qualification(
            record,
            id=relative or str(record.get("change")),
            date=record.get("date") or "",
            dated_by="record (report folder missing)",
            seconds=None,
            chosen_by=None,
            models=[_model_row({"model": model}, []) for model in record.get("models") or []],
            skipped=[],
            report=relative,
            plot=None,
        ))
    items.sort(key=lambda item: (item["date"] or "", item["id"]), reverse=True)
    return items, plots


def _trial_table(markdown: str) -> list[dict[str, Any]]:
    """The ``| trial | state | value | feasible | params |`` rows of a tuning report.md."""
    trials, inside = [], False
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[:2] == ["trial", "state"]:
            inside = True
            continue
        if not inside:
            continue
        if not line.startswith("|"):
            break
        if len(cells) < 5 or set(cells[0]) <= {"-"}:
            continue
        value = cells[2].rstrip("%")
        try:
            number, parsed = int(cells[0]), float(value) / 100 if value not in ("-", "") else None
        except ValueError:
            continue
        trials.append({"number": number, "state": cells[1], "value": parsed, "feasible": cells[3] == "yes", "params": "|".join(cells[4:])})
    return trials


def tuning_studies(root: Path) -> tuple[list[dict[str, Any]], Plots]:
    """Every tuning study report with its trial history, and the plots to copy."""
    items, plots = [], {}
    for folder in sorted(path.parent for path in (root / TUNING_REPORTS).glob("*/report.json")):
        report = _read_json(folder / "report.json")
        if not isinstance(report, Mapping):
            continue
        markdown = (folder / "report.md").read_text(encoding="utf-8", errors="replace") if (folder / "report.md").is_file() else ""
        plot = None
        if (folder / "history.png").is_file():
            plot = f"plots/tuning/{folder.name}.png"
            plots[plot] = folder / "history.png"
        best = report.get("best") if isinstance(report.get("best"), Mapping) else None
        items.append({
            "study": report.get("study") or folder.name,
            "storage": report.get("storage"),
            "models": list(report.get("models") or []),
            "counts": dict(report.get("counts") or {}),
            "best": None if best is None else {
                "number": best.get("number"),
                "value": finite_number(best.get("value")),
                "params": dict(best.get("params") or {}),
                "feasible": bool(best.get("feasible")),
            },
            "importances": {k: finite_number(v) for k, v in (report.get("importances") or {}).items()},
            "importance_note": report.get("importance_note") or "",
            "violations": list(report.get("violations") or []),
            "trials": _trial_table(markdown),
            "report": (TUNING_REPORTS / folder.name).as_posix(),
            "plot": plot,
        })
    return items, plots
