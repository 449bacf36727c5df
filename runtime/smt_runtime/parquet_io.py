"""Parquet I/O: writing, reading and checking files against the spec, and a streaming
reader for files larger than memory (see schema.py for the data format)."""

from collections.abc import Collection, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .batch import Batch, _Columns, rank_rows
from .config import ModelConfigBase
from .hashing import keyed_rng
from .schema import (
    SchemaError,
    SchemaProblem,
    check_table,
    column_specs,
    file_columns,
    normalize_column,
    problem_order,
    schema_problems,
)

READ_ROWS = 65_536  # rows per record batch read from Parquet by the streaming reader
SHUFFLE_BUFFER_ROWS = 262_144  # rows the streaming reader shuffles together


class ParquetReadError(ValueError):
    """A file that cannot be read as Parquet (missing, not Parquet, truncated or with
    corrupt pages), in one line naming the file."""

    def __init__(self, path: str | Path, error: BaseException, reading: str = "open") -> None:
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        super().__init__(
            f"{path}: cannot {reading} it as Parquet ({detail}); check the path, or"
            " re-write the file (`python -m <package> write-data DIR` shows the format)"
        )


def _parquet_file(path: str | Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ParquetReadError(path, error) from None


def _read_batches(path: str | Path, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The record batches of an open file, with a corrupt page as a ParquetReadError."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as error:
            raise ParquetReadError(path, error, "read") from None
        yield batch


def check_parquet(
    path: str | Path,
    config: ModelConfigBase,
    *,
    hash_raw_ids: bool | Collection[str] = False,
    read_rows: int = READ_ROWS,
) -> int:
    """Check a Parquet file against the spec like check_table, streaming it in chunks
    of read_rows rows so it never has to fit in memory.

    Returns:
        the file's number of rows.

    Raises:
        SchemaError: as check_table, with row counts over the whole file.
    """
    file = _parquet_file(path)
    rows = file.metadata.num_rows
    specs = column_specs(config, hash_raw_ids)
    problems = schema_problems(specs, file.schema_arrow, rows)
    broken = {problem.column for problem in problems}
    present = file.schema_arrow.names
    readable = [
        (spec, spec.find(present))
        for spec in specs
        if spec.find(present) is not None and spec.find(present) not in broken
    ]
    counts: dict[tuple[str, str], SchemaProblem] = {}
    if readable:
        names = [name for _, name in readable]
        batches = file.iter_batches(batch_size=read_rows, columns=names)
        for record_batch in _read_batches(path, batches):
            for (spec, name), column in zip(readable, record_batch.columns):
                for problem in normalize_column(spec, column, name)[1]:
                    key = (problem.column, problem.kind)
                    seen = counts.get(key)
                    counts[key] = replace(problem, rows=problem.rows + (seen.rows if seen else 0))
    problems += [replace(problem, total_rows=rows) for problem in counts.values()]
    if problems:
        order = problem_order(specs)
        problems.sort(key=lambda problem: order[problem.column])
        raise SchemaError(str(path), config.model_name, problems)
    return rows


def read_sparse_columns(
    path: str | Path,
    config: ModelConfigBase,
    *,
    hash_raw_ids: bool | Collection[str] = False,
    read_rows: int = READ_ROWS,
) -> Iterator[dict[str, pa.Array]]:
    """The sparse columns of a checked Parquet file (check_parquet), chunk by chunk of
    read_rows rows: feature -> its ids as check_table lays them out (int64, or list<int64>),
    hashed as hash_raw_ids says. Reads no other column."""
    file = _parquet_file(path)
    specs = [spec for spec in column_specs(config, hash_raw_ids) if spec.role == "sparse"]
    names = [spec.find(file.schema_arrow.names) for spec in specs]
    batches = file.iter_batches(batch_size=read_rows, columns=names)
    for record_batch in _read_batches(path, batches):
        yield {
            spec.name: normalize_column(spec, column, name)[0]
            for spec, name, column in zip(specs, names, record_batch.columns)
        }


def write_parquet(table: pa.Table, path: str | Path, row_group_size: int | None = None) -> None:
    """Write a table to a Parquet file (row groups of row_group_size rows, if given)."""
    pq.write_table(table, path, row_group_size=row_group_size)


def read_parquet(
    path: str | Path,
    config: ModelConfigBase | None = None,
    *,
    hash_raw_ids: bool | Collection[str] = False,
) -> pa.Table:
    """Read a Parquet file into memory.

    Without config, the file as written (e.g. by write_parquet). With config, only the
    spec's columns, checked and laid out by check_table; for files larger than memory
    use stream_parquet.

    Raises:
        SchemaError: with config, the file does not match the spec (see check_table).
    """
    try:
        if config is None:
            return pq.read_table(path)
        names = file_columns(config, pq.read_schema(path).names)
        table = pq.read_table(path, columns=names)
    except (pa.ArrowException, OSError) as error:
        raise ParquetReadError(path, error, "read") from None
    return check_table(table, config, hash_raw_ids=hash_raw_ids, source=str(path))


def stream_parquet(
    path: str | Path,
    config: ModelConfigBase,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    *,
    hash_raw_ids: bool | Collection[str] = False,
    shuffle_buffer_rows: int = SHUFFLE_BUFFER_ROWS,
    read_rows: int = READ_ROWS,
    validate: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """Batches of a Parquet file of any size, holding at most about
    shuffle_buffer_rows + read_rows rows in memory.

    Without shuffle the batches equal table_to_batches(read_parquet(path, config),
    batch_size). With shuffle, row groups are read in a random order and rows are
    shuffled within a buffer of shuffle_buffer_rows rows (rows left over after the
    buffer's last full batch move on to the next buffer): a file that fits in one
    buffer and one row group gives exactly table_to_batches(..., shuffle=True, seed).
    Write files with several row groups (write_parquet's row_group_size) for a better
    shuffle of large data.

    Args:
        path: the Parquet file.
        config: the model's ModelConfigBase; columns are checked and laid out as by
            check_table.
        batch_size: rows per batch; the last batch may be smaller.
        shuffle: shuffle as described above, from seed.
        seed: seed of the shuffle.
        hash_raw_ids: the sparse features to hash (see check_table).
        shuffle_buffer_rows: rows shuffled together.
        read_rows: rows per record batch read from the file.
        validate: check the whole file first (check_parquet, one extra streaming
            pass), so a bad row far into the file fails before training starts;
            without it, the first chunk with a problem raises.
        shard: (rank, world_size): yield this rank's part of every global batch (see
            batch.rank_rows); every rank reads the whole file in the same order.

    Yields:
        Batch objects with dense B X N, labels B X T.

    Raises:
        SchemaError: the file does not match the spec.
    """
    if validate:
        check_parquet(path, config, hash_raw_ids=hash_raw_ids, read_rows=read_rows)
    file = _parquet_file(path)
    groups = np.arange(file.num_row_groups)
    if shuffle:
        groups = keyed_rng(seed, "row_groups").permutation(groups)
    rng = np.random.default_rng(seed)
    global_size = batch_size * shard[1]
    buffer_rows = max(shuffle_buffer_rows, global_size) if shuffle else global_size
    record_batches = file.iter_batches(
        batch_size=read_rows,
        row_groups=groups.tolist(),
        columns=file_columns(config, file.schema_arrow.names),
    )
    pending: list[pa.Table] = []
    pending_rows = 0
    for record_batch in _read_batches(path, record_batches):
        chunk = pa.Table.from_batches([record_batch])
        pending.append(check_table(chunk, config, hash_raw_ids=hash_raw_ids, source=str(path)))
        pending_rows += chunk.num_rows
        if pending_rows >= buffer_rows:
            buffer = pa.concat_tables(pending)
            order = rng.permutation(buffer.num_rows) if shuffle else np.arange(buffer.num_rows)
            full = buffer.num_rows // global_size * global_size
            columns = _Columns.from_table(buffer)
            for start in range(0, full, global_size):
                yield columns.batch(rank_rows(order[start : start + global_size], shard))
            pending = [buffer.take(order[full:])]
            pending_rows = buffer.num_rows - full
    if pending_rows:
        buffer = pa.concat_tables(pending)
        order = rng.permutation(buffer.num_rows) if shuffle else np.arange(buffer.num_rows)
        columns = _Columns.from_table(buffer)
        for start in range(0, buffer.num_rows, global_size):
            rows = order[start : start + global_size]
            if len(rows) >= shard[1]:  # a last global batch too small to give every rank a row is left out
                yield columns.batch(rank_rows(rows, shard))
