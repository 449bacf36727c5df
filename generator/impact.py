"""Measure what adopting a technique costs each eligible model: parameters and MFLOPs per example.

Each model is rendered twice (without and with the technique), and one PyTorch subprocess builds
both and runs the generated capacity report, so the numbers are the same accounting as
``python -m <model> capacity``. The generator itself stays free of PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .engine import SmtError, Technique
from .fleet import Fleet
from .render import check_spec, render_model
from .sync import write_tree
from .trials import runtime_source

_MEASURE = """
import importlib, json, sys
results = {}
for folder in sys.argv[1:]:
    sys.path.insert(0, folder)
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    pkg = importlib.import_module(name)
    if hasattr(pkg, "PARTS"):  # template 0.6.0 and later: the runtime measures it
        from smt_runtime.serve import capacity_report
        from smt_runtime.training import build_model
        config = pkg.PARTS.config()
        report = capacity_report(build_model(pkg.PARTS, config), config)
    else:  # a package from before the runtime (a --against baseline) carries its own serve module
        config = pkg.config.ModelConfig()
        report = pkg.serve.capacity_report(pkg.train.build_model(config), config)
    results[folder] = {"parameters": report["parameters"], "mflops": report["mflops_per_example"]}
    sys.path.remove(folder)
print(json.dumps(results))
"""


@dataclass(frozen=True)
class ImpactRow:
    model: str
    params_without: int = 0
    params_with: int = 0
    mflops_without: float = 0.0
    mflops_with: float = 0.0
    skipped: str = ""


def measure_folders(
    folders: list[Path], doing: str = "measuring capacity", runtime: Path | None = None
) -> dict[str, dict[str, float]]:
    """Parameters and MFLOPs per example of rendered model folders (one PyTorch subprocess for all),
    measured with the runtime in the folder ``runtime`` (the working tree's: trials.runtime_source)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(runtime or ""), os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, folders)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SmtError(f"{doing}: a generated model failed to build ({last}); run `python -m MODEL capacity` in its folder for the full error")
    return json.loads(proc.stdout)


def measure_impact(fleet: Fleet, technique: Technique) -> list[ImpactRow]:
    """Capacity without and with ``technique`` for every model of the fleet (skips are explained)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SmtError("--impact builds models and needs PyTorch: pip install -e '.[torch]'") from None
    rows: list[ImpactRow] = []
    pending: list[tuple[str, Path, Path]] = []
    with tempfile.TemporaryDirectory(prefix="smt-impact-") as tmp:
        for entry in fleet.models():
            spec = entry.spec
            without = spec.without_technique(technique.name).as_dict()
            with_it = (spec if spec.uses_technique(technique.name) else spec.with_technique(technique.name)).as_dict()
            try:
                check_spec(fleet.root, with_it, entry.name, entry.directory)
            except SmtError as error:
                rows.append(ImpactRow(entry.name, skipped=str(error).removeprefix(f"{entry.name}: ")))
                continue
            folders = []
            for label, answers in (("without", without), ("with", with_it)):
                folder = Path(tmp) / label / entry.name
                write_tree(folder, render_model(fleet.root, answers, entry.name, entry.directory), yaml.safe_dump(answers))
                folders.append(folder)
            pending.append((entry.name, folders[0], folders[1]))
            print(f"rendered {entry.name} without and with {technique.name}", file=sys.stderr)
        if pending:
            measured = measure_folders(
                [folder for _, *pair in pending for folder in pair], f"measuring {technique.name}", runtime_source(fleet.root)
            )
            for model, before, after in pending:
                b, a = measured[str(before)], measured[str(after)]
                rows.append(ImpactRow(model, b["parameters"], a["parameters"], b["mflops"], a["mflops"]))
    return sorted(rows, key=lambda row: row.model)
