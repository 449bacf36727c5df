"""Baseline and candidate of each model, rendered into a scratch folder (never into generated/).

A technique change renders the candidate through ``adoption.plan_adoption`` (the path of
``smt adopt``/``smt preview``) and the baseline fresh from the spec, as ``smt preview`` does, so
drift in generated/ never counts as the change's doing. A template change (``--against REF``) takes
the baseline from ``generated/`` as committed at REF (``review.committed_tree``, the path of
``smt diff --since``) and the candidate fresh from the working tree.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import adoption, review, trials
from ..engine import SmtError, load_sources
from ..fleet import Fleet, ModelEntry
from ..render import RenderedTree, render_model
from ..sync import write_tree
from .gate import change_label

MLP_WIDTHS = ("dense_arch_layers", "over_arch_layers", "tower_layers")
DEFAULT_WIDTHS = {"dense_arch_layers": [64], "over_arch_layers": [128, 64], "tower_layers": [32]}


@dataclass(frozen=True)
class Change:
    """What is qualified: a technique with params, or the working tree against a git ref."""

    technique: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    against: str | None = None

    @property
    def label(self) -> str:
        if self.technique:
            return change_label(self.technique, self.params)
        return f"working tree vs {self.against}"

    @property
    def slug(self) -> str:
        """A file-name-safe label."""
        text = self.label if self.technique else f"template-vs-{self.against}"
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.replace(":", "__").replace("=", "-"))


def parse_change(text: str | None, against: str | None) -> Change:
    """``dcn_v2`` or ``dcn_v2:num_cross_layers=3,low_rank=8`` (YAML values), or ``--against REF``."""
    if against and text:
        raise SmtError("give a technique (CHANGE) or --against REF, not both")
    if against:
        return Change(against=against)
    if not text:
        raise SmtError("name the change: a technique (e.g. dcn_v2 or dcn_v2:num_cross_layers=3) or --against REF")
    name, _, rest = text.partition(":")
    params = adoption.parse_params([item for item in rest.split(",") if item]) if rest else {}
    return Change(technique=name.strip(), params=params)


@dataclass
class Variant:
    """One model's baseline and candidate, rendered and written to scratch folders."""

    entry: ModelEntry
    baseline: RenderedTree
    candidate: RenderedTree
    baseline_dir: Path
    candidate_dir: Path
    candidate_answers: dict[str, Any]
    note: str = ""
    baseline_runtime: Path | None = None  # the folder holding the baseline's smt_runtime
    candidate_runtime: Path | None = None


def _write(folder: Path, tree: RenderedTree, answers: dict[str, Any]) -> Path:
    write_tree(folder, tree, yaml.safe_dump(answers, sort_keys=False))
    return folder


def runtime_at(root: Path, ref: str, scratch: Path) -> Path | None:
    """The runtime package as committed at ``ref``, extracted under ``scratch`` (None when that ref
    has none: its models carry their framework code themselves)."""
    package = f"{trials.RUNTIME_DIR}/smt_runtime"
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "--", package], cwd=root, capture_output=True)
    if archive.returncode != 0:
        return None
    target = scratch / f"runtime-{ref.replace('/', '_')}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / trials.RUNTIME_DIR


