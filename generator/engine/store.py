"""The persistent cache of finished files that the caller may attach (smt does; Copier does not),
and the bounded reader of input files (specs, technique metadata, extension points).

Kept apart from the pipeline so that attaching the cache or reading a spec imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import yaml

from .errors import SmtError


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


# -- reading input files (specs, technique.yml, extension_points.yml) ---------------------------
# Every input file is read through here: bounded in size, decoded as UTF-8, parsed with libyaml
# when PyYAML has it, and refused (one SmtError naming the file) when it is binary, too large,
# malformed, or an alias "bomb" whose expansion is far larger than any real spec.
MAX_INPUT_BYTES = 2 * 1024 * 1024  # the largest spec in the test fleets is a few tens of KB
MAX_YAML_NODES = 200_000  # nodes after expanding aliases; a 1,000-feature spec has about 5,000
MAX_YAML_DEPTH = 64  # nesting levels; a spec needs 4

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_input_text(path: Path, what: str) -> str:
    """The text of an input file; raise SmtError naming it when it is missing, unreadable, larger
    than MAX_INPUT_BYTES or not UTF-8. ``what`` names the file's role, e.g. "the spec"."""
    try:
        with path.open("rb") as file:  # read one byte past the limit: /dev/zero or a pipe never ends
            data = file.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            size = path.stat().st_size
            known = f" ({size:,} bytes)" if size > MAX_INPUT_BYTES else ""
            raise SmtError(
                f"{path}: {what} is over the limit of {MAX_INPUT_BYTES:,} bytes for an input file{known}; "
                f"check that this is the right file"
            )
    except OSError as exc:
        raise SmtError(f"{path}: cannot read {what} ({exc.strerror or exc}); check the path and its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SmtError(
            f"{path}: {what} is not UTF-8 text (undecodable byte at offset {exc.start}); save it as UTF-8 text"
        ) from None


def load_yaml(path: Path, what: str) -> Any:
    """Parse an input YAML file (see read_input_text); raise SmtError naming ``path:line``."""
    return parse_yaml(read_input_text(path, what), str(path), what)


def parse_yaml(text: str, source: str, what: str) -> Any:
    """Parse YAML text from ``source`` (a file name for messages), refusing alias expansions beyond
    MAX_YAML_NODES nodes, recursive aliases and nesting deeper than MAX_YAML_DEPTH."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source, what)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
        raise SmtError(f"{source}{where}: {what} is not valid YAML ({' '.join(str(problem).split())}); fix the syntax") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str, what: str) -> None:
    """Refuse a node graph whose alias expansion, cycles or depth no real input has.

    Walks the graph iteratively (no recursion limit to hit), counting each node's expanded size
    once: an alias bomb of n levels costs O(n) here instead of the 9**n of expanding it.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    depth = 0
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            depth -= 1
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_YAML_NODES:
                line = node.start_mark.line + 1
                raise SmtError(
                    f"{source}:{line}: {what} expands (through YAML aliases) to more than {MAX_YAML_NODES:,} values; "
                    f"write the values out instead of repeating aliases"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise SmtError(f"{source}:{node.start_mark.line + 1}: {what} has a YAML alias that contains itself; remove the alias")
        depth += 1
        if depth > MAX_YAML_DEPTH:
            raise SmtError(f"{source}:{node.start_mark.line + 1}: {what} nests deeper than {MAX_YAML_DEPTH} levels; flatten it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
