"""SMT's Jinja extension: applies techniques while Copier renders, so rendering stays a pure function
of (template commit, answers) for ``copier copy``, ``copier update`` and ``smt generate`` alike.

It loads the engine from this checkout of the SMT repository (``../../generator/engine``), never from
whatever version happens to be installed: during ``copier update`` the old and the new release are
rendered in one process, and each must apply its own techniques with its own engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from jinja2 import Environment, pass_context
from jinja2.ext import Extension
from jinja2.runtime import Context

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_DIR = REPO_ROOT / "generator" / "engine"


_IS_THIS_ENGINE: dict[str, bool] = {}  # an imported engine's __init__ path -> whether it is ENGINE_DIR's


def load_engine() -> ModuleType:
    """This checkout's engine: the imported ``generator.engine`` if it is this very folder, else a
    private copy under a name unique to the folder (so two releases never share modules)."""
    imported = sys.modules.get("generator.engine")
    if imported is not None:
        where = imported.__file__ or ""
        if where not in _IS_THIS_ENGINE:  # resolved once: this runs for every rendered file
            _IS_THIS_ENGINE[where] = Path(where).resolve().parent == ENGINE_DIR.resolve()
        if _IS_THIS_ENGINE[where]:
            return imported
    name = "_smt_engine_" + hashlib.sha256(str(ENGINE_DIR).encode()).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ENGINE_DIR / "__init__.py", submodule_search_locations=[str(ENGINE_DIR)]
        )
        if spec is None or spec.loader is None:
            raise RuntimeError(f"SMT engine not found at {ENGINE_DIR}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _answers(context: Context, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: context.get(key) for key in keys if context.get(key) is not None}


def _copier_operation() -> str | None:
    """"copy" or "update" while Copier runs (its context variable; copier is pinned to 9.19.1)."""
    try:
        from copier._main import _operation  # noqa: PLC0415 - private, read only
    except ImportError:
        return None
    return _operation.get(None)


def _model_dir(context: Context) -> Path | None:
    """The model's folder, where its local techniques live next to the spec.

    Copier renders into the destination, except during ``copier update``, which renders the old and
    the new release into empty temporary folders: then the model repo is the working directory
    (``copier update`` is run from it), so both sides of the merge apply its local techniques.
    """
    conf = context.get("_copier_conf")
    try:
        destination = _resolved(str(conf["dst_path"])) if conf is not None else None
    except (KeyError, TypeError):
        return None
    local = load_engine().pipeline.LOCAL_TECHNIQUES_DIR
    if destination is not None and _copier_operation() == "update" and not (destination / local).is_dir():
        if (Path.cwd() / local).is_dir():
            return Path.cwd()
    return destination


_RESOLVED: dict[str, Path] = {}


def _resolved(path: str) -> Path:
    """``Path(path).resolve()``, once per destination (it is asked for every rendered file)."""
    if path not in _RESOLVED:
        _RESOLVED[path] = Path(path).resolve()
    return _RESOLVED[path]


@pass_context
def smt_file(context: Context, text: str, target: str) -> str:
    """Filter wrapped around every template file: techniques, black, header."""
    engine = load_engine()
    return engine.finish_file(REPO_ROOT, _answers(context, engine.SPEC_KEYS), target, text, _model_dir(context))


@pass_context
def smt_plan(context: Context) -> list[dict[str, Any]]:
    """The model's techniques in application order: name, version, summary, reference, params."""
    engine = load_engine()
    return engine.describe_plan(REPO_ROOT, _answers(context, engine.SPEC_KEYS), _model_dir(context))


def smt_template_version() -> str:
    """The one line per model that records the template version (``__template_version__ = "X"``)."""
    engine = load_engine()
    return engine.header.template_version_line(engine.load_sources(REPO_ROOT).version)


def smt_version() -> str:
    """The template version, which is also the version of the runtime a model pins."""
    return load_engine().load_sources(REPO_ROOT).version


@pass_context
def smt_spec_error(context: Context, field: str) -> str:
    """Copier validator: the first problem with ``field`` given the answers so far, or ''."""
    engine = load_engine()
    return engine.answer_problem(REPO_ROOT, _answers(context, engine.SPEC_KEYS), field, _model_dir(context))


class SmtExtension(Extension):
    """Registers ``smt_file`` (filter), ``smt_plan``, ``smt_spec_error``, ``smt_template_version``
    and ``smt_version`` (globals) for the template."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["smt_file"] = smt_file
        environment.globals["smt_spec_error"] = smt_spec_error
        environment.globals["smt_plan"] = smt_plan
        environment.globals["smt_template_version"] = smt_template_version
        environment.globals["smt_version"] = smt_version
