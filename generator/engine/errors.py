"""The one error type of the engine: a message meant for a person, turned into one line by the CLI."""

from __future__ import annotations

import reprlib


class SmtError(Exception):
    """A problem with the user's input (spec, technique, template) that the user can fix.

    ``is_smt_error`` lets callers recognise it across module copies: the template's Jinja extension
    may load its own copy of the engine (one per template release), so ``isinstance`` is not enough.
    """

    is_smt_error = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = 60
_BRIEF.maxother = 60
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 4
_BRIEF.maxlevel = 2


def brief(value: object) -> str:
    """``repr(value)`` cut short: a rejected input may be huge (a YAML alias expands to millions of
    items), and an error message must stay one readable line and cost nothing to build."""
    return _BRIEF.repr(value)
