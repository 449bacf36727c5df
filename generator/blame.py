"""smt blame: which technique, local technique or template file wrote a line of generated code.

The engine's steps are replayed for the one file: the template's text, then each technique in the
model's order. Every line of the final file is traced back through the steps with difflib; the step
where it first appears wrote it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from . import engine
from .engine import SmtError
from .fleet import GENERATED_DIR, Fleet
from .render import render_model
from .testing import strip_header

HEADER_LINES = 3


@dataclass(frozen=True)
class Attribution:
    """Who wrote one line: a technique (label and folder) or a template file."""

    line: int
    text: str
    author: str  # "template", "header", "hand edit" or a technique label such as "dcn_v2 1.0.0"
    source: str  # the file to edit to change the line


def template_source(model: str, relative: str) -> str:
    """The template file that renders ``relative`` (a path inside the model folder)."""
    parts = ["{{ model_name }}" if part == model else part.replace(model, "{{ model_name }}") for part in relative.split("/")]
    return "template_repo/template/" + "/".join(parts) + ".jinja"


_TARGET = re.compile(r"""smt_file\(\s*["']([^"']+)["']""")


def target_of(root: Path, model: str, relative: str) -> str:
    """The engine's target key of a generated file, as its template passes it to ``smt_file``."""
    template = root / template_source(model, relative)
    match = _TARGET.search(template.read_text()) if template.is_file() else None
    return match.group(1) if match else relative


def _trace_back(steps: list[tuple[str, str]], line_index: int) -> str:
    """The label of the step that introduced line ``line_index`` of the last step's text."""
    index = line_index
    for step in range(len(steps) - 1, 0, -1):
        older = steps[step - 1][1].splitlines()
        newer = steps[step][1].splitlines()
        matcher = difflib.SequenceMatcher(a=older, b=newer, autojunk=False)
        mapped = None
        for tag, a0, _, b0, b1 in matcher.get_opcodes():
            if b0 <= index < b1:
                mapped = a0 + (index - b0) if tag == "equal" else None
                break
        if mapped is None:
            return steps[step][0]
        index = mapped
    return steps[0][0]


def blame(root: Path, location: str) -> Attribution:
    """Attribute ``generated/<model>/<file>:<line>``; raise SmtError on a bad location."""
    path_text, _, line_text = location.rpartition(":")
    if not path_text or not line_text.isdigit() or int(line_text) < 1:
        raise SmtError(f"{location}: expected generated/<model>/<file>:<line> with a line number from 1")
    path = Path(path_text)
    parts = path.resolve().relative_to(root.resolve()).parts if path.is_absolute() else path.parts
    if len(parts) < 3 or parts[0] != GENERATED_DIR:
        raise SmtError(f"{location}: expected a file under {GENERATED_DIR}/<model>/")
    model, relative = parts[1], "/".join(parts[2:])
    entry = Fleet(root).model(model)
    file_path = entry.directory / relative
    if not file_path.is_file():
        raise SmtError(f"{location}: no such generated file")
    lines = file_path.read_text().splitlines()
    number = int(line_text)
    if number > len(lines):
        raise SmtError(f"{location}: the file has {len(lines)} lines")
    text = lines[number - 1]
    if number <= HEADER_LINES:
        return Attribution(number, text, "header", "generator/engine/layout.py")

    fresh = render_model(root, entry.answers, model, entry.directory)
    if fresh.get(relative) != file_path.read_text():
        rendered = fresh.get(relative, "").splitlines()
        if number > len(rendered) or rendered[number - 1] != text:
            return Attribution(number, text, "hand edit", f"{GENERATED_DIR}/{model}/{relative} differs from `smt diff`")
    source = template_source(model, relative)
    target = target_of(root, model, relative)
    _, plan = engine.plan_for(root, entry.answers, entry.directory)
    if not target.endswith(".py") or not plan:
        return Attribution(number, text, "template", source)

    bare = {key: value for key, value in entry.answers.items() if key != "techniques"}
    base = strip_header(render_model(root, {**bare, "techniques": []}, model)[relative])
    steps = engine.trace_file(engine.load_sources(root), target, base, plan)
    body_index = number - 1 - (len(lines) - len(steps[-1][1].splitlines()))
    if body_index < 0:
        return Attribution(number, text, "header", "generator/engine/layout.py")
    author = _trace_back(steps, body_index)
    if author == "template":
        return Attribution(number, text, "template", source)
    technique = next(a.technique for a in plan if a.technique.label == author)
    folder = f"{GENERATED_DIR}/{model}/{engine.pipeline.LOCAL_TECHNIQUES_DIR}/{technique.name}" if technique.local else f"techniques/{technique.name}"
    return Attribution(number, text, f"{'local technique' if technique.local else 'technique'} {author}", folder)
