"""Apply one technique's patch source to one rendered module with libcst.

A patch is ordinary Python. Its imports are added to the target (deduplicated); a top-level class or
function named like one of the target's extension points replaces it, keeping the contract the
template's definition states in code (constructor and ``forward`` signatures, ``output_dim``); a
function named like a hook has its body appended to the hook (same signature); every other top-level
definition is added just before the first replaced extension point (or at the end). Re-applying a
patch to its own output changes nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import libcst as cst

from .errors import SmtError

Definition = cst.ClassDef | cst.FunctionDef | cst.SimpleStatementLine
PROVENANCE_PREFIX = "# SMT technique "


@dataclass(frozen=True)
class ExtensionPoint:
    """A named place of a rendered module that techniques change.

    ``kind`` "replace": a top-level class or function that exactly one technique replaces.
    ``kind`` "hook": a function whose body techniques append to.
    """

    name: str
    kind: str
    description: str


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
        raise SmtError(f"{origin}: not valid Python at line {exc.raw_line} ({' '.join(exc.message.split())}); fix the syntax") from None
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
    comment = cst.EmptyLine(comment=cst.Comment(f"{PROVENANCE_PREFIX}{note}"))
    kept = [line for line in node.leading_lines if not (line.comment and line.comment.value.startswith(PROVENANCE_PREFIX))]
    return node.with_changes(leading_lines=[*kept, comment])


def _author(node: cst.CSTNode) -> str | None:
    """The technique named by a node's provenance comment, if a technique wrote it."""
    for line in getattr(node, "leading_lines", ()):
        if line.comment and line.comment.value.startswith(PROVENANCE_PREFIX):
            return line.comment.value[len(PROVENANCE_PREFIX) :].split(":", 1)[0]
    return None


def _body_statements(function: cst.FunctionDef) -> list[cst.BaseStatement]:
    """A function's statements without its docstring (and without a lone ``pass``)."""
    statements = list(function.body.body)  # type: ignore[union-attr]
    if statements and _is_docstring(statements[0]):
        statements = statements[1:]
    return [statement for statement in statements if not (isinstance(statement, cst.SimpleStatementLine) and all(isinstance(part, cst.Pass) for part in statement.body))]


def _contains_run(haystack: Sequence[cst.CSTNode], needle: Sequence[cst.CSTNode]) -> bool:
    """Whether ``needle`` appears as consecutive statements of ``haystack`` (same code)."""
    for start in range(len(haystack) - len(needle) + 1):
        if all(_same_code(haystack[start + i], node) for i, node in enumerate(needle)):
            return True
    return False


def _insert_into_hook(hook: cst.FunctionDef, patch: cst.FunctionDef, technique: str) -> cst.FunctionDef:
    """Append ``patch``'s body to the template hook ``hook`` (once), with a provenance comment."""
    added = _body_statements(patch)
    current = list(hook.body.body)  # type: ignore[union-attr]
    if not added or _contains_run(current, added):
        return hook
    comment = cst.EmptyLine(comment=cst.Comment(f"{PROVENANCE_PREFIX}{technique}: inserts into hook {hook.name.value}."))
    first = added[0].with_changes(leading_lines=[comment])  # type: ignore[call-arg]
    return hook.with_changes(body=hook.body.with_changes(body=[*current, first, *added[1:]]))


def _signature(function: cst.FunctionDef, method: bool) -> tuple[str, ...]:
    """A function's parameters as written (name, ``=default``, ``*``/``**``), annotations left out;
    a method's ``self`` is dropped."""
    code = cst.Module([]).code_for_node
    params = function.params

    def text(param: cst.Param, prefix: str = "") -> str:
        default = f"={code(param.default)}" if param.default is not None else ""
        return f"{prefix}{param.name.value}{default}"

    parts = [text(param) for param in (*params.posonly_params, *params.params)]
    if params.posonly_params:
        parts.insert(len(params.posonly_params), "/")
    if method and parts:
        parts.pop(0)
    if isinstance(params.star_arg, cst.Param):
        parts.append(text(params.star_arg, "*"))
    elif params.kwonly_params:
        parts.append("*")
    parts += [text(param) for param in params.kwonly_params]
    if params.star_kwarg is not None:
        parts.append(text(params.star_kwarg, "**"))
    return tuple(parts)


