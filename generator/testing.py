"""Test helpers for technique authors: golden before/after snapshots and building a real model.

    from generator.testing import assert_golden, build_model

    def test_golden():
        assert_golden(Path(__file__).parent)        # SMT_UPDATE_GOLDEN=1 rewrites the snapshots

    def test_behaviour(tmp_path):
        pkg = build_model({...spec...}, tmp_path)    # rendered with the real pipeline, then imported
        model = pkg.model.RankingModel(pkg.config.ModelConfig())
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .engine.header import strip_header  # noqa: F401 - technique tests import it from here
from .engine.layout import format_python
from .engine.pipeline import apply_technique, load_sources
from .engine.technique import load_technique
from .fleet import find_root
from .render import render_model
from .sync import write_tree

UPDATE_ENV = "SMT_UPDATE_GOLDEN"
GOLDEN_DIR = "golden"

# The model every technique's "before" snapshot is rendered from: two objectives, dense features and
# a multi-valued feature, so every technique's preconditions hold.
REFERENCE_SPEC: dict[str, Any] = {
    "model_name": "reference_model",
    "description": "Reference model for technique snapshots.",
    "objectives": [{"name": "click", "weight": 1.0}, {"name": "conversion", "weight": 2.0}],
    "sparse_features": [
        {"name": "user_id", "cardinality": 1000, "embedding_dim": 16, "multi_valued": False},
        {"name": "item_id", "cardinality": 500, "embedding_dim": 16, "multi_valued": False},
        {"name": "user_history", "cardinality": 500, "embedding_dim": 8, "multi_valued": True},
    ],
    "dense_features": [{"name": "price"}, {"name": "age_days"}],
    "serving": {"max_params": 1000000, "max_mflops_per_example": 5.0},
    "techniques": [],
}


def repo_root() -> Path:
    return find_root(Path(__file__).resolve().parent)


def render_reference(target: str) -> str:
    """The template's ``target`` module for REFERENCE_SPEC, with no technique and no header."""
    tree = render_model(repo_root(), REFERENCE_SPEC, REFERENCE_SPEC["model_name"])
    return strip_header(tree[f"{REFERENCE_SPEC['model_name']}/{target}"])


def assert_golden(technique_dir: Path) -> None:
    """Apply the technique's patches to golden/before/<target> and compare with golden/after/<target>.

    Also requires idempotence: applying the patch to its own output changes nothing. With
    SMT_UPDATE_GOLDEN=1 the snapshots are (re)written from the current template instead; review
    and commit them.
    """
    technique_dir = Path(technique_dir)
    technique = load_technique(technique_dir)
    sources = load_sources(repo_root())
    update = os.environ.get(UPDATE_ENV) == "1"
    for target, source in technique.patches:
        before_path = technique_dir / GOLDEN_DIR / "before" / target
        after_path = technique_dir / GOLDEN_DIR / "after" / target
        if update:
            before_path.parent.mkdir(parents=True, exist_ok=True)
            before_path.write_text(render_reference(target))
        assert before_path.is_file(), f"{before_path} missing; run the test with {UPDATE_ENV}=1 to create it"
        points = sources.extension_points.get(target, {})
        params = {param.name: param.default for param in technique.params}

        def apply(text: str) -> str:
            changed = apply_technique(technique, params, target, text, points)
            assert changed is not None, f"{technique.name} does not change {target}"
            return format_python(changed)

        after = apply(before_path.read_text())
        if update:
            after_path.parent.mkdir(parents=True, exist_ok=True)
            after_path.write_text(after)
        expected = after_path.read_text()
        if after != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), after.splitlines(True), "expected", "actual"))
            raise AssertionError(f"{technique.name}: {target} differs from {after_path}:\n{diff}")
        assert apply(after) == after, f"{technique.name}: applying the patch twice to {target} changes it again"


def build_model(spec: dict[str, Any], tmp_path: Path) -> ModuleType:
    """Render ``spec`` with the real pipeline into ``tmp_path`` and import the model package."""
    name = spec["model_name"]
    tree = render_model(repo_root(), spec, name)
    directory = Path(tmp_path) / name
    write_tree(directory, tree, yaml.safe_dump(spec, sort_keys=False))
    return import_model(directory)


def import_model(directory: Path) -> ModuleType:
    """Import the model package in ``directory`` (a generated model folder), freshly."""
    name = Path(directory).name
    for module in [key for key in sys.modules if key == name or key.startswith(f"{name}.")]:
        del sys.modules[module]
    sys.path.insert(0, str(directory))
    try:
        package = importlib.import_module(name)
        for part in ("config", "features", "model", "data", "train", "serve"):
            importlib.import_module(f"{name}.{part}")
    finally:
        sys.path.remove(str(directory))
    return package
