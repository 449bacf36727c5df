"""The gate in front of every command that propagates a technique (``smt adopt``, ``smt promote``,
``smt tune --apply``), on by default.

A technique goes into a model only with evidence for exactly that change (the technique with its
params) at the technique's current version and the current template version:

- a passing record in ``qualification/records/<technique>.json`` (``smt qualify`` writes it); or
- ``--verify``: a short qualification of the affected models and their own tests, run now, passes;
  a record that FAILs the change on a named model still keeps it out of that model (a full
  qualification found harm there; a short one does not overrule it); or
- ``--force --reason "..."``: the person takes responsibility, and the reason is written to
  ``CHANGELOG.md`` (``generator.changelog``).

Otherwise the command refuses with one line naming the record (exit 1, nothing written). The
second half of ``--verify``, a candidate's own tests, is ``run_model_tests``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine import SmtError

RECORDS_DIR = Path("qualification") / "records"
# The two-process torchrun test and the CUDA test check the runtime, not the technique; skipping
# them keeps the gate short.
DESELECT = "not two_processes and not cuda"


class GateRefused(SmtError):
    """The gate found no evidence for a change: one line, exit 1 (a check that found something to
    fix, not bad input)."""

    exit_code = 1


@dataclass(frozen=True)
class Evidence:
    """What the records say about one change (technique + params) at the current versions."""

    label: str  # the change as qualified: dcn_v2 or dcn_v2:num_cross_layers=3
    technique: str
    params: dict[str, Any]
    version: str  # the technique's current version
    template_version: str
    record: dict[str, Any] | None  # the stored verdict of exactly this change, if any

    @property
    def where(self) -> str:
        """The record named in messages: file, version key and change label."""
        return f"{RECORDS_DIR / (self.technique + '.json')} [{self.version}@template-{self.template_version}][{self.label!r}]"

    @property
    def passed(self) -> bool:
        return bool(self.record and self.record.get("passed"))

    def failed_on(self, models: list[str]) -> dict[str, str]:
        """Of ``models``, those a failing record names, each with the first problem it found there."""
        if self.record is None or self.record.get("passed"):
            return {}
        reasons = [str(reason) for reason in self.record.get("reasons") or []]
        named = set(self.record.get("failed_models") or [])
        named |= {reason.split(": ", 1)[0] for reason in reasons if ": " in reason}  # records made before failed_models
        out = {}
        for model in models:
            if model in named:
                out[model] = next((r.split(": ", 1)[1] for r in reasons if r.startswith(f"{model}: ")), "failed")
        return out


def change_label(technique: str, params: dict[str, Any]) -> str:
    """``dcn_v2`` or ``dcn_v2:low_rank=8,num_cross_layers=3``: how qualification labels a change."""
    text = ",".join(f"{key}={value}" for key, value in sorted(params.items()))
    return f"{technique}:{text}" if text else technique


def read_record(records_dir: Path, technique: str, version: str, template_version: str, label: str) -> dict[str, Any] | None:
    """The stored verdict of ``label`` at these versions in ``records_dir/<technique>.json``, or None."""
    path = records_dir / f"{technique}.json"
    if not path.is_file():
        return None
    try:
        runs = json.loads(path.read_text()).get(f"{version}@template-{template_version}") or {}
    except (OSError, ValueError, AttributeError):
        raise SmtError(f"{path}: not a qualification record file (JSON of version keys); restore it from git") from None
    record = runs.get(label)
    return record if isinstance(record, dict) else None


def evidence(root: Path, technique: str, params: dict[str, Any], version: str, template_version: str) -> Evidence:
    """The evidence for ``technique`` with ``params`` in the SMT repository ``root``."""
    label = change_label(technique, params)
    return Evidence(label, technique, dict(params), version, template_version, read_record(root / RECORDS_DIR, technique, version, template_version, label))


def check(found: Evidence, models: list[str], *, verify: bool, force: bool) -> None:
    """Raise GateRefused unless the change may go into ``models`` (see the module docstring);
    with ``verify`` the caller runs the verification next, and it must pass too."""
    if force or not models:
        return
    blocked = found.failed_on(models)
    if blocked:
        model, problem = next(iter(blocked.items()))
        raise GateRefused(
            f"{model}: {found.where} FAILs {found.label} on this model ({problem}); leave it out, or give"
            f" --force --reason \"...\"; nothing written"
        )
    if found.passed or verify:
        return
    if found.record is None:
        why = f"no passing qualification record for {found.technique} {found.version} at template {found.template_version} ({found.where} is missing)"
    else:
        reasons = "; ".join(str(r) for r in found.record.get("reasons") or []) or "failed"
        why = f"{found.where} FAILs {found.label}: {reasons}"
    raise GateRefused(
        f"{found.label}: {why}; run `smt qualify {found.label}`, or add --verify, or --force --reason \"...\"; nothing written"
    )


def evidence_entry(found: Evidence, verified: str | None = None, forced: str | None = None) -> str:
    """The CHANGELOG.md line saying on what evidence a change went in."""
    if forced is not None:
        return (
            f"`{found.label}` ({found.technique} {found.version}) went in without passing evidence at template"
            f" {found.template_version} (`--force`): {forced}"
        )
    if verified is not None or found.record is None:
        return f"`{found.label}` ({found.technique} {found.version}): verified by `--verify` ({verified}); no qualification record at template {found.template_version}."
    record = found.record
    report = record.get("report", "")
    return (
        f"Qualification (template {found.template_version}, {record.get('seeds')} seed(s), {record.get('steps')} steps, on"
        f" {', '.join(record.get('models') or [])}): PASS, mean relative logloss gain {float(record.get('mean_gain', 0.0)):+.3%};"
        f" report [{report}]({report}/report.md)."
    )


def check_force_reason(force: bool, reason: str | None) -> None:
    """``--force`` needs a ``--reason`` (it is recorded), and a reason only goes with --force."""
    if force and not (reason or "").strip():
        raise SmtError('--force needs --reason "why this change goes in without passing evidence" (it is written to CHANGELOG.md)')
    if reason is not None and not force:
        raise SmtError("--reason goes with --force (it says why the gate is overridden)")
    if reason is not None and "\n" in reason:
        raise SmtError("--reason: give one line (it becomes one CHANGELOG.md entry)")


def run_model_tests(folder: Path, model: str, threads: int = 1) -> tuple[bool, str]:
    """Run ``tests/test_<model>.py`` of a rendered model folder; (passed, last line of pytest's output)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(folder)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", DESELECT, f"tests/test_{model}.py"],
        cwd=folder, env=env, capture_output=True, text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED")]
    return proc.returncode == 0, (failed[0] if failed else lines[-1] if lines else proc.stderr.strip()[-200:])
