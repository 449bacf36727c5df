"""Measure every generated model's serving capacity against its spec's budget.

Meant for ``smt check --capacity`` (the CLI wiring is the caller's): ``measure_fleet_capacity``
imports each model's committed package from ``generated/<model>/`` in one PyTorch subprocess and
runs the runtime's ``smt_runtime.serve.spec_capacity_report`` on its ``train.PARTS`` (parameters,
embedding bytes, measured MFLOPs per example, the budget), so the numbers are those of
``python -m <model> capacity``. That report is
computed from the spec without allocating the embedding tables (parameter counts from the model
built on the meta device, MFLOPs from a stand-in with small tables), so a spec too large for
memory is measured, not crashed on; ``over_budget`` turns the
rows into one line per exceeded budget. The generator itself never imports PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .engine import SmtError
from .fleet import Fleet

# Runs in the subprocess: argv holds model folders; prints {folder: report or {"error": ...}}.
_MEASURE = """
import importlib, json, sys, traceback
results = {}
for folder in sys.argv[1:]:
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    sys.path.insert(0, folder)
    try:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        from smt_runtime.serve import spec_capacity_report
        parts = importlib.import_module(name + ".train").PARTS
        results[folder] = spec_capacity_report(parts, parts.config())
    except Exception as error:
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        results[folder] = {"error": last}
    finally:
        sys.path.remove(folder)
print(json.dumps(results))
"""


@dataclass(frozen=True)
class CapacityRow:
    """One model's serving cost, as its generated capacity_report measured it, and its budget."""

    model: str
    parameters: int
    embedding_parameters: int
    embedding_bytes: int
    dense_parameters: int
    mflops_per_example: float
    max_params: int
    max_mflops_per_example: float

    @property
    def params_within_budget(self) -> bool:
        return self.parameters <= self.max_params

    @property
    def mflops_within_budget(self) -> bool:
        return self.mflops_per_example <= self.max_mflops_per_example

    @property
    def within_budget(self) -> bool:
        return self.params_within_budget and self.mflops_within_budget


def measure_fleet_capacity(root: Path, names: list[str] | None = None) -> list[CapacityRow]:
    """Capacity of the named models of ``<root>/generated`` (all when ``names`` is empty), by name.

    Measures the generated code as committed (run ``smt check`` for whether it is current), in one
    PyTorch subprocess for the whole fleet.

    Raises:
        SmtError: PyTorch is not installed, a model is unknown, or a model failed to build or
            measure (every failing model is named).
    """
    entries = Fleet(root).models(names)
    if not entries:
        return []
    if importlib.util.find_spec("torch") is None:
        raise SmtError("capacity builds the models and needs PyTorch: pip install -e '.[torch]'")
    folders = {str(entry.directory.resolve()): entry.name for entry in entries}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *folders], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SmtError(f"measuring capacity: the PyTorch subprocess failed ({last}); run `python -m MODEL capacity` in generated/MODEL to see the full error")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = [
        f"{folders[folder]}: {report['error']}" for folder, report in measured.items() if "error" in report
    ]
    if failures:
        raise SmtError("measuring capacity: " + "; ".join(failures) + "; run `python -m MODEL capacity` in generated/MODEL for the full error")
    rows = [
        CapacityRow(
            model=folders[folder],
            parameters=int(report["parameters"]),
            embedding_parameters=int(report["embedding_parameters"]),
            embedding_bytes=int(report["embedding_bytes"]),
            dense_parameters=int(report["dense_parameters"]),
            mflops_per_example=float(report["mflops_per_example"]),
            max_params=int(report["max_params"]),
            max_mflops_per_example=float(report["max_mflops_per_example"]),
        )
        for folder, report in measured.items()
    ]
    return sorted(rows, key=lambda row: row.model)


def over_budget(rows: list[CapacityRow]) -> list[str]:
    """One line per exceeded budget, e.g.
    "feed_ctr: 1,234,567 parameters, 234,567 (23.4%) over its budget of 1,000,000"; empty when
    every model fits. Percentages are rounded down: they never overstate the excess."""

    def percent(excess: float, budget: float) -> str:
        return f"{math.floor(1000 * excess / budget) / 10:.1f}%"

    messages = []
    for row in rows:
        if not row.params_within_budget:
            excess, budget = row.parameters - row.max_params, row.max_params
            messages.append(
                f"{row.model}: {row.parameters:,} parameters, {excess:,} ({percent(excess, budget)})"
                f" over its budget of {budget:,}"
            )
        if not row.mflops_within_budget:
            excess, budget = row.mflops_per_example - row.max_mflops_per_example, row.max_mflops_per_example
            messages.append(
                f"{row.model}: {row.mflops_per_example:.4f} MFLOPs per example, {excess:.4f}"
                f" ({percent(excess, budget)}) over its budget of {budget:g}"
            )
    return messages
