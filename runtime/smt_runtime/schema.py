"""Checking tables against the spec.

Data format: one row per example, one column per feature and objective (the layout of
synthetic.generate_synthetic, parquet_io.write_parquet / read_parquet / stream_parquet and
batch.table_to_batches):
    <sparse feature>    single-valued: an integer id; multi-valued: a list of integer
                        ids (an empty list is an example without ids). Ids lie in
                        [0, cardinality), or are raw ids (integers or strings) hashed
                        into it with hash_raw_ids (see hashing.hash_ids).
    <dense feature>     a number (float, or integer cast to float32), never null or NaN
    label_<objective>   0 or 1 (float, integer or bool)
Other columns are ignored. check_table (and parquet_io's check_parquet, read_parquet and
stream_parquet) check a table against the spec and raise one SchemaError naming every
offending column and how many rows it affects; they return the columns in spec order as
int64, list<int64>, float32 and float32 (labels), the layout generate_synthetic writes.
"""

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .config import ModelConfigBase, SparseFeature
from .hashing import hash_ids, is_bytes_type

LABEL_PREFIX = "label_"


class SchemaError(ValueError):
    """A table does not match the model's spec.

    The message names every offending column and how many rows it affects, e.g.
    "data.parquet does not match the spec of model m: column 'ad_id': 37 of 1,000 rows
    have ids outside [0, 5000)".

    Attributes:
        problems: one SchemaProblem per offending column and kind of problem.
    """

    def __init__(self, source: str, model_name: str, problems: Iterable["SchemaProblem"]):
        self.problems = tuple(problems)
        details = "; ".join(str(problem) for problem in self.problems)
        super().__init__(f"{source} does not match the spec of model {model_name}: {details}")


@dataclass(frozen=True)
class SchemaProblem:
    """One problem of one column.

    Attributes:
        column: the column's name.
        kind: "missing", "dtype", "null", "range" (ids outside the cardinality) or
            "value" (a label other than 0 and 1, a NaN or infinite dense value).
        rows: number of rows affected.
        total_rows: number of rows checked.
        detail: what is wrong, e.g. "have ids outside [0, 5000)".
        hint: how to fix it, if there is more to say than detail.
    """

    column: str
    kind: str
    rows: int
    total_rows: int
    detail: str
    hint: str = ""

    def __str__(self) -> str:
        if self.kind in ("missing", "dtype"):
            text = f"column {self.column!r}: {self.detail} (all {self.total_rows:,} rows)"
        else:
            text = f"column {self.column!r}: {self.rows:,} of {self.total_rows:,} rows {self.detail}"
        return f"{text} ({self.hint})" if self.hint else text


@dataclass(frozen=True)
class _ColumnSpec:
    """What the spec expects of one column; feature is set for sparse columns."""

    name: str  # in the spec's layout: the feature's name or label_<objective>
    role: str  # "sparse", "dense" or "label"
    feature: SparseFeature | None = None
    hashed: bool = False
    source: str = ""  # the column's name in data files (config's data conventions)

    def find(self, names: Collection[str]) -> str | None:
        """The column of a table with these column names that holds this one: its
        name in data files, else its name in the spec's layout (e.g. synthetic data)."""
        for candidate in (self.source, self.name):
            if candidate and candidate in names:
                return candidate
        return None

    @property
    def expected(self) -> str:
        if self.role == "dense":
            return "a number (dense feature)"
        if self.role == "label":
            return "0/1 labels as float, integer or bool"
        ids = "integer or string ids" if self.hashed else "integer ids"
        if self.feature.multi_valued:
            return f"a list of {ids} (multi-valued sparse feature)"
        return f"{ids} (sparse feature)"


def column_names(config: ModelConfigBase) -> list[str]:
    """The columns a data file needs, in spec order: sparse, dense, then labels, named
    as in data files (the spec's data.columns and data.labels; by default the feature's
    name and label_<objective>)."""
    return [spec.source for spec in column_specs(config)]


def file_columns(config: ModelConfigBase, names: Collection[str]) -> list[str]:
    """Of a file with these column names, the columns that hold the spec's, in spec
    order (missing ones are left out)."""
    found = (spec.find(names) for spec in column_specs(config))
    return [name for name in found if name is not None]


