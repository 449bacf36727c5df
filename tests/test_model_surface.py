"""A generated package is its model's own code over the runtime (issue 20): at most 1,000 lines of
Python outside its tests, and no file of more than 40 lines the same in every model of the fleet
once the model's name is set aside (such a file is framework code, and belongs in smt_runtime)."""

from __future__ import annotations

from pathlib import Path

from support import REPO

GENERATED = REPO / "generated"
MODELS = sorted(path.parent.name for path in GENERATED.glob("*/.copier-answers.yml"))
MAX_MODEL_LINES = 1000
MAX_SHARED_LINES = 40


def _files(model: str) -> dict[str, str]:
    folder = GENERATED / model
    return {
        str(path.relative_to(folder)).replace(model, "<model>"): path.read_text().replace(model, "<model>")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not {"__pycache__", "runs", ".pytest_cache"} & set(path.parts)
    }


def test_each_package_is_at_most_a_thousand_lines_of_python_outside_its_tests() -> None:
    sizes = {
        model: sum(path.read_text().count("\n") for path in (GENERATED / model / model).rglob("*.py"))
        for model in MODELS
    }
    assert len(sizes) == 7 and all(0 < lines <= MAX_MODEL_LINES for lines in sizes.values()), sizes


def test_no_long_file_is_the_same_in_every_model() -> None:
    files = {model: _files(model) for model in MODELS}
    shared = set.intersection(*(set(texts) for texts in files.values()))
    identical = {
        path: files[MODELS[0]][path].count("\n")
        for path in shared
        if len({files[model][path] for model in MODELS}) == 1
    }
    assert identical, "the comparison found nothing at all: the fleet's files were not read"
    assert {path: lines for path, lines in identical.items() if lines > MAX_SHARED_LINES} == {}
