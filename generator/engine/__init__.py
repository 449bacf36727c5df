"""The SMT engine: spec validation, technique loading and application, formatting and headers.

This package is loaded by the template's Jinja extension (``template_repo/extensions/smt_jinja.py``)
from the template's own checkout, so every module here uses relative imports only and needs nothing
beyond libcst, black, pydantic and PyYAML (no PyTorch).
"""

from __future__ import annotations

from .errors import SmtError
from .pipeline import (
    SPEC_KEYS,
    FileRenderer,
    TemplateSources,
    answer_problem,
    describe_plan,
    finish_file,
    load_local_techniques,
    load_sources,
    plan_for,
    plan_techniques,
    renderer_for,
    trace_file,
    use_store,
)
from .spec import ModelSpec, spec_field_error, validate_spec
from .technique import AppliedTechnique, Technique, load_library

__all__ = [
    "SPEC_KEYS",
    "AppliedTechnique",
    "FileRenderer",
    "ModelSpec",
    "SmtError",
    "Technique",
    "TemplateSources",
    "answer_problem",
    "describe_plan",
    "finish_file",
    "load_library",
    "load_local_techniques",
    "plan_for",
    "trace_file",
    "use_store",
    "load_sources",
    "plan_techniques",
    "renderer_for",
    "spec_field_error",
    "validate_spec",
]
