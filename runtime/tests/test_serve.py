"""Serving (smt_runtime.serve): the serving form of a trained model computes its function, and a
trained run's export is the trained model."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pyarrow as pa
import torch
from torchrec import EmbeddingBagCollection

from smt_runtime.batch import table_to_batches
from smt_runtime.data import generate_synthetic
from smt_runtime.distributed import start
from smt_runtime.serve import StackedTables, export_model, load_exported, serving_inputs, serving_model
from smt_runtime.sparse import collections
from smt_runtime.training import build_model, train, unsharded_model


def test_serving_stacks_tables_of_one_width_and_computes_the_same_logits(feed_ctr: Any, feed_config: Any) -> None:
    """Tables of one width become one stacked weight (sums and bag means alike, an empty bag
    zeros); tables of mixed widths stay TorchRec's collection."""
    parts = feed_ctr.train.PARTS
    one_width = replace(feed_config, sparse_features=tuple(replace(f, embedding_dim=16) for f in feed_config.sparse_features))
    table = generate_synthetic(one_width, 64, seed=3)
    multi = next(f.name for f in one_width.sparse_features if f.multi_valued)
    bags = table.column(multi).to_pylist()
    bags[5] = []
    table = table.set_column(table.column_names.index(multi), multi, pa.array(bags, pa.list_(pa.int64())))
    batch = next(table_to_batches(table, 64))
    for config, stacked in ((one_width, True), (feed_config, False)):
        model = build_model(parts, config).eval()
        served = serving_model(copy.deepcopy(model))
        kinds = {type(module) for module in served.modules()}
        assert (StackedTables in kinds, EmbeddingBagCollection in kinds) == (stacked, not stacked)
        with torch.no_grad():
            torch.testing.assert_close(served(batch.dense, batch.sparse), model(batch.dense, batch.sparse), rtol=0, atol=1e-6)


def test_the_export_of_a_trained_run_computes_the_trained_model(feed_ctr: Any, feed_config: Any, tmp_path: Any) -> None:
    """What `train --export` writes: the run's (sharded) model gathered whole, in serving form."""
    parts = feed_ctr.train.PARTS
    result = train(parts, feed_config, steps=8)
    plain = unsharded_model(parts, feed_config, result.model, start("cpu"))
    assert plain is not None and [name for name, _ in collections(plain)] != []
    exported = export_model(serving_model(copy.deepcopy(plain)), feed_config, tmp_path / "model.pt2")
    batch = next(table_to_batches(generate_synthetic(feed_config, 100, seed=9), 100))
    with torch.no_grad():
        trained = result.model.eval()(batch.dense, batch.sparse)
        torch.testing.assert_close(load_exported(exported.path)(*serving_inputs((batch.dense, batch.sparse))), trained, rtol=0, atol=1e-5)

