"""Each model's latest training run: the newest ``metrics.json`` of its runs.

A generated model trains into ``runs/<model>-<time>/`` of the directory it runs in (``smt train``
from the repository root, ``python -m MODEL train`` inside ``generated/<model>/``), so both
``generated/<model>/runs/*/metrics.json`` and ``runs/*/metrics.json`` at the root are read; a run
belongs to the model its ``model_name`` names. "Latest" is the newest file modification time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..fleet import GENERATED_DIR
from .evidence import finite_number

METRICS_FILE = "metrics.json"
_SHOWN = ("logloss", "ne", "auc", "calibration")


def _summary(path: Path, data: Mapping[str, Any], root: Path) -> dict[str, Any]:
    metrics = data.get("metrics") if isinstance(data.get("metrics"), Mapping) else {}
    splits = {
        split: {
            objective: {name: finite_number(values.get(name)) for name in _SHOWN}
            for objective, values in (by_objective or {}).items()
            if isinstance(values, Mapping)
        }
        for split, by_objective in metrics.items()
        if isinstance(by_objective, Mapping)
    }
    try:
        where = path.parent.relative_to(root).as_posix()
    except ValueError:
        where = path.parent.as_posix()
    return {
        "run": where,
        "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime(path.stat().st_mtime)),
        "steps": data.get("steps"),
        "epochs": data.get("epochs"),
        "best_step": data.get("best_step"),
        "stopped_early": data.get("stopped_early"),
        "train_seconds": finite_number(data.get("train_seconds")),
        "examples_per_second": finite_number(data.get("train_examples_per_second")),
        "metrics": splits,
    }


def latest_runs(root: Path, models: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Model -> a summary of its newest metrics.json (models without a run are left out)."""
    wanted = set(models)
    candidates = list((root / "runs").glob(f"*/{METRICS_FILE}"))
    for model in wanted:
        candidates.extend((root / GENERATED_DIR / model / "runs").glob(f"*/{METRICS_FILE}"))
    newest: dict[str, tuple[float, Path, Mapping[str, Any]]] = {}
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a run still writing, or not a run: not the latest finished one
        model = data.get("model_name") if isinstance(data, Mapping) else None
        if model in wanted and (model not in newest or mtime > newest[model][0]):
            newest[model] = (mtime, path, data)
    return {model: _summary(path, data, root) for model, (_, path, data) in sorted(newest.items())}
