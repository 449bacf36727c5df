"""Model-name shapes: patch and format a file once for every model whose text differs only by name.

Most template files mention the model's name (``from feed_ctr.data import ...``) and nothing else
of its spec, so without this every model would pay black for each of them. ``shape_of`` swaps every
occurrence of the name for a placeholder of the same length made of ASCII letters and digits; the
patched and formatted shape is then turned back with ``str.replace``. That is exact when the swap
cannot change how Python (libcst, black) reads the file, which is what ``shape_of`` checks before
it agrees: the name is ASCII, at least 4 characters, not a keyword; every word (run of identifier
characters) containing it is an ordinary identifier part, never a keyword, soft keyword, number or
pragma; and neither the name nor the placeholder occurs in what the techniques bring. Same length
and same character class keep every line width and token the same, so black makes the same choices.
When any check fails the file is finished with its real text (slower, never different);
``tests/test_scale.py`` checks the identity on every example model and on awkward names.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

_WORD = re.compile(r"[A-Za-z0-9_]+")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_PLACEHOLDER_CYCLE = "QZXsmtQ9"  # uppercase Q/Z/X never occur in a keyword; no digit at the start
# Words whose meaning a tool reads (pragmas, future imports): never rewrite one.
_PRAGMA_WORDS = frozenset(
    {"fmt", "off", "on", "skip", "noqa", "type", "ignore", "pragma", "__future__", "annotations", "pylint", "mypy", "pyright"}
)
MIN_NAME_LENGTH = 4


def placeholder_for(name: str) -> str:
    """The placeholder standing for a name of ``len(name)`` characters."""
    return (_PLACEHOLDER_CYCLE * (len(name) // len(_PLACEHOLDER_CYCLE) + 1))[: len(name)]


def _safe_word(word: str) -> bool:
    return not (
        word[0].isdigit()
        or keyword.iskeyword(word)
        or keyword.issoftkeyword(word)
        or word in _PRAGMA_WORDS
    )


def shape_of(name: str, text: str, technique_sources: Iterable[str] = ()) -> str | None:
    """``text`` with ``name`` replaced by its placeholder, or None when that could change the result."""
    if len(name) < MIN_NAME_LENGTH or not name.isascii() or not _NAME.fullmatch(name):
        return None
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name not in text:
        return None
    placeholder = placeholder_for(name)
    if placeholder in text:
        return None
    for source in technique_sources:
        if name in source or placeholder in source:
            return None
    for match in _WORD.finditer(text):
        word = match.group()
        if name in word and not _safe_word(word):
            return None
    return text.replace(name, placeholder)


def unshape(name: str, finished: str) -> str:
    """The real file from its finished shape."""
    return finished.replace(placeholder_for(name), name)