def _method(cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
    for statement in cls.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
            return statement
    return None


class _SetsOutputDim(cst.CSTVisitor):
    """Finds ``self.output_dim = ...`` (or an ``output_dim`` method or property) in a class."""

    def __init__(self) -> None:
        self.found = False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.found |= node.name.value == "output_dim"

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.found |= _is_self_output_dim(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.found |= _is_self_output_dim(node.target)


def _is_self_output_dim(node: cst.BaseExpression) -> bool:
    return (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
        and node.attr.value == "output_dim"
    )


def _sets_output_dim(cls: cst.ClassDef) -> bool:
    visitor = _SetsOutputDim()
    cls.visit(visitor)
    return visitor.found


def _shown(signature: tuple[str, ...]) -> str:
    return f"({', '.join(signature)})"


def check_contract(template: cst.CSTNode, patch: cst.CSTNode, name: str, where: str) -> None:
    """Refuse a replacement (or hook body) whose contract differs from the template's definition.

    The contract is read from the template's code: a function's signature; a class's ``__init__``
    and ``forward`` signatures (names, order, defaults; annotations are free) and whether it sets
    ``output_dim``, which the arches after it read.
    """
    if isinstance(template, cst.FunctionDef):
        if not isinstance(patch, cst.FunctionDef):
            raise SmtError(f"{where}: {name} is a function in the template; define `def {name}(...)` with the template's signature")
        ours, theirs = _signature(patch, method=False), _signature(template, method=False)
        if ours != theirs:
            raise SmtError(f"{where}: {name} takes {_shown(ours)} but the template's takes {_shown(theirs)}; keep the template's signature")
        return
    if not isinstance(template, cst.ClassDef):
        return
    if not isinstance(patch, cst.ClassDef):
        raise SmtError(f"{where}: {name} is a class in the template; define `class {name}` with the template's signatures")
    for method in ("__init__", "forward"):
        original = _method(template, method)
        if original is None:
            continue
        theirs = _signature(original, method=True)
        replacement = _method(patch, method)
        if replacement is None:
            raise SmtError(f"{where}: {name} defines no {method} but the template's takes {_shown(theirs)}; keep the template's signature")
        ours = _signature(replacement, method=True)
        if ours != theirs:
            raise SmtError(
                f"{where}: {name}.{method} takes {_shown(ours)} but the template's takes {_shown(theirs)}; keep the template's signature"
            )
    if _sets_output_dim(template) and not _sets_output_dim(patch):
        raise SmtError(f"{where}: {name} sets no self.output_dim but the template's does (the arches after it read it); set it")


def apply_patch(
    source: str,
    patch: ParsedPatch,
    *,
    target: str,
    technique: str,
    extension_points: Mapping[str, ExtensionPoint],
) -> str:
    """Return ``source`` with ``patch`` applied; raise SmtError naming the technique on a conflict."""
    module = cst.parse_module(source)
    body = list(module.body)
    where = f"technique {technique} ({target})"
    # libcst reads comments above a module's first statement as the module's header: give a
    # provenance comment back to the definition it belongs to, so re-applying finds it.
    header = list(module.header)
    owned = next((i for i, line in enumerate(header) if line.comment and line.comment.value.startswith(PROVENANCE_PREFIX)), None)
    if owned is not None and body:
        body[0] = body[0].with_changes(leading_lines=[*header[owned:], *body[0].leading_lines])
        module = module.with_changes(header=header[:owned])

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
    replaced: list[str] = []
    additions: list[Definition] = []
    for name, definition in patch.definitions:
        point = extension_points.get(name)
        if point is not None:
            if name not in index_of:
                raise SmtError(f"{where}: the template has no extension point {name!r} in {target}; update the technique to the template")
            current = body[index_of[name]]
            check_contract(current, definition, name, where)
            if point.kind == "hook":
                body[index_of[name]] = _insert_into_hook(current, definition, technique)  # type: ignore[arg-type]
            else:
                body[index_of[name]] = _provenance(definition, f"{technique}: replaces extension point {name}.")
            replaced.append(name)
        elif name in index_of:
            if not _same_code(body[index_of[name]], definition):
                owner = _author(body[index_of[name]])
                already = f"technique {owner} already added {name!r} to {target}" if owner else f"{target} already defines {name!r}"
                raise SmtError(f"{where}: defines {name!r} differently, but {already}; rename one of them")
        else:
            additions.append(_provenance(definition, f"{technique}: adds {name}."))

    if additions:
        anchor = min((index_of[name] for name in replaced), default=len(body))
        body[anchor:anchor] = additions
        _require_used(body, additions, where, extension_points)
    return module.with_changes(body=body).code


class _Names(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


def _require_used(body: Sequence[cst.CSTNode], additions: Sequence[Definition], where: str, points: Mapping[str, ExtensionPoint]) -> None:
    """Refuse additions nothing uses: the usual sign that the template renamed an extension point."""
    added = {id(node) for node in additions}
    visitor = _Names()
    for statement in body:
        if id(statement) not in added:
            statement.visit(visitor)
    for node in additions:
        own = _Names()
        for other in additions:
            if other is not node:
                other.visit(own)
        name = _defined_name(node)
        if name and name not in visitor.names and name not in own.names:
            known = ", ".join(sorted(points)) or "none"
            raise SmtError(
                f"{where}: adds {name!r} but nothing uses it; if it replaces an extension point, the template no longer has "
                f"one by that name (extension points here: {known})"
            )


def _only(keys: Sequence[tuple[str, str, str | None]]) -> list[cst.SimpleStatementLine]:
    """One import statement per (module, name, alias) key: what a partly present import still lacks."""
    lines = []
    for module, name, alias in keys:
        suffix = f" as {alias}" if alias else ""
        lines.append(f"import {name}{suffix}" if module == "" else f"from {module} import {name}{suffix}")
    return list(cst.parse_module("\n".join(lines) + "\n").body)  # type: ignore[arg-type]
