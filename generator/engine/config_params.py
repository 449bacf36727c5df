"""Give each applied technique its params in the model's config.py.

For technique ``dcn_v2`` with params ``num_cross_layers`` and ``low_rank`` this adds

    @dataclass(frozen=True)
    class DcnV2Params:
        num_cross_layers: int = 2
        low_rank: int = 0

before ``class ModelConfig`` and the field ``dcn_v2: DcnV2Params = DcnV2Params()`` to ModelConfig,
with this model's values as defaults, so technique code reads ``config.dcn_v2.num_cross_layers``.
A param with bounds or choices in technique.yml carries them as the field's metadata
(``num_cross_layers: int = field(default=2, metadata={"min": 1})``), which the runtime's
``--set dcn_v2.num_cross_layers=VALUE`` checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from .errors import SmtError
from .technique import AppliedTechnique, Param

CONFIG_CLASS = "ModelConfig"


def _literal(value: object) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)


def params_class_source(applied: AppliedTechnique) -> str:
    technique = applied.technique
    types = {param.name: param for param in technique.params}
    lines = [
        "@dataclass(frozen=True)",
        f"class {technique.params_class_name}:",
        f'    """Params of technique {technique.name} {technique.version} for this model."""',
        "",
    ]
    for name, value in applied.params:
        param = types[name]
        if param.help:
            lines.append(f"    # {param.help}")
        bounds = param_bounds(param)
        default = f"field(default={_literal(value)}, metadata={bounds!r})" if bounds else _literal(value)
        lines.append(f"    {name}: {param.python_type} = {default}")
    return "\n".join(lines) + "\n"


def param_bounds(param: Param) -> dict[str, object]:
    """The bounds and choices of a param, as its field's metadata in config.py: what the
    runtime's `--set TECHNIQUE.PARAM=VALUE` checks a value against (like the spec's check)."""
    bounds = {"min": param.min, "max": param.max, "choices": list(param.choices) if param.choices is not None else None}
    return {key: value for key, value in bounds.items() if value is not None}


def _with_field_import(module: cst.Module) -> cst.Module:
    """module with ``field`` imported from dataclasses next to ``dataclass`` (the template
    imports only dataclass)."""
    body = list(module.body)
    for index, statement in enumerate(body):
        if not (isinstance(statement, cst.SimpleStatementLine) and isinstance(statement.body[0], cst.ImportFrom)):
            continue
        imported = statement.body[0]
        if isinstance(imported.module, cst.Name) and imported.module.value == "dataclasses" and not isinstance(imported.names, cst.ImportStar):
            names = [alias.name.value for alias in imported.names]
            if "field" not in names:
                body[index] = cst.parse_statement(f"from dataclasses import {', '.join(sorted([*names, 'field']))}\n")
            return module.with_changes(body=body)
    return module.with_changes(body=[cst.parse_statement("from dataclasses import field\n"), *body])


def add_technique_params(source: str, plan: Sequence[AppliedTechnique], target: str) -> str:
    """Insert one Params dataclass per technique that has params, and its ModelConfig field."""
    with_params = [applied for applied in plan if applied.technique.params]
    if not with_params:
        return source
    module = cst.parse_module(source)
    body = list(module.body)
    position = next(
        (i for i, statement in enumerate(body) if isinstance(statement, cst.ClassDef) and statement.name.value == CONFIG_CLASS),
        None,
    )
    if position is None:
        raise SmtError(f"{target}: the template has no class {CONFIG_CLASS}; technique params need it")
    config_class: cst.ClassDef = body[position]  # type: ignore[assignment]
    defined = {statement.name.value for statement in body if isinstance(statement, cst.ClassDef)}
    fields = list(config_class.body.body)
    field_names = {
        statement.body[0].target.value: i
        for i, statement in enumerate(fields)
        if isinstance(statement, cst.SimpleStatementLine)
        and isinstance(statement.body[0], cst.AnnAssign)
        and isinstance(statement.body[0].target, cst.Name)
    }
    after_fields = max(field_names.values(), default=-1) + 1
    new_fields = []
    new_classes = []
    for applied in with_params:
        technique = applied.technique
        class_source = params_class_source(applied)
        if technique.params_class_name in defined:
            raise SmtError(f"{target}: technique {technique.name}: class {technique.params_class_name} already exists in {CONFIG_CLASS}'s module")
        new_classes.append(cst.parse_module(class_source).body[0])
        field = cst.parse_statement(f"{technique.name}: {technique.params_class_name} = {technique.params_class_name}()\n")
        if technique.name in field_names:
            raise SmtError(f"{target}: technique {technique.name}: {CONFIG_CLASS} already has a field {technique.name!r}")
        new_fields.append(field)
    fields[after_fields:after_fields] = new_fields
    body[position] = config_class.with_changes(body=config_class.body.with_changes(body=fields))
    body[position:position] = new_classes
    module = module.with_changes(body=body)
    if any(param_bounds(param) for applied in with_params for param in applied.technique.params):
        module = _with_field_import(module)
    return module.code
