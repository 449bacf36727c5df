"""Format rendered text (black for Python); the "generated" header on top of every file is header.py's."""

from __future__ import annotations

import black

from .header import add_header

__all__ = ["BLACK_MODE", "add_header", "format_python"]

BLACK_MODE = black.Mode(target_versions={black.TargetVersion.PY311}, line_length=88)


def format_python(text: str) -> str:
    """Black with the repository's pinned mode; raises black.InvalidInput on invalid Python."""
    return black.format_str(text, mode=BLACK_MODE)
