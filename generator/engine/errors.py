"""The one error type of the engine: a message meant for a person, turned into one line by the CLI."""

from __future__ import annotations


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
