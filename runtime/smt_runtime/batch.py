"""The Batch the model consumes, and vectorized batching of in-memory tables.

Shapes: B = batch size, N = number of dense features, T = number of objectives.
"""

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .config import ModelConfigBase
from .schema import LABEL_PREFIX, check_table


@dataclass
class Batch:
    """One mini-batch of model inputs and labels.

    Attributes:
        dense: tensor of shape B X N, float32.
        sparse: a KeyedJaggedTensor with one key per sparse feature (config order):
            every example's ids of that feature (one for a single-valued feature, a bag
            for a multi-valued one), TorchRec's input format for embedding tables.
        labels: tensor of shape B X T, float32 0/1, objectives in config order.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> "Batch":
        """This batch with every tensor on device (itself when already there)."""
        if self.labels.device == device:
            return self
        return Batch(
            dense=self.dense.to(device, non_blocking=True),
            sparse=self.sparse.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
        )


def sparse_input(ids: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> KeyedJaggedTensor:
    """The KeyedJaggedTensor of per-feature ids (1-D int64, concatenated over the batch)
    and bag lengths (1-D int64 of length B), keys in the order of ids."""
    return KeyedJaggedTensor(
        keys=list(ids),
        values=torch.cat(list(ids.values())) if ids else torch.zeros(0, dtype=torch.int64),
        lengths=torch.cat(list(lengths.values())) if lengths else torch.zeros(0, dtype=torch.int64),
    )


@dataclass(frozen=True)
class _Columns:
    """A table's columns as numpy arrays, ready for row gathering.

    sparse maps a feature to (ids, offsets): offsets has one more entry than rows
    for a multi-valued feature, and is None for a single-valued one.
    """

    sparse: dict[str, tuple[np.ndarray, np.ndarray | None]]
    dense: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table) -> "_Columns":
        sparse, dense, labels = {}, [], []
        for name in table.column_names:
            column = table.column(name).combine_chunks()
            if name.startswith(LABEL_PREFIX):
                labels.append(column.to_numpy().astype(np.float32))
            elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                offsets = column.offsets.to_numpy().astype(np.int64)
                ids = column.values.to_numpy()[offsets[0] : offsets[-1]]
                sparse[name] = (ids.astype(np.int64), offsets - offsets[0])
            elif pa.types.is_integer(column.type):
                sparse[name] = (column.to_numpy().astype(np.int64), None)
            else:
                dense.append(column.to_numpy().astype(np.float32))
        rows = table.num_rows
        return cls(
            sparse=sparse,
            dense=np.stack(dense, axis=1) if dense else np.zeros((rows, 0), np.float32),
            labels=(np.stack(labels, axis=1) if labels else np.zeros((rows, 0), np.float32)),
        )

    def batch(self, rows: np.ndarray) -> Batch:
        ids, lengths = {}, {}
        for name, (feature_ids, bag_offsets) in self.sparse.items():
            if bag_offsets is None:
                ids[name] = torch.from_numpy(feature_ids[rows])
                lengths[name] = torch.ones(len(rows), dtype=torch.int64)
            else:
                starts = bag_offsets[rows]
                bag_lengths = bag_offsets[rows + 1] - starts
                batch_offsets = np.concatenate([[0], np.cumsum(bag_lengths)[:-1]])
                # Position of every id of the chosen bags in feature_ids, without a Python loop.
                positions = np.repeat(starts - batch_offsets, bag_lengths)
                positions += np.arange(positions.size)
                ids[name] = torch.from_numpy(feature_ids[positions])
                lengths[name] = torch.from_numpy(bag_lengths.astype(np.int64))
        return Batch(
            dense=torch.from_numpy(self.dense[rows]),
            sparse=sparse_input(ids, lengths),
            labels=torch.from_numpy(self.labels[rows]),
        )


def rank_rows(rows: np.ndarray, shard: tuple[int, int]) -> np.ndarray:
    """This rank's part of a global batch's rows: the rank-th of world_size nearly equal
    consecutive slices. Every rank sees the same global batches in the same order, so W
    processes with batch size B train on exactly the examples that one process with batch
    size W x B would, batch by batch (tests/test_sharding.py compares their losses)."""
    rank, world_size = shard
    if world_size == 1:
        return rows
    return np.array_split(rows, world_size)[rank]


def table_to_batches(
    table: pa.Table,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    *,
    config: ModelConfigBase | None = None,
    hash_raw_ids: bool | Collection[str] = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """Split an in-memory table into Batches of batch_size rows (the last may be smaller).

    Without config, columns are recognised by type: label_* columns are labels, integer
    and list<integer> columns sparse features, float columns dense features, each group
    in table order (the layout of generate_synthetic and check_table). With config, the
    table is first checked and laid out by check_table.

    Args:
        table: examples, e.g. from generate_synthetic or read_parquet.
        batch_size: rows per batch.
        shuffle: visit rows in a random order drawn from seed.
        seed: seed of the shuffle.
        config: the model's ModelConfigBase, to check the table against the spec.
        hash_raw_ids: with config, the sparse features to hash (see check_table).
        shard: (rank, world_size): yield this rank's part of every global batch of
            world_size X batch_size rows (rank_rows); a last global batch with fewer
            rows than ranks is left out, so that every rank yields as many batches.

    Yields:
        Batch objects with dense B X N, labels B X T.

    Raises:
        SchemaError: with config, the table does not match the spec.
    """
    if config is not None:
        table = check_table(table, config, hash_raw_ids=hash_raw_ids)
    columns = _Columns.from_table(table)
    order = np.arange(table.num_rows)
    if shuffle:
        order = np.random.default_rng(seed).permutation(table.num_rows)
    global_size = batch_size * shard[1]
    for start in range(0, table.num_rows, global_size):
        rows = order[start : start + global_size]
        if len(rows) >= shard[1]:
            yield columns.batch(rank_rows(rows, shard))
