"""The runtime's table initialisation (smt_runtime.sparse.init_tables): uniform in
+-1/sqrt(cardinality), or normal with config.embedding_init_std, the same rows however a
table is split into shards."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrec")

from generator.testing import import_model  # noqa: E402
from smt_runtime.sparse import INIT_BLOCK_ROWS, _initial_rows, collections, init_tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    (_, collection), = collections(model)
    return {name.split(".")[-2]: tensor for name, tensor in collection.state_dict().items()}


@pytest.mark.parametrize("std", [None, 1e-4, 0.01])
def test_tables_start_uniform_or_normal_with_the_configured_std(std: float | None) -> None:
    package = import_model(REPO / "generated" / "feed_ctr")
    config = replace(package.config.ModelConfig(), embedding_init_std=std)
    model = package.model.RankingModel(config)
    init_tables(model, config, seed=3)
    for feature in config.sparse_features:
        rows = _tables(model)[feature.name]
        assert rows.shape == (feature.num_embeddings, feature.embedding_dim)  # a reserved unknown row too
        if std is None:
            bound = 1 / math.sqrt(feature.cardinality)
            assert rows.abs().max() <= bound
            assert rows.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        else:
            assert rows.mean().item() == pytest.approx(0.0, abs=std * 0.1)
            assert rows.std().item() == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize("std", [None, 1e-4])
def test_a_shard_draws_the_rows_of_the_whole_table(std: float | None) -> None:
    whole = _initial_rows(7, 2, 0, 3 * INIT_BLOCK_ROWS, 16, 0.1, std)
    start, stop = INIT_BLOCK_ROWS - 5, 2 * INIT_BLOCK_ROWS + 9  # across block boundaries
    assert torch.equal(_initial_rows(7, 2, start, stop, 16, 0.1, std), whole[start:stop])
    assert not torch.equal(_initial_rows(8, 2, start, stop, 16, 0.1, std), whole[start:stop])
