"""The reference model: the template rendered with no technique, for golden snapshots and the lock.

Every technique's ``golden/before/`` snapshot is a module of this model, and ``smt techniques lock``
records a fingerprint of each template definition a technique replaces as rendered here.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from .cache import _write_atomically, hash_folder, state_dir
from .render import TEMPLATE_DIR, render_model

# Two objectives, dense features and a multi-valued feature, so every technique's preconditions hold.
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
_CACHE_FILE = "template_definitions.json"


def strip_header(text: str) -> str:
    """A generated file without SMT's header comment (the template's own text, after techniques)."""
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("# ") or lines[0].startswith("<!-- ")):
        lines.pop(0)
    return "".join(lines).lstrip("\n")


def render_reference(root: Path, target: str) -> str:
    """The template's ``target`` module for REFERENCE_SPEC, with no technique and no header."""
    tree = render_model(root, REFERENCE_SPEC, REFERENCE_SPEC["model_name"])
    return strip_header(tree[f"{REFERENCE_SPEC['model_name']}/{target}"])


def definition_fingerprints(source: str) -> dict[str, str]:
    """Top-level class and function name -> hash of its code, comments and formatting left out."""
    fingerprints = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            fingerprints[node.name] = hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:16]
    return fingerprints


def template_definitions(root: Path, targets: list[str]) -> dict[str, dict[str, str]]:
    """Fingerprints of the template's top-level definitions in ``targets``, as rendered for the
    reference model; cached in ``.smt/`` under a hash of ``template_repo/`` (a render takes seconds)."""
    digest = hash_folder(root / TEMPLATE_DIR)
    digest.update(json.dumps([REFERENCE_SPEC, sorted(targets), sys.version_info[:2]]).encode())
    key = digest.hexdigest()
    path = state_dir(root) / _CACHE_FILE
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["definitions"]
    except (OSError, ValueError, AttributeError):
        pass
    tree = render_model(root, REFERENCE_SPEC, REFERENCE_SPEC["model_name"])
    definitions = {
        target: definition_fingerprints(strip_header(tree[f"{REFERENCE_SPEC['model_name']}/{target}"])) for target in sorted(targets)
    }
    _write_atomically(path, json.dumps({"key": key, "definitions": definitions}).encode())
    return definitions
