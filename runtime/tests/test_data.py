"""The runtime's data path: schema checks, id hashing, TorchRec batches (KeyedJaggedTensor of ids
with their bag lengths), Parquet round trips, the streaming reader, each rank's share of every
global batch, the spec's data conventions (column names) and unknown ids. On feed_ctr's spec,
which has single- and multi-valued features."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torchrec import EmbeddingBagCollection

from smt_runtime.batch import Batch
from smt_runtime.data import (
    Examples,
    SchemaError,
    check_parquet,
    check_table,
    column_names,
    generate_synthetic,
    hash_ids,
    read_parquet,
    stream_parquet,
    table_to_batches,
    write_parquet,
    write_synthetic,
)
from smt_runtime.distributed import Runtime
from smt_runtime.sparse import table_configs
from smt_runtime.training import build_model, steps_per_epoch

ROWS = 500


@pytest.fixture(scope="module")
def config(feed_ctr: Any) -> Any:
    return feed_ctr.train.PARTS.config()


@pytest.fixture(scope="module")
def single(config: Any) -> Any:
    """A single-valued sparse feature of the spec."""
    return next(f for f in config.sparse_features if not f.multi_valued)


@pytest.fixture(scope="module")
def multi(config: Any) -> Any:
    """A multi-valued sparse feature of the spec."""
    return next(f for f in config.sparse_features if f.multi_valued)


@pytest.fixture(scope="module")
def table(config: Any) -> pa.Table:
    return generate_synthetic(config, ROWS, seed=3)


def replaced(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def assert_batches_equal(actual: list[Batch], expected: list[Batch]) -> None:
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a.dense, b.dense)
        torch.testing.assert_close(a.labels, b.labels)
        assert a.sparse.keys() == b.sparse.keys()
        assert torch.equal(a.sparse.values(), b.sparse.values())
        assert torch.equal(a.sparse.lengths(), b.sparse.lengths())


def test_a_valid_table_is_laid_out_in_spec_order(table: pa.Table, config: Any) -> None:
    reordered = table.select(list(reversed(table.column_names)))
    reordered = reordered.append_column("unused", pa.array(["x"] * ROWS))
    assert check_table(reordered, config).equals(table)
    expected = list(table_to_batches(table, 128, shuffle=True, seed=1))
    assert_batches_equal(list(table_to_batches(reordered, 128, shuffle=True, seed=1, config=config)), expected)


def test_synthetic_data_is_deterministic_and_laid_out_by_config(config: Any) -> None:
    table = generate_synthetic(config, ROWS, seed=7)
    assert table.equals(generate_synthetic(config, ROWS, seed=7))
    assert not table.equals(generate_synthetic(config, ROWS, seed=8))
    labels = [f"label_{name}" for name in config.objective_names]
    assert table.column_names == [f.name for f in config.sparse_features] + list(config.dense_features) + labels
    for feature in config.sparse_features:
        column = table.column(feature.name).combine_chunks()
        ids = (column.values if feature.multi_valued else column).to_numpy()
        assert 0 <= ids.min() and ids.max() < feature.cardinality
        if feature.multi_valued:
            lengths = np.diff(column.offsets.to_numpy())
            assert (lengths.min(), lengths.max()) == config.synthetic.bag_lengths


def test_schema_errors_name_the_column_and_count_the_rows(table: pa.Table, config: Any, single: Any, multi: Any, tmp_path: Any) -> None:
    ids = table.column(single.name).to_numpy().copy()
    ids[:37], ids[100:103] = single.cardinality, -1
    label = "label_" + config.objective_names[0]
    labels = table.column(label).to_numpy().copy()
    labels[200:205] = 2.0
    bad = replaced(replaced(table, single.name, pa.array(ids)), label, pa.array(labels)).drop_columns([multi.name])
    with pytest.raises(SchemaError) as raised:
        check_table(bad, config, source="bad.parquet")
    error = raised.value
    assert isinstance(error, ValueError)
    problems = {(p.column, p.kind): p.rows for p in error.problems}
    assert problems == {(single.name, "range"): 40, (label, "value"): 5, (multi.name, "missing"): ROWS}
    message = str(error)
    assert message.startswith(f"bad.parquet does not match the spec of model {config.model_name}: ")
    assert f"column {single.name!r}: 40 of {ROWS} rows have ids outside [0, {single.cardinality})" in message
    assert f"column {label!r}: 5 of {ROWS} rows are not 0 or 1" in message
    assert f"column {multi.name!r}: missing" in message and "\n" not in message

    # The same counts from the file, in memory and streamed in chunks across row groups.
    path = tmp_path / "bad.parquet"
    write_parquet(bad, path, row_group_size=96)
    for check in (
        lambda: read_parquet(path, config),
        lambda: check_parquet(path, config, read_rows=64),
        lambda: next(stream_parquet(path, config, 64, read_rows=64)),
    ):
        with pytest.raises(SchemaError) as raised:
            check()
        assert {(p.column, p.kind): p.rows for p in raised.value.problems} == problems
        assert str(path) in str(raised.value)


def test_wrong_dtypes_and_nulls_are_schema_errors(table: pa.Table, config: Any, single: Any) -> None:
    as_strings = pc.cast(table.column(single.name), pa.string())
    expected = f"column '{single.name}': type string, expected integer ids .*all {ROWS} rows"
    with pytest.raises(SchemaError, match=expected + f".*--hash-raw-ids {single.name}"):
        check_table(replaced(table, single.name, as_strings), config)
    with_nulls = pa.array([None] * 7 + table.column(single.name).to_pylist()[7:])
    with pytest.raises(SchemaError, match=f"'{single.name}': 7 of {ROWS} rows are null"):
        check_table(replaced(table, single.name, with_nulls), config)
    name = config.dense_features[0]
    values = table.column(name).to_numpy().copy()
    values[:3] = np.nan
    with pytest.raises(SchemaError, match=f"'{name}': 3 of {ROWS} rows are NaN"):
        check_table(replaced(table, name, pa.array(values)), config)
    with pytest.raises(SchemaError, match=f"'{name}': type string, expected a number"):
        check_table(replaced(table, name, pc.cast(table.column(name), pa.string())), config)


def test_multi_valued_ids_out_of_range_count_rows_not_ids(table: pa.Table, config: Any, multi: Any) -> None:
    bags = table.column(multi.name).to_pylist()
    for row in range(11):
        bags[row] = bags[row] + [multi.cardinality, multi.cardinality + 5]
    bags[20] = []  # an example without ids is fine
    with pytest.raises(SchemaError) as raised:
        check_table(replaced(table, multi.name, pa.array(bags, pa.list_(pa.int64()))), config)
    [problem] = raised.value.problems
    assert (problem.column, problem.kind, problem.rows) == (multi.name, "range", 11)
    scalar = replaced(table, multi.name, pa.array(np.zeros(ROWS, np.int64)))
    with pytest.raises(SchemaError, match="expected a list of integer ids"):
        check_table(scalar, config)


def test_batches_are_keyed_jagged_ids_that_torchrec_tables_pool(config: Any, single: Any, multi: Any) -> None:
    """A batch's KeyedJaggedTensor holds every feature's ids in config order with one length per
    example: 1 for a single-valued feature (its id, in example order), the bag's size for a
    multi-valued one (0 for an empty bag). TorchRec's tables for the spec sum a single id (its row)
    and average a bag (zeros for an empty one)."""
    table = generate_synthetic(config, 64, seed=5)
    bags = table.column(multi.name).to_pylist()
    bags[20] = []
    table = replaced(table, multi.name, pa.array(bags, pa.list_(pa.int64())))
    batch = next(table_to_batches(table, 64, config=config))
    features = batch.sparse.to_dict()
    assert list(features) == [f.name for f in config.sparse_features]
    assert features[multi.name].lengths().tolist() == [len(bag) for bag in bags]
    assert features[multi.name].values().tolist() == sum(bags, [])
    assert features[single.name].lengths().tolist() == [1] * 64
    assert features[single.name].values().tolist() == table.column(single.name).to_pylist()

    torch.manual_seed(0)
    tables = EmbeddingBagCollection(table_configs(config))
    pooled = tables(batch.sparse).to_dict()
    weights = {name: bag.weight for name, bag in tables.embedding_bags.items()}
    for feature in config.sparse_features:
        assert tables.embedding_bags[feature.name].weight.shape == (feature.num_embeddings, feature.embedding_dim)
    rows = [weights[multi.name][bag].mean(dim=0) if bag else torch.zeros(multi.embedding_dim) for bag in bags]
    torch.testing.assert_close(pooled[multi.name], torch.stack(rows))
    torch.testing.assert_close(pooled[single.name], weights[single.name][features[single.name].values()])


def test_batches_round_trip_through_parquet(config: Any, tmp_path: Any) -> None:
    table = generate_synthetic(config, 300, seed=1)
    write_parquet(table, tmp_path / "data.parquet")
    assert read_parquet(tmp_path / "data.parquet").equals(table)
    batches = list(table_to_batches(table, 128, shuffle=True, seed=0))
    assert [b.batch_size for b in batches] == [128, 128, 44]
    for b in batches:
        assert b.dense.shape == (b.batch_size, config.num_dense_features)
        assert b.labels.shape == (b.batch_size, config.num_objectives)
        assert b.sparse.lengths().shape == (config.num_sparse_features * b.batch_size,)
    labels = sum(float(b.labels.sum()) for b in batches)
    assert labels == pytest.approx(sum(sum(table.column(f"label_{n}").to_pylist()) for n in config.objective_names))


def test_hash_ids_is_stable_and_in_range() -> None:
    # Pinned: the same rows in every process and release (Python's hash() is salted).
    assert hash_ids(np.array([0, 1, -1, 2**40]), 1000).tolist() == [535, 465, 936, 641]
    assert hash_ids(["a", "b", "", "héllo"], 1000).tolist() == [583, 980, 8, 681]
    raw = np.random.default_rng(0).integers(-(2**62), 2**62, 20000)
    for cardinality in (1, 7, 1000):
        rows = hash_ids(raw, cardinality)
        assert rows.dtype == np.int64 and rows.min() >= 0 and rows.max() < cardinality
    rows = hash_ids(raw, 100)
    assert np.bincount(rows, minlength=100).min() > 100  # spread, not clustered
    assert hash_ids(pa.array(raw), 100).tolist() == rows.tolist()
    assert hash_ids(raw.tolist(), 100).tolist() == rows.tolist()
    words = pa.array([f"user-{i}" for i in range(300)] * 2)
    hashed = hash_ids(words, 50)
    assert hashed[:300].tolist() == hashed[300:].tolist()
    assert hash_ids(words.dictionary_encode(), 50).tolist() == hashed.tolist()
    with pytest.raises(ValueError):
        hash_ids([1, 2], 0)


def test_raw_ids_are_hashed_when_reading(feed_ctr: Any, config: Any, single: Any, multi: Any, tmp_path: Any) -> None:
    table = generate_synthetic(config, ROWS, seed=6)
    raw_single = pc.cast(pc.add(table.column(single.name), 10**12), pa.string())
    raw_bags = [[f"tag-{i}" for i in bag] for bag in table.column(multi.name).to_pylist()]
    raw = replaced(replaced(table, single.name, raw_single), multi.name, pa.array(raw_bags))
    path = tmp_path / "raw.parquet"
    write_parquet(raw, path)
    with pytest.raises(SchemaError, match=f"--hash-raw-ids {single.name}"):
        read_parquet(path, config)
    hashed = [single.name, multi.name]
    checked = read_parquet(path, config, hash_raw_ids=hashed)
    assert checked.column(single.name).to_numpy().tolist() == hash_ids(raw_single, single.cardinality).tolist()
    flat_tags = pa.array([tag for bag in raw_bags for tag in bag])
    hashed_tags = checked.column(multi.name).combine_chunks().values.to_numpy()
    assert hashed_tags.tolist() == hash_ids(flat_tags, multi.cardinality).tolist()
    streamed = list(stream_parquet(path, config, 128, hash_raw_ids=hashed, read_rows=100))
    assert_batches_equal(streamed, list(table_to_batches(checked, 128)))
    with torch.no_grad():  # hashed ids are valid model inputs
        logits = build_model(feed_ctr.train.PARTS, config)(streamed[0].dense, streamed[0].sparse)
    assert logits.shape == (128, config.num_objectives) and torch.isfinite(logits).all()


def test_streaming_reader_equals_in_memory_batches(config: Any, single: Any, tmp_path: Any) -> None:
    table = generate_synthetic(config, 1000, seed=7)
    path = tmp_path / "data.parquet"
    write_parquet(table, path, row_group_size=150)
    in_memory = read_parquet(path, config)
    assert in_memory.equals(table)
    expected = list(table_to_batches(in_memory, 128))
    assert [b.batch_size for b in expected] == [128] * 7 + [104]
    assert_batches_equal(list(stream_parquet(path, config, 128, read_rows=100)), expected)

    # One buffer holding the whole file: exactly the in-memory shuffle.
    single_group = tmp_path / "single.parquet"
    write_parquet(table, single_group)
    shuffled = list(table_to_batches(table, 128, shuffle=True, seed=3))
    assert_batches_equal(list(stream_parquet(single_group, config, 128, shuffle=True, seed=3)), shuffled)

    # A buffer smaller than the file: every row exactly once, in a new order per seed.
    def rows(batches: list[Batch]) -> np.ndarray:
        return np.concatenate([torch.cat([b.dense, b.labels], 1).numpy() for b in batches])

    def small_buffer(seed: int) -> list[Batch]:
        return list(stream_parquet(path, config, 128, shuffle=True, seed=seed, shuffle_buffer_rows=300, read_rows=100))

    small = small_buffer(3)
    assert [b.batch_size for b in small][:-1] == [128] * 7 and sum(b.batch_size for b in small) == 1000
    ids = torch.cat([b.sparse[single.name].values() for b in small])
    assert sorted(ids.tolist()) == sorted(table.column(single.name).to_pylist())
    everything = rows(expected)
    assert sorted(map(tuple, rows(small))) == sorted(map(tuple, everything))
    assert not np.array_equal(rows(small), everything)
    assert not np.array_equal(rows(small_buffer(4)), rows(small))


@pytest.mark.parametrize("row_group_size", [100, 1000])  # by row groups, by rows
def test_ranks_split_every_global_batch_of_a_split(config: Any, single: Any, tmp_path: Any, row_group_size: int) -> None:
    """W ranks with batch size B read, batch by batch, exactly the global batches of one process
    with batch size W X B, each rank a consecutive slice of nearly equal size; every rank reads as
    many batches as steps_per_epoch counts, so all take the same steps."""
    table = generate_synthetic(config, 1000, seed=7)
    path = tmp_path / "data.parquet"
    write_parquet(table, path, row_group_size=row_group_size)
    for examples in (Examples.from_table(table, config), Examples.from_parquet(path, config)):
        assert examples.num_rows == 1000
        whole = list(examples.batches(config, 3 * 64, shuffle=True, seed=1))
        shards = [list(examples.batches(config, 64, shuffle=True, seed=1, shard=(rank, 3))) for rank in range(3)]
        steps = steps_per_epoch(examples, replace(config, batch_size=64), Runtime(world_size=3))
        assert [len(batches) for batches in shards] == [len(whole)] * 3 == [steps] * 3
        for position, global_batch in enumerate(whole):
            parts = [batches[position] for batches in shards]
            assert max(p.batch_size for p in parts) - min(p.batch_size for p in parts) <= 1
            torch.testing.assert_close(torch.cat([p.dense for p in parts]), global_batch.dense)
            torch.testing.assert_close(torch.cat([p.labels for p in parts]), global_batch.labels)
            ids = [torch.cat([p.sparse[f.name].values() for p in parts]) for f in config.sparse_features]
            assert all(torch.equal(i, global_batch.sparse[f.name].values()) for i, f in zip(ids, config.sparse_features))
        rows = sorted(torch.cat([b.sparse[single.name].values() for batches in shards for b in batches]).tolist())
        assert rows == sorted(table.column(single.name).to_pylist())  # every row in exactly one shard


def test_a_last_global_batch_smaller_than_the_ranks_is_left_out(config: Any) -> None:
    """1,000 rows in global batches of 999 leave one row: it cannot give each of 3 ranks a row, so
    no rank reads it (a rank without a batch would wait for the others forever)."""
    examples = Examples.from_table(generate_synthetic(config, 1000, seed=7), config)
    shards = [list(examples.batches(config, 333, shard=(rank, 3))) for rank in range(3)]
    assert [[b.batch_size for b in batches] for batches in shards] == [[333]] * 3
    assert steps_per_epoch(examples, replace(config, batch_size=333), Runtime(world_size=3)) == 1


def test_examples_from_a_missing_or_wrong_file_fail_when_opened(config: Any, single: Any, tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match="no Parquet file"):
        Examples.from_parquet(tmp_path / "missing.parquet", config)
    write_parquet(generate_synthetic(config, 50, seed=0).drop_columns([single.name]), tmp_path / "broken.parquet")
    with pytest.raises(SchemaError, match=single.name):
        Examples.from_parquet(tmp_path / "broken.parquet", config)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="cannot open it as Parquet"):
        Examples.from_parquet(tmp_path / "text.parquet", config)


def test_data_conventions_name_the_columns_of_files(config: Any, tmp_path: Any) -> None:
    """A file whose columns are named as the spec's data section says (e.g. a label column
    called clicked_click) trains without renaming; synthetic tables keep the spec's names."""
    named = replace(
        config,
        sparse_features=tuple(replace(f, column="in_" + f.name) for f in config.sparse_features),
        dense_columns=tuple("in_" + name for name in config.dense_features),
        label_columns=tuple("clicked_" + name for name in config.objective_names),
    )
    path = tmp_path / "named.parquet"
    write_synthetic(named, path, ROWS, seed=1)
    assert pq.read_schema(path).names == column_names(named)
    assert all(name.startswith(("in_", "clicked_")) for name in column_names(named))
    examples = Examples.from_parquet(path, named)
    expected = generate_synthetic(named, ROWS, seed=1)
    assert_batches_equal(list(examples.batches(named, 128)), list(table_to_batches(expected, 128)))
    for name, rate in examples.label_rates(named).items():
        assert rate == pytest.approx(np.mean(expected.column("label_" + name).to_numpy()))
    write_parquet(pq.read_table(path).drop_columns([named.label_columns[0]]), tmp_path / "missing.parquet")
    with pytest.raises(SchemaError, match=f"'{named.label_columns[0]}': missing.*data.labels"):
        Examples.from_parquet(tmp_path / "missing.parquet", named)


def test_an_unknown_id_takes_null_ids_and_no_hashed_id(table: pa.Table, config: Any, single: Any) -> None:
    with_unknown = replace(
        config,
        sparse_features=tuple(replace(f, unknown_id=0 if f.name == single.name else None) for f in config.sparse_features),
    )
    ids = table.column(single.name).to_pylist()
    ids[:7] = [None] * 7
    with_nulls = replaced(table, single.name, pa.array(ids, pa.int64()))
    with pytest.raises(SchemaError, match="are null"):
        check_table(with_nulls, config)  # without an unknown id, a null is an error
    checked = check_table(with_nulls, with_unknown).column(single.name).to_pylist()
    assert checked[:7] == [0] * 7 and checked[7:] == ids[7:]
    raw = replaced(table, single.name, pa.array([f"user-{i}" for i in range(ROWS)]))
    values = check_table(raw, with_unknown, hash_raw_ids=[single.name]).column(single.name).to_numpy()
    assert values.min() >= 1 and values.max() < single.cardinality  # id 0 stays "unknown"
