"""The SMT engine: spec validation, technique loading and application, formatting and headers.

This package is loaded by the template's Jinja extension (``template_repo/extensions/smt_jinja.py``)
from the template's own checkout, so every module here uses relative imports only and needs nothing
beyond libcst, black, pydantic and PyYAML (no PyTorch).

Names are imported on first use (PEP 562): libcst, black and pydantic take about a second to import,
and ``smt check`` on a fleet the cache vouches for needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SmtError
from .paths import LOCAL_TECHNIQUES_DIR, TECHNIQUES_DIR, TEMPLATE_DIR

_LAZY = {
    "SPEC_KEYS": "pipeline",
    "FileRenderer": "pipeline",
    "TemplateSources": "pipeline",
    "answer_problem": "pipeline",
    "describe_plan": "pipeline",
    "finish_file": "pipeline",
    "load_local_techniques": "pipeline",
    "load_sources": "pipeline",
    "plan_for": "pipeline",
    "plan_techniques": "pipeline",
    "renderer_for": "pipeline",
    "sources_pinned": "pipeline",
    "trace_file": "pipeline",
    "use_store": "store",
    "ModelSpec": "spec",
    "spec_field_error": "spec",
    "validate_spec": "spec",
    "AppliedTechnique": "technique",
    "Technique": "technique",
    "load_library": "technique",
}
_SUBMODULES = {"store", "pipeline", "spec", "technique", "patch", "layout", "header", "config_params", "shapes"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["LOCAL_TECHNIQUES_DIR", "TECHNIQUES_DIR", "TEMPLATE_DIR", "SmtError", *_LAZY]