def render_variants(fleet: Fleet, change: Change, entries: list[ModelEntry], scratch: Path) -> tuple[list[Variant], list[tuple[str, str]]]:
    """Render both sides of every model the change applies to; also (model, reason) for the others.
    Each side trains with its own runtime: the working tree's, or the ref's for ``--against``."""
    variants, skipped = [], []
    working_runtime = trials.runtime_source(fleet.root)
    baseline_runtime = working_runtime if change.technique else runtime_at(fleet.root, change.against or "HEAD", scratch)
    if change.technique:
        library = load_sources(fleet.root).library
        if change.technique not in library:
            raise SmtError(f"{change.technique}: unknown technique (see `smt techniques`)")
        outcome = adoption.plan_adoption(fleet, entries, change.technique, change.params, drop=False)
        skipped = [*outcome.not_applicable, *outcome.unchanged]
        for entry, answers, tree in outcome.changed:
            baseline = render_model(fleet.root, entry.answers, entry.name, entry.directory)
            variants.append(
                Variant(
                    entry, baseline, tree,
                    _write(scratch / "baseline" / entry.name, baseline, entry.answers),
                    _write(scratch / "candidate" / entry.name, tree, answers),
                    answers,
                    baseline_runtime=baseline_runtime,
                    candidate_runtime=working_runtime,
                )
            )
            print(f"rendered {entry.name}: baseline and candidate", file=sys.stderr)
    else:
        for entry in entries:
            baseline = review.committed_tree(fleet.root, change.against or "HEAD", entry.name)
            if not baseline:
                skipped.append((entry.name, f"not in generated/ at {change.against}"))
                continue
            candidate = render_model(fleet.root, entry.answers, entry.name, entry.directory)
            same_runtime = trials.runtime_digest(baseline_runtime) == trials.runtime_digest(working_runtime)
            if baseline == candidate and same_runtime:
                skipped.append((entry.name, f"unchanged since {change.against}"))
                continue
            variants.append(
                Variant(
                    entry, baseline, candidate,
                    _write(scratch / "baseline" / entry.name, baseline, entry.answers),
                    _write(scratch / "candidate" / entry.name, candidate, entry.answers),
                    entry.answers,
                    baseline_runtime=baseline_runtime,
                    candidate_runtime=working_runtime,
                )
            )
            print(f"rendered {entry.name}: {change.against} and the working tree", file=sys.stderr)
    return variants, skipped


_SHRINK = """
import importlib, json, sys
from dataclasses import replace
folder, target = sys.argv[1], float(sys.argv[2])
sys.path.insert(0, folder)
pkg = importlib.import_module(folder.rstrip("/").rsplit("/", 1)[-1])
base = pkg.config.ModelConfig()
names = ("dense_arch_layers", "over_arch_layers", "tower_layers")
def widths(scale):
    return {n: tuple(max(1, int(round(w * scale))) for w in getattr(base, n)) for n in names}
def mflops(scale):
    from smt_runtime.serve import capacity_report
    from smt_runtime.training import build_model
    config = replace(base, **widths(scale))
    return capacity_report(build_model(pkg.PARTS, config), config)["mflops_per_example"]
low, high = 0.0, 1.0
for _ in range(20):
    middle = (low + high) / 2
    low, high = (middle, high) if mflops(middle) <= target else (low, middle)
print(json.dumps({"scale": low, "widths": {n: list(v) for n, v in widths(low).items()}, "mflops": mflops(low)}))
"""


def shrink_to(variant: Variant, target_mflops: float) -> dict[str, Any]:
    """Shrink the candidate's MLP widths (dense, over and tower layers, one common scale) until its
    MFLOPs per example are at most ``target_mflops``; re-render it and return what was chosen."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(variant.candidate_runtime or ""), os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.run(
        [sys.executable, "-c", _SHRINK, str(variant.candidate_dir), repr(target_mflops)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SmtError(f"{variant.entry.name}: capacity-neutral shrink failed: {proc.stderr.strip().splitlines()[-1:]}")
    chosen = json.loads(proc.stdout)
    hyper = dict(variant.candidate_answers.get("hyperparameters") or {})
    hyper.update(chosen["widths"])
    answers = {**variant.candidate_answers, "hyperparameters": hyper}
    tree = render_model(variant.entry.directory.parent.parent, answers, variant.entry.name, variant.entry.directory)
    variant.candidate, variant.candidate_answers = tree, answers
    _write(variant.candidate_dir, tree, answers)
    variant.note = f"capacity-neutral: MLP widths x{chosen['scale']:.3f} ({', '.join(f'{k}={v}' for k, v in chosen['widths'].items())})"
    return chosen
