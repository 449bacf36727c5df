"""Fleet: the SMT repository's models, one folder per model under ``generated/``, each with its spec."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .engine import SmtError
from .engine.paths import TEMPLATE_DIR
from .engine.store import load_yaml

GENERATED_DIR = "generated"
ANSWERS_FILE = ".copier-answers.yml"
TEMPLATE_CONFIG = Path(TEMPLATE_DIR) / "copier.yml"


@dataclass(frozen=True)
class ModelAnswers:
    """A model's spec as its Copier answers (keys in file order, Copier's own ``_`` keys kept),
    validated on creation; edits return a new, validated spec.

    The one place that reads and edits a spec's ``techniques`` list: adopt, drop, preview, impact,
    review, blame and status all go through it.
    """

    model: str
    answers: Mapping[str, Any]

    def __post_init__(self) -> None:
        from . import engine  # noqa: PLC0415 - pydantic; only commands that read techniques need it

        engine.validate_spec(dict(self.answers), self.model)  # raises SmtError naming model and field

    @property
    def uses(self) -> list[dict[str, Any]]:
        """The technique uses, in the spec's order, each ``{"name": ...}`` plus ``"params"`` when set."""
        return [dict(use) for use in self.answers.get("techniques") or []]

    @property
    def technique_names(self) -> list[str]:
        return [use["name"] for use in self.uses]

    def uses_technique(self, name: str) -> bool:
        return name in self.technique_names

    def params_of(self, name: str) -> dict[str, Any]:
        """The params the spec gives technique ``name`` (empty when it gives none or does not use it)."""
        return next((dict(use.get("params") or {}) for use in self.uses if use["name"] == name), {})

    def with_techniques(self, uses: list[dict[str, Any]]) -> ModelAnswers:
        return ModelAnswers(self.model, {**self.answers, "techniques": uses})

    def with_technique(self, name: str, params: Mapping[str, Any] | None = None) -> ModelAnswers:
        """The spec using technique ``name``: appended, or its params replaced when it is already used."""
        use: dict[str, Any] = {"name": name, "params": dict(params)} if params else {"name": name}
        uses = self.uses
        if self.uses_technique(name):
            return self.with_techniques([use if old["name"] == name else old for old in uses])
        return self.with_techniques([*uses, use])

    def without_technique(self, name: str) -> ModelAnswers:
        return self.with_techniques([use for use in self.uses if use["name"] != name])

    def without_techniques(self) -> ModelAnswers:
        """The plain template's model: the same spec with no technique."""
        return self.with_techniques([])

    def as_dict(self) -> dict[str, Any]:
        return dict(self.answers)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the fleet: its name, its folder and its spec (Copier answers)."""

    name: str
    directory: Path
    answers: dict[str, Any]

    @property
    def spec_path(self) -> Path:
        return self.directory / ANSWERS_FILE

    @cached_property
    def spec(self) -> ModelAnswers:
        """The validated spec (raises SmtError naming the model and the field when it is invalid)."""
        return ModelAnswers(self.name, self.answers)


def find_root(start: Path | None = None) -> Path:
    """The SMT repository root: $SMT_ROOT, else the nearest folder above ``start`` with the template."""
    if env := os.environ.get("SMT_ROOT"):
        root = Path(env).resolve()
        if not (root / TEMPLATE_CONFIG).is_file():
            raise SmtError(f"SMT_ROOT={env}: no {TEMPLATE_CONFIG} there; point it at an SMT repository")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / TEMPLATE_CONFIG).is_file():
            return folder
    raise SmtError(f"{here}: not inside an SMT repository (no {TEMPLATE_CONFIG} found above it); cd into one or set SMT_ROOT")


def load_answers(path: Path) -> dict[str, Any]:
    """Read a spec YAML file; raise SmtError naming the file when it is unreadable, too large, not
    UTF-8, malformed or not a mapping (see ``engine.store.load_yaml``)."""
    data = load_yaml(path, "the spec")
    if not isinstance(data, dict):
        raise SmtError(f"{path}: a spec must be a YAML mapping of answers (model_name, objectives, ...); see README, The spec")
    return data


class Fleet:
    """The models under ``<root>/generated``."""

    def __init__(self, root: Path, load: Callable[[Path], dict[str, Any]] = load_answers) -> None:
        self.root = root
        self.directory = root / GENERATED_DIR
        self._load = load  # reads a spec file; smt passes one that remembers parsed specs by content

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        # Hidden folders are never models: `.NAME.smt-new` / `.NAME.smt-old` are a swap in progress.
        return sorted(path.parent.name for path in self.directory.glob(f"*/{ANSWERS_FILE}") if not path.parent.name.startswith("."))

    def model(self, name: str) -> ModelEntry:
        directory = self.directory / name
        path = directory / ANSWERS_FILE
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise SmtError(
                f"{name}: no such model (no {GENERATED_DIR}/{name}/{ANSWERS_FILE}); use one of: {known}; "
                f"or create it with `smt new {name} --data-file SPEC.yml`"
            )
        answers = self._load(path)
        declared = answers.get("model_name")
        if declared != name:
            raise SmtError(f"{name}: {GENERATED_DIR}/{name}/{ANSWERS_FILE}: model_name is {declared!r} but the folder is {name!r}; make them equal")
        return ModelEntry(name, directory, answers)

    def models(self, names: list[str] | None = None) -> list[ModelEntry]:
        """The named models (all when ``names`` is empty), in name order, each validated to load."""
        chosen = sorted(dict.fromkeys(names)) if names else self.names()
        return [self.model(name) for name in chosen]
