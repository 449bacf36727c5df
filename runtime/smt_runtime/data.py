"""Training data: a split of examples (Examples), in memory or streamed from Parquet.

The data pipeline is split by concern; this module re-exports their public names, so
`from smt_runtime.data import ...` reaches all of them:
    batch.py       Batch (the model's input) and table_to_batches
    schema.py      the data format, check_table, SchemaError
    parquet_io.py  read_parquet, write_parquet, check_parquet, stream_parquet
    hashing.py     hash_ids (raw ids into a feature's cardinality)
    synthetic.py   synthetic data with a known optimal logloss
"""

import json
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .batch import Batch, table_to_batches
from .config import ModelConfigBase
from .hashing import hash_ids
from .parquet_io import (
    READ_ROWS,
    SHUFFLE_BUFFER_ROWS,
    check_parquet,
    read_parquet,
    read_sparse_columns,
    stream_parquet,
    write_parquet,
)
from .schema import (
    LABEL_PREFIX,
    SchemaError,
    SchemaProblem,
    check_table,
    column_names,
    file_columns,
)
from .synthetic import (
    SyntheticWorld,
    generate_synthetic,
    optimal_metrics,
    optimal_path,
    sample_synthetic,
    write_synthetic,
)

__all__ = [
    "LABEL_PREFIX",
    "READ_ROWS",
    "SHUFFLE_BUFFER_ROWS",
    "Batch",
    "Examples",
    "SchemaError",
    "SchemaProblem",
    "SyntheticWorld",
    "check_parquet",
    "check_table",
    "column_names",
    "file_columns",
    "generate_synthetic",
    "hash_ids",
    "optimal_metrics",
    "optimal_path",
    "read_parquet",
    "sample_synthetic",
    "stream_parquet",
    "table_to_batches",
    "write_parquet",
    "write_synthetic",
]


class Examples:
    """One split of examples (train, validation or test): a table in memory or a
    Parquet file streamed in batches, checked against the spec once, when opened.

    Build one with from_table, from_parquet or synthetic; batches() reads it.

    Attributes:
        table: the examples in the spec's layout; None for a file.
        path: the Parquet file; None for a table.
        num_rows: number of examples.
        optimal: optimal_metrics of the split when known (synthetic data, or a file
            with write_synthetic's JSON next to it), else None.
    """

    def __init__(
        self,
        table: pa.Table | None,
        path: Path | None,
        num_rows: int,
        optimal: dict[str, dict[str, float]] | None = None,
        hash_raw_ids: bool | Collection[str] = False,
    ) -> None:
        self.table, self.path, self.num_rows = table, path, num_rows
        self.optimal, self.hash_raw_ids = optimal, hash_raw_ids

    @classmethod
    def from_table(cls, table: pa.Table, config: ModelConfigBase) -> "Examples":
        """Examples of an in-memory table, checked by check_table.

        Raises:
            SchemaError: the table does not match the spec.
        """
        table = check_table(table, config)
        return cls(table, None, table.num_rows)

    @classmethod
    def from_parquet(
        cls,
        path: str | Path,
        config: ModelConfigBase,
        *,
        hash_raw_ids: bool | Collection[str] = False,
    ) -> "Examples":
        """Examples of a Parquet file of any size, checked now by check_parquet and
        streamed by every call of batches().

        Raises:
            SchemaError: the file does not match the spec.
            FileNotFoundError: there is no file at path.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no Parquet file at {path}; check the path")
        rows = check_parquet(path, config, hash_raw_ids=hash_raw_ids)
        optimal_file = optimal_path(path)
        optimal = None
        if optimal_file.is_file():
            optimal = json.loads(optimal_file.read_text())["objectives"]
        return cls(None, path, rows, optimal, hash_raw_ids)

    @classmethod
    def synthetic(
        cls, config: ModelConfigBase, num_examples: int, seed: int, shifted: bool = False
    ) -> "Examples":
        """num_examples synthetic examples drawn with seed (generate_synthetic; shifted:
        from the test distribution), with their optimal metrics."""
        table, probabilities = sample_synthetic(config, num_examples, seed, shifted)
        return cls(table, None, table.num_rows, optimal_metrics(config, table, probabilities))

    def label_rates(self, config: ModelConfigBase) -> dict[str, float]:
        """objective -> rate of positive labels over every row of the split (reads
        only the label columns of a file)."""
        names = [LABEL_PREFIX + name for name in config.objective_names]
        if self.table is not None:
            table = self.table.select(names)
        else:  # the file's label columns, renamed to the spec's layout
            sources = file_columns(config, pq.read_schema(self.path).names)[-len(names) :]
            table = pq.read_table(self.path, columns=sources).rename_columns(names)
        return {
            name: float(
                np.mean(
                    table.column(column).to_numpy(zero_copy_only=False),
                    dtype=np.float64,
                )
            )
            for name, column in zip(config.objective_names, names)
        }

    def id_counts(self, config: ModelConfigBase) -> dict[str, np.ndarray]:
        """feature -> how often each of its ids occurs in the split (int64, one count per id
        in [0, cardinality); every id of a multi-valued feature's bags counts). A file is
        read once more, its sparse columns only, chunk by chunk, counted with numpy's
        bincount."""
        counts = {f.name: np.zeros(f.cardinality, np.int64) for f in config.sparse_features}
        sizes = {f.name: f.cardinality for f in config.sparse_features}
        if self.table is not None:
            chunks: Iterator[dict[str, pa.Array]] = iter([{name: self.table.column(name).combine_chunks() for name in counts}])
        else:
            chunks = read_sparse_columns(self.path, config, hash_raw_ids=self.hash_raw_ids)
        for chunk in chunks:
            for name, column in chunk.items():
                ids = column.flatten() if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) else column
                counts[name] += np.bincount(ids.to_numpy(zero_copy_only=False), minlength=sizes[name])
        return counts

    def batches(
        self,
        config: ModelConfigBase,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """Batches of batch_size examples of shard (rank, world_size): this rank's part
        of every global batch of world_size X batch_size examples (batch.rank_rows).

        Args:
            shuffle: visit the examples in a random order drawn from seed (see
                table_to_batches and stream_parquet).
        """
        if self.table is None:
            return stream_parquet(
                self.path,
                config,
                batch_size,
                shuffle,
                seed,
                hash_raw_ids=self.hash_raw_ids,
                validate=False,
                shard=shard,
            )
        return table_to_batches(self.table, batch_size, shuffle, seed, shard=shard)