def column_specs(config: ModelConfigBase, hash_raw_ids: bool | Collection[str] = False) -> list[_ColumnSpec]:
    sparse_names = [feature.name for feature in config.sparse_features]
    if isinstance(hash_raw_ids, bool):
        hashed = set(sparse_names) if hash_raw_ids else set()
    else:
        hashed = set(hash_raw_ids)
        unknown = sorted(hashed - set(sparse_names))
        if unknown:
            raise ValueError(f"hash_raw_ids names {unknown}, not sparse features of {config.model_name}")
    return [
        *(
            _ColumnSpec(f.name, "sparse", f, f.name in hashed, f.column or f.name)
            for f in config.sparse_features
        ),
        *(
            _ColumnSpec(name, "dense", source=column)
            for name, column in zip(config.dense_features, config.dense_columns)
        ),
        *(
            _ColumnSpec(LABEL_PREFIX + name, "label", source=column)
            for name, column in zip(config.objective_names, config.label_columns)
        ),
    ]


def _decoded(data_type: pa.DataType) -> pa.DataType:
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def _type_fits(spec: _ColumnSpec, data_type: pa.DataType) -> bool:
    data_type = _decoded(data_type)
    if spec.role == "dense":
        return pa.types.is_floating(data_type) or pa.types.is_integer(data_type)
    if spec.role == "label":
        return any(
            check(data_type)
            for check in (
                pa.types.is_floating,
                pa.types.is_integer,
                pa.types.is_boolean,
            )
        )
    if spec.feature.multi_valued:
        if not (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)):
            return False
        data_type = _decoded(data_type.value_type)
    return pa.types.is_integer(data_type) or (spec.hashed and is_bytes_type(data_type))


def _hash_hint(feature: str) -> str:
    return f"raw ids? train with --hash-raw-ids {feature} (or all) to hash them into the cardinality"


def schema_problems(specs: list[_ColumnSpec], schema: pa.Schema, rows: int) -> list[SchemaProblem]:
    """Missing columns and columns of the wrong type; every row counts as affected."""
    problems = []
    for spec in specs:
        found = spec.find(schema.names)
        if found is None:
            detail = f"missing, expected {spec.expected}"
            if spec.role == "label":
                detail += " (name the label column in the spec's data.labels)"
            problems.append(SchemaProblem(spec.source, "missing", rows, rows, detail))
            continue
        data_type = schema.field(found).type
        if not _type_fits(spec, data_type):
            detail = f"type {data_type}, expected {spec.expected}"
            hint = _hash_hint(spec.name) if spec.role == "sparse" and not spec.hashed else ""
            problems.append(SchemaProblem(found, "dtype", rows, rows, detail, hint))
    return problems


def problem_order(specs: list[_ColumnSpec]) -> dict[str, int]:
    """Column name (in files or in the spec's layout) -> its place in spec order."""
    order = {spec.name: index for index, spec in enumerate(specs)}
    order.update({spec.source: index for index, spec in enumerate(specs)})
    return order


