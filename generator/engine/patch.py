"""Apply one technique's patch source to one rendered module with libcst.

A patch is ordinary Python. Its imports are added to the target (deduplicated); a top-level class or
function named like one of the target's extension points replaces it; every other top-level definition
is added just before the first replaced extension point (or at the end). Re-applying a patch to its own
output changes nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import libcst as cst

from .errors import SmtError

Definition = cst.ClassDef | cst.FunctionDef | cst.SimpleStatementLine


@dataclass(frozen=True)
class ParsedPatch:
    """A patch split into what it imports, what it replaces and what it adds."""

    imports: tuple[cst.SimpleStatementLine, ...]
    definitions: tuple[tuple[str, Definition], ...]


def _is_docstring(statement: cst.CSTNode) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _is_import(statement: cst.CSTNode) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(part, (cst.Import, cst.ImportFrom)) for part in statement.body
    )


def _defined_name(statement: cst.CSTNode) -> str | None:
    """The name a top-level statement defines (class, def, or ``NAME = ...``), else None."""
    if isinstance(statement, (cst.ClassDef, cst.FunctionDef)):
        return statement.name.value
    if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
        small = statement.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            return small.targets[0].target.value
        if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
            return small.target.value
    return None


@lru_cache(maxsize=256)
def parse_patch(source: str, origin: str) -> ParsedPatch:
    """Split a patch file into imports and named definitions; raise SmtError on anything else."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise SmtError(f"{origin}: not valid Python ({exc.message} at line {exc.raw_line})") from None
    imports: list[cst.SimpleStatementLine] = []
    definitions: list[tuple[str, Definition]] = []
    for index, statement in enumerate(module.body):
        if index == 0 and _is_docstring(statement):
            continue
        if _is_import(statement):
            if any(isinstance(part, cst.ImportFrom) and part.module and part.module.value == "__future__" for part in statement.body):  # type: ignore[union-attr]
                continue
            imports.append(statement)  # type: ignore[arg-type]
            continue
        name = _defined_name(statement)
        if name is None:
            line = module.code_for_node(statement).strip().splitlines()[0]
            raise SmtError(f"{origin}: top-level statement {line!r} is neither an import nor a definition; patches may only import and define")
        definitions.append((name, statement))  # type: ignore[arg-type]
    return ParsedPatch(tuple(imports), tuple(definitions))


def _import_keys(statement: cst.SimpleStatementLine) -> list[tuple[str, str, str | None]]:
    """(module, name, alias) triples of an import statement; ``import x`` gives ("", "x", alias)."""
    keys = []
    for part in statement.body:
        if isinstance(part, cst.Import):
            for alias in part.names:
                keys.append(("", cst.Module([]).code_for_node(alias.name), alias.asname and alias.asname.name.value))  # type: ignore[union-attr]
        elif isinstance(part, cst.ImportFrom):
            dots = "." * len(part.relative)
            module = dots + (cst.Module([]).code_for_node(part.module) if part.module else "")
            if isinstance(part.names, cst.ImportStar):
                keys.append((module, "*", None))
            else:
                for alias in part.names:
                    keys.append((module, alias.name.value, alias.asname and alias.asname.name.value))  # type: ignore[union-attr]
    return keys


def _same_code(left: cst.CSTNode, right: cst.CSTNode) -> bool:
    """Whether two definitions are the same program, ignoring formatting and comments."""
    empty = cst.Module([])
    return ast.dump(ast.parse(empty.code_for_node(left).strip())) == ast.dump(ast.parse(empty.code_for_node(right).strip()))


def _provenance(node: Definition, note: str) -> Definition:
    """Put a comment saying which technique wrote ``node`` right above it (once)."""
    comment = cst.EmptyLine(comment=cst.Comment(f"# {note}"))
    kept = [line for line in node.leading_lines if not (line.comment and line.comment.value.startswith("# SMT technique "))]
    return node.with_changes(leading_lines=[*kept, comment])


def apply_patch(
    source: str,
    patch: ParsedPatch,
    *,
    target: str,
    technique: str,
    extension_points: Mapping[str, str],
) -> str:
    """Return ``source`` with ``patch`` applied; raise SmtError naming the technique on a conflict."""
    module = cst.parse_module(source)
    body = list(module.body)
    where = f"technique {technique} ({target})"

    # Imports: add what the target lacks, after its last top-level import.
    existing = {key for statement in body if _is_import(statement) for key in _import_keys(statement)}  # type: ignore[arg-type]
    new_imports = []
    for statement in patch.imports:
        missing = [key for key in _import_keys(statement) if key not in existing]
        if missing:
            existing.update(missing)
            new_imports.extend([statement] if len(missing) == len(_import_keys(statement)) else _only(missing))
    last_import = max((i for i, statement in enumerate(body) if _is_import(statement)), default=-1)
    if last_import < 0 and body and _is_docstring(body[0]):
        last_import = 0
    body[last_import + 1 : last_import + 1] = new_imports

    index_of = {name: i for i, statement in enumerate(body) if (name := _defined_name(statement))}
    replacements: dict[str, Definition] = {}
    additions: list[Definition] = []
    for name, definition in patch.definitions:
        if name in extension_points:
            if name not in index_of:
                raise SmtError(f"{where}: the template has no extension point {name!r} in {target}; update the technique to the template")
            replacements[name] = _provenance(definition, f"SMT technique {technique}: replaces extension point {name}.")
        elif name in index_of:
            if not _same_code(body[index_of[name]], definition):
                raise SmtError(f"{where}: defines {name!r}, which {target} already defines differently; rename it in the technique")
        else:
            additions.append(_provenance(definition, f"SMT technique {technique}: adds {name}."))

    for name, definition in replacements.items():
        body[index_of[name]] = definition
    if additions:
        anchor = min((index_of[name] for name in replacements), default=len(body))
        body[anchor:anchor] = additions
    return module.with_changes(body=body).code


def _only(keys: Sequence[tuple[str, str, str | None]]) -> list[cst.SimpleStatementLine]:
    """One import statement per (module, name, alias) key: what a partly present import still lacks."""
    lines = []
    for module, name, alias in keys:
        suffix = f" as {alias}" if alias else ""
        lines.append(f"import {name}{suffix}" if module == "" else f"from {module} import {name}{suffix}")
    return list(cst.parse_module("\n".join(lines) + "\n").body)  # type: ignore[arg-type]
