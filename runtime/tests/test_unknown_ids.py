"""Unknown ids (smt_runtime.unknown_ids): every feature's unknown row (declared, or reserved past
the cardinality), the ids a run sends there (rarer than min_count in training, out of range, a
share unknown_dropout of training lookups), that the row trains, the shares metrics.json
records, the counts of a streamed file, and an export that maps ids as training did. On
feed_ctr (conftest.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec import KeyedJaggedTensor

from smt_runtime.data import Examples, write_synthetic
from smt_runtime.serve import export_model, load_exported, serving_model
from smt_runtime.synthetic import generate_synthetic
from smt_runtime.distributed import start
from smt_runtime.sparse import unsharded_state_dict
from smt_runtime.training import RunData, build_model, train, unsharded_model
from smt_runtime.unknown_ids import UnknownIds, known_ids, unknown_modules, unknown_shares


def single_ids(config: Any, ids: dict[str, list[int]]) -> KeyedJaggedTensor:
    """A KJT of one id per bag for every feature (ids: feature -> one id per example)."""
    names = [feature.name for feature in config.sparse_features]
    values = torch.tensor([value for name in names for value in ids[name]])
    lengths = torch.ones(len(values), dtype=torch.int64)
    return KeyedJaggedTensor(keys=names, values=values, lengths=lengths)


def test_a_feature_without_a_declared_unknown_id_gets_one_more_row(feed_ctr: Any, feed_config: Any) -> None:
    declared = replace(feed_config.sparse_features[0], unknown_id=3)
    config = replace(feed_config, sparse_features=(declared, *feed_config.sparse_features[1:]))
    model = build_model(feed_ctr.train.PARTS, config)
    tables = model.sparse_arch.embedding_tables.collection.embedding_bags
    assert tables[declared.name].weight.shape[0] == declared.cardinality
    assert declared.unknown_row == 3
    for feature in config.sparse_features[1:]:
        assert tables[feature.name].weight.shape[0] == feature.cardinality + 1 == feature.num_embeddings
        assert feature.unknown_row == feature.cardinality


def test_rare_and_out_of_range_ids_read_the_unknown_row(feed_config: Any) -> None:
    """Ids flagged unknown and ids outside [0, cardinality) become the unknown row; others keep
    their own; a declared unknown id is the row they take."""
    features = list(feed_config.sparse_features)
    features[1] = replace(features[1], unknown_id=0)
    config = replace(feed_config, sparse_features=tuple(features))
    remap = UnknownIds(config).eval()
    known = {f.name: np.ones(f.cardinality, dtype=bool) for f in features}
    known[features[0].name][[5, 7]] = False
    known[features[1].name][9] = False
    flags = torch.from_numpy(np.concatenate([known[f.name] for f in features]))
    remap.known.copy_(flags)
    ids = {f.name: [5, 6, 7, -1, f.cardinality, f.cardinality - 1] for f in features}
    ids[features[1].name] = [9, 6, 0, -4, features[1].cardinality + 10, 2]
    mapped = remap(single_ids(config, ids)).to_dict()
    first, second = features[0], features[1]
    assert mapped[first.name].values().tolist() == [first.cardinality, 6, first.cardinality, first.cardinality, first.cardinality, first.cardinality - 1]
    assert mapped[second.name].values().tolist() == [0, 6, 0, 0, 0, 2]
    third = features[2]
    assert mapped[third.name].values().tolist() == [5, 6, 7, third.cardinality, third.cardinality, third.cardinality - 1]


def test_unknown_dropout_draws_a_share_of_training_lookups_only(feed_config: Any) -> None:
    remap = UnknownIds(replace(feed_config, unknown_dropout=0.25))
    ids = {f.name: list(range(2000)) for f in feed_config.sparse_features}
    features = single_ids(feed_config, {name: [v % 300 for v in values] for name, values in ids.items()})
    torch.manual_seed(0)
    dropped = remap.train()(features).values() != features.values()
    assert 0.22 < dropped.float().mean().item() < 0.28
    assert torch.equal(remap.eval()(features).values(), features.values())


def test_a_run_counts_the_train_ids_and_sends_the_rare_ones_to_the_unknown_row(feed_ctr: Any, feed_config: Any, tmp_path: Path) -> None:
    """The mask the model holds is the train split's counts >= min_count, and metrics.json's
    shares are the lookups of each split that the mask and the unknown ids send there."""
    config = replace(feed_config, min_count=3)
    data = RunData.synthetic(config)
    result = train(feed_ctr.train.PARTS, config, steps=4, data=data, run_dir=tmp_path)
    counts = {split: getattr(data, split).id_counts(config) for split in ("train", "valid", "test")}
    for feature in config.sparse_features:
        table = data.train.table.column(feature.name).combine_chunks()
        ids = table.flatten() if pa.types.is_list(table.type) else table
        assert counts["train"][feature.name].tolist() == np.bincount(ids.to_numpy(), minlength=feature.cardinality).tolist()
    known = known_ids(counts["train"], config)
    (module,) = unknown_modules(result.model)
    assert module.known.tolist() == np.concatenate([known[f.name] for f in config.sparse_features]).tolist()
    saved = json.loads((tmp_path / "metrics.json").read_text())["unknown_ids"]
    assert saved["min_count"] == 3 and saved["unknown_dropout"] == 0.0
    for split in ("train", "valid", "test"):
        expected = unknown_shares(counts[split], known, config)
        assert saved["share"][split] == pytest.approx(expected)
    user = config.sparse_features[0]
    rare = (counts["train"][user.name] > 0) & (counts["train"][user.name] < 3)
    assert saved["rare_ids"][user.name] == int(rare.sum()) > 0
    assert saved["share"]["train"][user.name] == pytest.approx(counts["train"][user.name][rare].sum() / data.train.num_rows)


def test_the_unknown_row_trains_only_when_lookups_reach_it(feed_ctr: Any, feed_config: Any) -> None:
    """With min_count 2 (or unknown_dropout) training moves the reserved row; with neither,
    nothing reads it and it keeps its initial value."""
    parts = feed_ctr.train.PARTS
    user = feed_config.sparse_features[0]

    def reserved_row(config: Any) -> torch.Tensor:
        state = unsharded_state_dict(train(parts, config, steps=8).model)
        return state[f"sparse_arch.embedding_tables.collection.embedding_bags.{user.name}.weight"][user.cardinality]

    initial = build_model(parts, feed_config).state_dict()[f"sparse_arch.embedding_tables.collection.embedding_bags.{user.name}.weight"][user.cardinality]
    assert torch.equal(reserved_row(replace(feed_config, min_count=0)), initial)
    assert not torch.allclose(reserved_row(replace(feed_config, min_count=2)), initial)
    assert not torch.allclose(reserved_row(replace(feed_config, min_count=0, unknown_dropout=0.2)), initial)


def test_a_streamed_file_counts_like_its_table(feed_config: Any, tmp_path: Path) -> None:
    """Examples.id_counts reads a file's sparse columns chunk by chunk (hashing raw ids as the
    run does) and counts what the in-memory table counts."""
    path = tmp_path / "train.parquet"
    write_synthetic(feed_config, path, 3000, seed=4, row_group_size=700)
    table = Examples.from_table(generate_synthetic(feed_config, 3000, seed=4), feed_config).id_counts(feed_config)
    streamed = Examples.from_parquet(path, feed_config).id_counts(feed_config)
    assert {name: counts.tolist() for name, counts in streamed.items()} == {name: counts.tolist() for name, counts in table.items()}
    hashed = Examples.from_parquet(path, feed_config, hash_raw_ids=True).id_counts(feed_config)
    assert {name: int(counts.sum()) for name, counts in hashed.items()} == {name: int(counts.sum()) for name, counts in table.items()}
    assert hashed[feed_config.sparse_features[0].name].tolist() != table[feed_config.sparse_features[0].name].tolist()


def test_the_export_maps_rare_and_unseen_ids_itself(feed_ctr: Any, feed_config: Any, tmp_path: Path) -> None:
    """The exported model holds the mask: a server sends the raw ids (rare, never seen, or
    beyond the cardinality) and gets the logits of the unknown rows, as the trained model does."""
    parts, config = feed_ctr.train.PARTS, replace(feed_config, min_count=3)
    trained = unsharded_model(parts, config, train(parts, config, steps=4).model, start("cpu"))
    (module,) = unknown_modules(trained)
    user = feed_config.sparse_features[0]
    rare = int(np.flatnonzero(~module.known[: user.cardinality].numpy())[0])
    exported = load_exported(export_model(serving_model(trained), config, tmp_path / "model.pt2").path)
    batch = generate_synthetic(feed_config, 8, seed=9)
    dense = torch.tensor(np.stack([batch.column(name).to_numpy() for name in feed_config.dense_features], axis=1))

    def logits(user_ids: list[int]) -> torch.Tensor:
        """The exported model's logits of the batch with user_ids for its users (one id per bag)."""
        columns = {f.name: batch.column(f.name).to_pylist() for f in feed_config.sparse_features}
        columns[user.name] = user_ids
        values = [v for f in feed_config.sparse_features for v in (columns[f.name] if not f.multi_valued else [bag[0] for bag in columns[f.name]])]
        lengths = torch.ones(8 * len(feed_config.sparse_features), dtype=torch.int64)
        return exported(dense, torch.tensor(values), lengths)

    unknown = logits([user.cardinality] * 8)
    assert torch.allclose(logits([rare] * 8), unknown)
    assert torch.allclose(logits([user.cardinality + 12345] * 8), unknown)
    assert not torch.allclose(logits(batch.column(user.name).to_pylist()), unknown)