def _rows_with(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per bag (offsets has rows + 1 entries): whether any of its values is flagged."""
    counts = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return counts[offsets[1:]] > counts[offsets[:-1]]


def normalize_column(
    spec: _ColumnSpec, column: pa.Array, name: str | None = None
) -> tuple[pa.Array, list[SchemaProblem]]:
    """A column of a fitting type as int64 / list<int64> / float32, and its value
    problems, which name the column name (default: its name in data files)."""
    rows = len(column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()

    def problem(kind: str, flags: np.ndarray, detail: str, hint: str = "") -> list[SchemaProblem]:
        count = int(np.count_nonzero(flags))
        found = SchemaProblem(name or spec.source, kind, count, rows, detail, hint)
        return [found] if count else []

    if spec.role != "sparse":
        values = column.cast(pa.float32(), safe=False).fill_null(0.0)
        values = values.to_numpy(zero_copy_only=False)
        null = np.asarray(column.is_null())
        if spec.role == "dense":
            bad = problem("value", ~null & ~np.isfinite(values), "are NaN or infinite")
        else:
            bad = problem("value", ~null & (values != 0) & (values != 1), "are not 0 or 1")
        return pa.array(values), problem("null", null, "are null") + bad

    feature = spec.feature
    if feature.multi_valued:
        raw_offsets = column.offsets.to_numpy().astype(np.int64)
        ids = column.values.slice(raw_offsets[0], raw_offsets[-1] - raw_offsets[0])
        offsets = raw_offsets - raw_offsets[0]
        null = np.asarray(column.is_null())
    else:
        ids, offsets, null = column, None, np.zeros(rows, bool)
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    null_ids = np.asarray(ids.is_null())
    unknown = feature.unknown_id
    if spec.hashed:
        present = ids.filter(pa.array(~null_ids)) if null_ids.any() else ids
        hashed = np.zeros(len(ids), np.int64)
        if unknown is None or feature.cardinality == 1:
            hashed[~null_ids] = hash_ids(present, feature.cardinality)
        else:  # every row but the unknown id's
            rows_hashed = hash_ids(present, feature.cardinality - 1)
            hashed[~null_ids] = rows_hashed + (rows_hashed >= unknown)
        numbers, out_of_range = hashed, np.zeros(len(ids), bool)
    else:
        numbers = ids.cast(pa.int64(), safe=False).fill_null(0).to_numpy(zero_copy_only=False)
        out_of_range = (numbers < 0) | (numbers >= feature.cardinality)
        if pa.types.is_uint64(ids.type):
            # The cast wrapped ids of 2**63 and above to negative numbers; compare them unsigned.
            unsigned = ids.fill_null(0).to_numpy(zero_copy_only=False)
            out_of_range |= unsigned >= feature.cardinality
    if unknown is not None and null_ids.any():
        numbers = np.where(null_ids, unknown, numbers)  # a null id is the unknown id
        null_ids = np.zeros(len(ids), bool)
    if offsets is None:
        null_rows, range_rows = null_ids, out_of_range
        normalized = pa.array(numbers)
    else:
        null_rows = null | _rows_with(null_ids, offsets)
        range_rows = _rows_with(out_of_range, offsets)
        if offsets[-1] < 2**31:
            normalized = pa.ListArray.from_arrays(offsets.astype(np.int32), numbers)
        else:
            normalized = pa.LargeListArray.from_arrays(offsets, numbers)
    nulls = "are null or hold null ids" if feature.multi_valued else "are null"
    problems = problem("null", null_rows, nulls)
    detail = f"have ids outside [0, {feature.cardinality})"
    problems += problem("range", range_rows, detail, _hash_hint(spec.name))
    return normalized, problems


def _check(
    table: pa.Table, config: ModelConfigBase, hash_raw_ids: bool | Collection[str]
) -> tuple[pa.Table | None, list[SchemaProblem]]:
    """The table in spec layout (None when a problem was found) and every problem."""
    specs = column_specs(config, hash_raw_ids)
    problems = schema_problems(specs, table.schema, table.num_rows)
    broken = {problem.column for problem in problems}
    columns = {}
    for spec in specs:
        found = spec.find(table.column_names)
        if found is not None and found not in broken:
            column = table.column(found).combine_chunks()
            columns[spec.name], column_problems = normalize_column(spec, column, found)
            problems += column_problems
    if problems:
        order = problem_order(specs)
        problems.sort(key=lambda problem: order[problem.column])
        return None, problems
    return pa.table(columns), problems


def check_table(
    table: pa.Table,
    config: ModelConfigBase,
    *,
    hash_raw_ids: bool | Collection[str] = False,
    source: str = "table",
) -> pa.Table:
    """Check a table against the spec and return it in the spec's layout.

    Args:
        table: examples, with the columns described in this module's docstring;
            other columns are dropped.
        config: the model's ModelConfigBase.
        hash_raw_ids: True to hash every sparse feature's raw ids into its
            cardinality (hash_ids), or the names of the features to hash.
        source: how error messages name the table, e.g. its path.

    Returns:
        the spec's columns in spec order: int64 or list<int64> ids, float32 dense
        values and float32 labels.

    Raises:
        SchemaError: a column is missing, has a wrong type, or has rows with nulls,
            ids outside the feature's cardinality, NaN dense values or labels other
            than 0 and 1; the message names each column and its number of rows.
    """
    checked, problems = _check(table, config, hash_raw_ids)
    if problems:
        raise SchemaError(source, config.model_name, problems)
    return checked
