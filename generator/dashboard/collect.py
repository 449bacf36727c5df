"""Gather everything the dashboard shows into one JSON-able mapping (plus the plot files to copy).

The caller supplies what needs the heavier machinery: each model's sync state (the number of files
that differ from a fresh regeneration, as ``smt check`` and ``smt status`` compute it) and, when
measured, its capacity rows (``generator.capacity``). Everything else is read here: specs, the
technique library, the technique versions each model's generated files carry (their headers), the
template releases (``releases``), qualification and tuning reports (``evidence``) and the latest
training runs (``runs``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, engine
from ..adoption import template_version_of
from ..capacity import CapacityRow
from ..engine.header import FileHeader
from ..fleet import Fleet, ModelEntry
from . import evidence, releases, runs

_HEADER_BYTES = 1024  # a header is three short lines at the top of a file


@dataclass
class Dashboard:
    """What ``write_dashboard`` writes: the page's data and the files to copy next to it."""

    data: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)  # path inside OUT -> source file

    @property
    def model_count(self) -> int:
        return len(self.data["models"])


def generated_versions(entry: ModelEntry) -> dict[str, str]:
    """Technique label -> version, as the headers of the model's generated package record them
    (``local:NAME`` for a model's local technique)."""
    versions: dict[str, str] = {}
    package = entry.directory / entry.name
    for path in sorted(package.glob("*.py")):
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                header = FileHeader.parse(handle.read(_HEADER_BYTES))
        except OSError:
            continue
        for label in header.techniques if header else ():
            name, _, version = label.partition(" ")
            versions.setdefault(name, version)
    return versions


def _capacity(row: CapacityRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "parameters": row.parameters,
        "embedding_parameters": row.embedding_parameters,
        "mflops": row.mflops_per_example,
        "max_params": row.max_params,
        "max_mflops": row.max_mflops_per_example,
        "params_share": row.parameters / row.max_params if row.max_params else None,
        "mflops_share": row.mflops_per_example / row.max_mflops_per_example if row.max_mflops_per_example else None,
        "within": row.within_budget,
    }


def _model(entry: ModelEntry, differing: int | None, capacity: CapacityRow | None, run: dict[str, Any] | None) -> dict[str, Any]:
    answers = entry.answers
    serving = answers.get("serving") or {}
    spec = entry.spec
    versions = generated_versions(entry)
    return {
        "name": entry.name,
        "description": answers.get("description") or "",
        "objectives": [o.get("name") for o in answers.get("objectives") or [] if isinstance(o, Mapping)],
        "sparse_features": len(answers.get("sparse_features") or []),
        "dense_features": len(answers.get("dense_features") or []),
        "max_params": serving.get("max_params"),
        "max_mflops": serving.get("max_mflops_per_example"),
        "template_version": template_version_of(entry.directory),
        "differing_files": differing,
        "techniques": {name: {"version": versions.get(name), "params": spec.params_of(name)} for name in spec.technique_names},
        "local_techniques": sorted(label.removeprefix("local:") for label in versions if label.startswith("local:")),
        "capacity": _capacity(capacity),
        "run": run,
    }


def collect_dashboard(
    fleet: Fleet,
    differing: Mapping[str, int],
    capacity: Sequence[CapacityRow] | None,
    capacity_note: str,
) -> Dashboard:
    """The dashboard of ``fleet``.

    Args:
        fleet: the repository's fleet.
        differing: model -> number of files that differ from a fresh regeneration (0: in sync).
        capacity: measured capacity rows, or None when capacity was not measured.
        capacity_note: why capacity was not measured, or how it was (shown on the page).
    """
    root = fleet.root
    sources = engine.load_sources(root)
    entries = fleet.models()
    names = [entry.name for entry in entries]
    by_capacity = {row.model: row for row in capacity or []}
    latest = runs.latest_runs(root, names)
    models = [_model(entry, differing.get(entry.name), by_capacity.get(entry.name), latest.get(entry.name)) for entry in entries]
    users: dict[str, int] = {}
    for model in models:
        for name in model["techniques"]:
            users[name] = users.get(name, 0) + 1
    techniques = [
        {
            "name": name,
            "version": str(technique.version),
            "summary": technique.summary,
            "reference": technique.reference,
            "params": [param.name for param in technique.params],
            "users": users.get(name, 0),
        }
        for name, technique in sorted(sources.library.items())
    ]
    pairs = {(model["name"], name) for model in models for name in model["techniques"]}
    qualifications, qualification_plots = evidence.qualifications(root)
    studies, tuning_plots = evidence.tuning_studies(root)
    data = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "smt_version": __version__,
        "template_version": sources.version,
        "repository": root.name,
        "techniques": techniques,
        "models": models,
        "capacity": {"measured": capacity is not None, "note": capacity_note},
        "runs": {"models_with_runs": len(latest)},
        "releases": releases.release_history(root, pairs, sources.version),
        "qualifications": qualifications,
        "tuning": studies,
    }
    return Dashboard(data, {**qualification_plots, **tuning_plots})
