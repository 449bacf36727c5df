"""render_model: a model's spec -> its generated files, through Copier and the template's techniques.

This is the same rendering path as ``copier copy``: Copier renders the working tree's template and
the template's own Jinja extension applies the techniques. It runs in-process, so the engine's memo is
shared across models: files that render to the same text for several models are patched and
formatted once.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from copier import run_copy

from . import engine
from .engine import SmtError
from .engine.pipeline import LOCAL_TECHNIQUES_DIR
from .fleet import ANSWERS_FILE

TEMPLATE_DIR = "template_repo"

RenderedTree = dict[str, str]  # path relative to the model folder -> file text


def check_spec(root: Path, answers: dict[str, Any], model: str, model_dir: Path | None = None) -> tuple[engine.AppliedTechnique, ...]:
    """Validate a spec and plan its techniques without rendering; raise SmtError on a problem."""
    engine.validate_spec(answers, model)
    return engine.plan_for(root, answers, model_dir)[1]


def render_model(root: Path, answers: dict[str, Any], model: str, model_dir: Path | None = None) -> RenderedTree:
    """Render one model from the template in ``root``'s working tree.

    ``model_dir`` is the model's folder, whose ``local_techniques/`` (if any) are applied too; the
    result excludes the inputs (the answers file and local techniques).
    """
    check_spec(root, answers, model, model_dir)
    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    with tempfile.TemporaryDirectory(prefix=f"smt-{model}-") as tmp:
        local = model_dir / LOCAL_TECHNIQUES_DIR if model_dir is not None else None
        if local is not None and local.is_dir():
            shutil.copytree(local, Path(tmp) / LOCAL_TECHNIQUES_DIR, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            run_copy(
                str(root / TEMPLATE_DIR),
                tmp,
                data=data,
                defaults=True,
                overwrite=True,
                unsafe=True,
                quiet=True,
            )
        except Exception as exc:  # Copier wraps nothing of ours; SmtError may come from a private engine copy
            if getattr(exc, "is_smt_error", False):
                raise SmtError(str(exc)) from None
            raise
        tree = {
            path.relative_to(tmp).as_posix(): path.read_text()
            for path in sorted(Path(tmp).rglob("*"))
            if path.is_file() and path.relative_to(tmp).parts[0] != LOCAL_TECHNIQUES_DIR
        }
    tree.pop(ANSWERS_FILE, None)
    return tree
