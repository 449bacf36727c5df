"""Config slots: format ``config.py`` once per shape, and each of its per-model fields on its own.

``config.py`` is the one module whose text carries the spec's values (features, cardinalities,
hyperparameters), so name shapes (shapes.py) cannot share it between models, and running black on
its ~350 lines was most of a cold regeneration. But every spec value sits in one field of class
``ModelConfig`` (``sparse_features: tuple[SparseFeature, ...] = (...)``), and black formats each
logical line on its own: how it splits a statement depends on that statement's text and depth only;
what lies between statements (blank lines) depends on the kinds of the neighbouring lines, never on
their values. So ``slot_fields`` swaps every field of ``ModelConfig`` for a placeholder field of the
same kind (an annotated assignment at the same depth); the rest of the file, the shape, is patched
and formatted once for all models that share it, and each field is formatted alone inside a
one-line class at the same depth, each distinct field once. ``fill_slots`` puts them back.

When the file does not split cleanly (no ``ModelConfig``, two statements on one line, a
placeholder already in the text) the caller formats the real file (slower, never different);
``tests/test_scale.py`` checks the identity against formatting the whole file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence

CONFIG_CLASS = "ModelConfig"
SLOT_PREFIX = "smt_slot_"
_SLOT_LINE = re.compile(rf"^(?P<indent>[ ]*){SLOT_PREFIX}(?P<index>\d{{5}}): int = 0$")
_WRAPPER = "class _Slot:\n"


def slot_fields(text: str) -> tuple[str, list[str]] | None:
    """(the shape, the fields' source lines in order), or None when the file does not split cleanly."""
    if SLOT_PREFIX in text:
        return None
    try:
        module = ast.parse(text)
    except SyntaxError:
        return None  # the normal path reports it with the file's name
    config = next((node for node in module.body if isinstance(node, ast.ClassDef) and node.name == CONFIG_CLASS), None)
    if config is None:
        return None
    lines = text.splitlines(keepends=True)
    body = config.body
    slots: list[tuple[int, int]] = []  # (first line index, end line index exclusive)
    for position, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign) or node.value is None or node.end_lineno is None:
            continue
        start, end = node.lineno - 1, node.end_lineno
        previous_end = body[position - 1].end_lineno if position else config.lineno
        following = body[position + 1].lineno if position + 1 < len(body) else None
        if (previous_end or 0) > start or (following is not None and following <= end):
            return None  # shares a line with another statement
        if lines[start][: node.col_offset].strip():
            return None  # the statement does not start its line
        slots.append((start, end))
    if not slots:
        return None
    shape: list[str] = []
    fields: list[str] = []
    cursor = 0
    for index, (start, end) in enumerate(slots):
        shape += lines[cursor:start]
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip(" "))]
        shape.append(f"{indent}{SLOT_PREFIX}{index:05d}: int = 0\n")
        field = "".join(lines[start:end])
        fields.append(field if field.endswith("\n") else field + "\n")
        cursor = end
    shape += lines[cursor:]
    return "".join(shape), fields


def wrap_field(field: str) -> str:
    """The field as the only statement of a class at depth one, for black."""
    return _WRAPPER + field


def unwrap_field(formatted: str) -> str | None:
    """The formatted field from its formatted wrapper, or None when black changed the wrapper."""
    return formatted[len(_WRAPPER) :] if formatted.startswith(_WRAPPER) else None


def fill_slots(finished: str, fields: Sequence[str], format_field: Callable[[str], str | None]) -> str | None:
    """The finished file: each placeholder line replaced by its formatted field (at black's depth one,
    four spaces), or None when the placeholders did not come through formatting one for one."""
    out: list[str] = []
    seen: list[int] = []
    for line in finished.splitlines(keepends=True):
        match = _SLOT_LINE.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        index = int(match.group("index"))
        formatted = format_field(fields[index]) if index < len(fields) and match.group("indent") == "    " else None
        if formatted is None:
            return None
        seen.append(index)
        out.append(formatted)
    if seen != list(range(len(fields))):
        return None
    return "".join(out)
