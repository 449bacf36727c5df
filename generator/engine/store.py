"""The persistent cache of finished files that the caller may attach (smt does; Copier does not).

Kept apart from the pipeline so that attaching it imports nothing heavy.
"""

from __future__ import annotations

from typing import Protocol


class FinishStore(Protocol):
    """A content-addressed cache of finished files: key (a hash of every input) -> file text."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, text: str) -> None: ...


_CURRENT: list[FinishStore | None] = [None]


def use_store(store: FinishStore | None) -> None:
    """Attach ``store`` to every FileRenderer of this process (None detaches)."""
    _CURRENT[0] = store


def current_store() -> FinishStore | None:
    return _CURRENT[0]
