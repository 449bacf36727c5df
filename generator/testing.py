"""Test helpers for technique authors: golden before/after snapshots, a small probe spec, building
a real model package from it, batches of its synthetic data, and a check that it serves.

    from generator.testing import assert_golden, build_probe, probe_spec, random_batch

    def test_golden():
        assert_golden(Path(__file__).parent)        # SMT_UPDATE_GOLDEN=1 rewrites the snapshots

    def test_behaviour(tmp_path):
        # Rendered with the real pipeline, imported, and its RankingModel built as a run starts it.
        pkg, model = build_probe(probe_spec("dcn_v2", {"num_cross_layers": 2}), tmp_path)
        batch = random_batch(pkg.config.ModelConfig(), batch_size=4)
        logits = model(batch.dense, batch.sparse)   # B X T

Building a package needs only the generator; random_batch and the package's own modules need the
runtime (smt_runtime) and TorchRec installed.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

from .engine.header import strip_header  # noqa: F401 - technique tests import it from here
from .engine.layout import format_python
from .engine.pipeline import apply_technique, load_sources
from .engine.technique import load_technique
from .fleet import find_root
from .reference import REFERENCE_SPEC, strip_header  # noqa: F401 - part of this module's API
from .render import render_model
from . import reference
from .sync import write_tree

if TYPE_CHECKING:  # the runtime needs torch; importing this module does not
    from smt_runtime.batch import Batch

UPDATE_ENV = "SMT_UPDATE_GOLDEN"
GOLDEN_DIR = "golden"
# The probe model of probe_spec: the reference model (golden snapshots) with one objective. F = 3
# sparse features (two of width 16, one multi-valued of width 8), D = 16, N = 2 dense features, T = 1:
# small enough to build and train in seconds.
PROBE_SPEC: dict[str, Any] = {
    **REFERENCE_SPEC,
    "description": "Probe model of a technique's tests.",
    "objectives": REFERENCE_SPEC["objectives"][:1],
    "hyperparameters": {},
}
# The modules of a generated model package (the rest is the runtime's, smt_runtime).
MODEL_MODULES = ("config", "features", "model", "train")


def repo_root() -> Path:
    return find_root(Path(__file__).resolve().parent)


def render_reference(target: str) -> str:
    """The template's ``target`` module for REFERENCE_SPEC, with no technique and no header."""
    return reference.render_reference(repo_root(), target)


def _refresh_command(technique_dir: Path) -> str:
    try:
        folder = technique_dir.resolve().relative_to(repo_root())
    except ValueError:
        folder = technique_dir
    return f"{UPDATE_ENV}=1 python -m pytest {folder} -q -p no:cacheprovider"


def _differs(name: str, expected: str, actual: str, path: Path, what: str, refresh: str) -> AssertionError:
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), str(path), what))
    return AssertionError(f"{name}: {path} differs from {what}; review the diff, then refresh the snapshots with `{refresh}`\n{diff}")


def assert_golden(technique_dir: Path) -> None:
    """Check golden/before/<target> against a fresh render of the template, then the technique's
    patch applied to it against golden/after/<target>, and that a second application changes nothing.

    A template change therefore fails here for every technique patching the changed module. With
    SMT_UPDATE_GOLDEN=1 both snapshots are (re)written from the current template instead; review
    and commit them.
    """
    technique_dir = Path(technique_dir)
    technique = load_technique(technique_dir)
    sources = load_sources(repo_root())
    update = os.environ.get(UPDATE_ENV) == "1"
    refresh = _refresh_command(technique_dir)
    for target, _source in technique.patches:
        before_path = technique_dir / GOLDEN_DIR / "before" / target
        after_path = technique_dir / GOLDEN_DIR / "after" / target
        template = render_reference(target)
        if update:
            before_path.parent.mkdir(parents=True, exist_ok=True)
            before_path.write_text(template)
        assert before_path.is_file(), f"{before_path} missing; create it with `{refresh}`"
        if before_path.read_text() != template:
            raise _differs(technique.name, before_path.read_text(), template, before_path, f"the template's {target} (fresh render)", refresh)
        points = sources.extension_points.get(target, {})
        params = {param.name: param.default for param in technique.params}

        def apply(text: str) -> str:
            changed = apply_technique(technique, params, target, text, points)
            assert changed is not None, f"{technique.name} does not change {target}"
            return format_python(changed)

        after = apply(template)
        if update:
            after_path.parent.mkdir(parents=True, exist_ok=True)
            after_path.write_text(after)
        assert after_path.is_file(), f"{after_path} missing; create it with `{refresh}`"
        expected = after_path.read_text()
        if after != expected:
            raise _differs(technique.name, expected, after, after_path, f"the patch applied to the template's {target}", refresh)
        assert apply(after) == after, f"{technique.name}: applying the patch twice to {target} changes it again"


