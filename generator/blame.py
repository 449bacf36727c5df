"""smt blame: which technique, local technique or template file wrote a line of generated code.

The engine's steps are replayed for the one file: the template's text, then each technique in the
model's order. Every line of the final file is traced back through the steps with difflib; the step
where it first appears wrote it. A definition a technique replaced or added is that technique's
whole, every line of it: difflib alone would give a replacement's lines that read like the
template's (``class TaskTowers(nn.Module):``, a shared docstring line) to the template. The engine
marks each such definition with a ``# SMT technique LABEL: replaces|adds NAME.`` comment; the
definition under it, decorators to last line, is the technique's.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import engine
from .cache import RenderCache, text_digest
from .engine import SmtError
from .engine.header import header_size, strip_header
from .engine.paths import LOCAL_TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import GENERATED_DIR, Fleet, ModelEntry
from .render import render_model

HEADER_SOURCE = "generator/engine/header.py"


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
    return f"{TEMPLATE_DIR}/template/" + "/".join(parts) + ".jinja"


_TARGET = re.compile(r"""smt_file\(\s*["']([^"']+)["']""")


def target_of(root: Path, model: str, relative: str) -> str:
    """The engine's target key of a generated file, as its template passes it to ``smt_file``."""
    template = root / template_source(model, relative)
    match = _TARGET.search(template.read_text()) if template.is_file() else None
    return match.group(1) if match else relative


def _trace_all(steps: list[tuple[str, str]]) -> list[str]:
    """The label of the step that introduced each line of the last step's text.

    Each line is followed back through the steps (difflib, one comparison per step for the whole
    file); the step where it stops being an unchanged line is the one that wrote it.
    """
    last = len(steps[-1][1].splitlines())
    authors: list[str | None] = [None] * last
    index_of = list(range(last))  # each final line's index in the current step, None once placed
    for step in range(len(steps) - 1, 0, -1):
        older = steps[step - 1][1].splitlines()
        newer = steps[step][1].splitlines()
        mapping: dict[int, int] = {}
        for tag, a0, _, b0, b1 in difflib.SequenceMatcher(a=older, b=newer, autojunk=False).get_opcodes():
            if tag == "equal":
                for offset in range(b1 - b0):
                    mapping[b0 + offset] = a0 + offset
        for line, index in enumerate(index_of):
            if index is None:
                continue
            if index in mapping:
                index_of[line] = mapping[index]
            else:
                authors[line] = steps[step][0]
                index_of[line] = None
    return [author if author is not None else steps[0][0] for author in authors]


def definition_owners(text: str) -> dict[int, str]:
    """0-based line -> technique label for every line of a top-level definition a technique
    replaced or added (its provenance comment included), from the engine's comments in ``text``."""
    from .engine.patch import PROVENANCE_PREFIX  # noqa: PLC0415 - libcst: only when blaming

    owned = re.compile(r"^\s*" + re.escape(PROVENANCE_PREFIX) + r"(?P<label>.+?): (?:replaces extension point|adds) \w+\.\s*$")
    lines = text.splitlines()
    try:
        module = ast.parse(text)
    except SyntaxError:
        return {}
    owners: dict[int, str] = {}
    for node in module.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign)):
            continue
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        comment = first - 1
        while comment >= 0 and lines[comment].lstrip().startswith("#") and not owned.match(lines[comment]):
            comment -= 1  # other comments between the provenance line and the definition
        match = owned.match(lines[comment]) if comment >= 0 else None
        if match:
            for line in range(comment, (node.end_lineno or node.lineno)):
                owners[line] = match["label"]
    return owners


BLAME_CACHE = "blame"


def _parse(root: Path, location: str) -> tuple[str, str, int, int]:
    """(model, relative path, first line, last line) of ``generated/<model>/<file>:<line>[-<line>]``."""
    path_text, _, lines_text = location.rpartition(":")
    first_text, dash, last_text = lines_text.partition("-")
    if not dash:
        last_text = first_text
    if not path_text or not first_text.isdigit() or not last_text.isdigit() or int(first_text) < 1 or int(last_text) < int(first_text):
        raise SmtError(f"{location}: expected generated/<model>/<file>:<line> or :<first>-<last> with line numbers from 1")
    path = Path(path_text)
    parts = path.resolve().relative_to(root.resolve()).parts if path.is_absolute() else path.parts
    if len(parts) < 3 or parts[0] != GENERATED_DIR:
        raise SmtError(f"{location}: expected a file under {GENERATED_DIR}/<model>/")
    return parts[1], "/".join(parts[2:]), int(first_text), int(last_text)


