"""``CHANGELOG.md``: one section per template release, newest first, under an ``## Unreleased``
section that collects what happened since (each ``--force`` past the qualification gate, with its
reason). A release (``smt promote``, ``smt tune --apply``) takes the Unreleased entries into its own
section, so the release notes say which changes went in without passing evidence and why.
"""

from __future__ import annotations

import time
from pathlib import Path

CHANGELOG = "CHANGELOG.md"
UNRELEASED = "## Unreleased"
SMT_HEAD = "# Changelog\n\nTemplate releases (`template_repo/VERSION`), newest first.\n"
MODEL_REPO_HEAD = "# Changelog\n\nChanges to this model that `smt` recorded, newest first.\n"


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def _split(text: str) -> tuple[str, list[str], str]:
    """(head before any section, the Unreleased entries, the release sections)."""
    cut = text.find("\n## ")
    head, rest = (text, "") if cut < 0 else (text[: cut + 1], text[cut + 1 :])
    unreleased: list[str] = []
    if rest.startswith(UNRELEASED + "\n") or rest == UNRELEASED:
        end = rest.find("\n## ", len(UNRELEASED))
        block, rest = (rest, "") if end < 0 else (rest[: end + 1], rest[end + 1 :])
        unreleased = [line for line in block.splitlines()[1:] if line.strip()]
    return head, unreleased, rest


def _join(head: str, sections: list[str], rest: str) -> str:
    body = "\n\n".join(section.rstrip("\n") for section in sections if section.strip())
    return head.rstrip("\n") + "\n\n" + body + "\n" + ("\n" + rest if rest else "")


def add_unreleased(root: Path, entry: str, head: str = SMT_HEAD) -> Path:
    """Append one ``- entry`` line to the Unreleased section (created when missing)."""
    path = root / CHANGELOG
    old_head, unreleased, rest = _split(path.read_text() if path.is_file() else head)
    section = "\n".join([UNRELEASED, "", *unreleased, f"- {entry}"])
    path.write_text(_join(old_head, [section], rest))
    return path


def add_release(root: Path, version: str, entries: list[str]) -> Path:
    """A ``## <version> (<date>)`` section with ``entries`` (each one ``- `` line), then the
    Unreleased entries it releases, above the older releases."""
    path = root / CHANGELOG
    head, unreleased, rest = _split(path.read_text() if path.is_file() else SMT_HEAD)
    section = "\n".join([f"## {version} ({today()})", "", *(f"- {entry}" for entry in entries), *unreleased])
    path.write_text(_join(head, [section], rest))
    return path
