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
from .reference import REFERENCE_SPEC, strip_header  # noqa: F401 - part of this module's API
from .render import render_model
from . import reference
from .sync import write_tree

UPDATE_ENV = "SMT_UPDATE_GOLDEN"
GOLDEN_DIR = "golden"


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