def build_model(spec: dict[str, Any], tmp_path: Path) -> ModuleType:
    """Render ``spec`` with the real pipeline into ``tmp_path`` and import the model package."""
    name = spec["model_name"]
    tree = render_model(repo_root(), spec, name)
    directory = Path(tmp_path) / name
    write_tree(directory, tree, yaml.safe_dump(spec, sort_keys=False))
    return import_model(directory)


def probe_spec(
    technique: str | None = None, params: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A small model's spec (PROBE_SPEC) with ``technique`` applied with ``params``, and any spec
    field replaced by ``overrides``; the model is named ``<technique>_probe``.

    Example::

        probe_spec("mmoe", {"num_experts": 3}, objectives=[{"name": "click", "weight": 1.0}, ...])

    Raises:
        KeyError: an override names no field of the spec (a typo would otherwise test the default).
    """
    unknown = sorted(set(overrides) - {"model_name", *PROBE_SPEC})
    if unknown:
        raise KeyError(
            f"probe_spec: no spec field {', '.join(unknown)}; fields: model_name, {', '.join(PROBE_SPEC)}"
        )
    spec = {"model_name": f"{technique or 'template'}_probe", **copy.deepcopy(PROBE_SPEC)}
    if technique is not None:
        spec["techniques"] = [{"name": technique, "params": dict(params or {})}]
    spec.update(copy.deepcopy(overrides))
    return spec


def build_probe(spec: dict[str, Any], tmp_path: Path) -> tuple[ModuleType, Any]:
    """``spec`` rendered and imported (build_model), and its RankingModel as a training run starts
    it: unsharded, initialised by the runtime from config.seed (``smt_runtime.training.build_model``).

    Returns:
        (the model package, its RankingModel for the spec's ModelConfig()).
    """
    from smt_runtime.training import build_model as build_ranking_model  # noqa: PLC0415 - needs torch

    package = build_model(spec, tmp_path)
    return package, build_ranking_model(package.train.PARTS, package.config.ModelConfig())


def random_batch(config: Any, batch_size: int = 64, seed: int = 0) -> Batch:
    """A batch of ``batch_size`` examples of the model's synthetic data (every feature, bags of the
    configured lengths, labels at the configured rates), drawn from ``seed``: the runtime's
    ``smt_runtime.testing.random_batch``, which the generated packages' contract tests use.

    Call the model with ``model(batch.dense, batch.sparse)`` (B X N and a KeyedJaggedTensor).
    """
    from smt_runtime.testing import random_batch as runtime_random_batch  # noqa: PLC0415 - needs torch

    return runtime_random_batch(config, batch_size, seed)


def assert_serves(model: Any, config: Any, folder: Path) -> None:
    """Require the capacity report to measure the model's FLOPs and the model to export with
    torch.export (no TorchScript fallback) to ``folder``/model.pt2, the reloaded file computing the
    eager model's logits: what serving needs of a technique's modules (smt_runtime.serve)."""
    from smt_runtime import serve  # noqa: PLC0415 - needs torch

    assert serve.capacity_report(model, config)["mflops_per_example"] > 0
    result = serve.export_model(model, config, Path(folder) / "model.pt2")
    assert (result.format, result.fallback_reason) == ("torch.export", "")
    assert result.max_abs_diff <= 1e-5


def import_model(directory: Path) -> ModuleType:
    """Import the model package in ``directory`` (a generated model folder), freshly."""
    name = Path(directory).name
    for module in [key for key in sys.modules if key == name or key.startswith(f"{name}.")]:
        del sys.modules[module]
    sys.path.insert(0, str(directory))
    try:
        package = importlib.import_module(name)
        for part in MODEL_MODULES:
            importlib.import_module(f"{name}.{part}")
    finally:
        sys.path.remove(str(directory))
    return package
