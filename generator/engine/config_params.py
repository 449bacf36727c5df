"""Give each applied technique its params in the model's config.py.

For technique ``dcn_v2`` with params ``num_cross_layers`` and ``low_rank`` this adds

    @dataclass(frozen=True)
    class DcnV2Params:
        num_cross_layers: int = 2
        low_rank: int = 0

before ``class ModelConfig`` and the field ``dcn_v2: DcnV2Params = DcnV2Params()`` to ModelConfig,
with this model's values as defaults, so technique code reads ``config.dcn_v2.num_cross_layers``.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from .errors import SmtError
from .technique import AppliedTechnique

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
        if types[name].help:
            lines.append(f"    # {types[name].help}")
        lines.append(f"    {name}: {types[name].python_type} = {_literal(value)}")
    return "\n".join(lines) + "\n"


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
    return module.with_changes(body=body).code
