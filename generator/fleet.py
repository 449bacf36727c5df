"""Fleet: the SMT repository's models, one folder per model under ``generated/``, each with its spec."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import SmtError
from .engine.store import load_yaml

GENERATED_DIR = "generated"
ANSWERS_FILE = ".copier-answers.yml"
TEMPLATE_CONFIG = Path("template_repo") / "copier.yml"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the fleet: its name, its folder and its spec (Copier answers)."""

    name: str
    directory: Path
    answers: dict[str, Any]

    @property
    def spec_path(self) -> Path:
        return self.directory / ANSWERS_FILE


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