def blame(root: Path, location: str) -> list[Attribution]:
    """Attribute each line of ``generated/<model>/<file>:<line>`` (or ``:<first>-<last>``); raise
    SmtError on a bad location."""
    model, relative, first, last = _parse(root, location)
    cache = RenderCache(root)
    entry = Fleet(root, cache.load_answers).model(model)
    file_path = entry.directory / relative
    if not file_path.is_file():
        raise SmtError(f"{location}: no such generated file; give generated/<model>/<file>:<line> of a file that exists")
    current = file_path.read_text()
    lines = current.splitlines()
    if last > len(lines):
        raise SmtError(f"{location}: the file has {len(lines)} lines; give a line from 1 to {len(lines)}")
    authors = _file_authors(root, cache, entry, relative, current)
    return [Attribution(number, lines[number - 1], *authors[number - 1]) for number in range(first, last + 1)]


def _file_authors(root: Path, cache: RenderCache, entry: ModelEntry, relative: str, current: str) -> list[tuple[str, str]]:
    """(author, source) of every line of ``current``, remembered in the render cache under the
    model's inputs and the file's text (so it is recomputed whenever either changes)."""
    model_key = cache.model_key(entry.name, entry.directory, entry.answers)
    key = text_digest(f"{model_key}\0{relative}\0{current}")
    cached = cache.get(f"{BLAME_CACHE}-{key}")
    if cached is not None:
        return [tuple(pair) for pair in json.loads(cached)]  # type: ignore[misc]
    authors = _compute_authors(root, cache, entry, relative, current, model_key)
    cache.put(f"{BLAME_CACHE}-{key}", json.dumps(authors))
    return authors


def _compute_authors(root: Path, cache: RenderCache, entry: ModelEntry, relative: str, current: str, model_key: str) -> list[tuple[str, str]]:
    model = entry.name
    lines = current.splitlines()
    recorded = cache.model_digests(model_key)
    if recorded is not None and recorded.get(relative) == text_digest(current):
        fresh_text: str | None = current  # the cache vouches: this is what a render gives
    else:
        fresh_text = render_model(root, entry.answers, model, entry.directory).get(relative)
    rendered = (fresh_text or "").splitlines()
    hand = fresh_text != current
    source = template_source(model, relative)
    target = target_of(root, model, relative)
    _, plan = engine.plan_for(root, entry.answers, entry.directory)
    traced: list[str] | None = None
    body_offset = 0
    if target.endswith(".py") and plan:
        base = strip_header(render_model(root, entry.spec.without_techniques().as_dict(), model)[relative])
        steps = engine.trace_file(engine.load_sources(root), target, base, plan)
        traced = _trace_all(steps)
        for line, label in definition_owners(steps[-1][1]).items():
            traced[line] = label
        body_offset = len(lines) - len(steps[-1][1].splitlines())
    labels = {a.technique.label: a.technique for a in plan}
    authors: list[tuple[str, str]] = []
    header_lines = header_size(current)
    for number, text in enumerate(lines, 1):
        if number <= header_lines:
            authors.append(("header", HEADER_SOURCE))
        elif hand and (number > len(rendered) or rendered[number - 1] != text):
            authors.append(("hand edit", f"{GENERATED_DIR}/{model}/{relative} differs from `smt diff`"))
        elif traced is None:
            authors.append(("template", source))
        elif number - 1 - body_offset < 0 or number - 1 - body_offset >= len(traced):
            authors.append(("header", HEADER_SOURCE))
        else:
            author = traced[number - 1 - body_offset]
            technique = labels.get(author)
            if author == "template" or technique is None:
                authors.append(("template", source))
            elif technique.local:
                authors.append((f"local technique {author}", f"{GENERATED_DIR}/{model}/{LOCAL_TECHNIQUES_DIR}/{technique.name}"))
            else:
                authors.append((f"technique {author}", f"techniques/{technique.name}"))
    return authors
