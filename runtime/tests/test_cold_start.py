"""Cold starts in the synthetic world: synthetic.popularity_effect ties ids' effects to their
popularity (rare ids predict lower rates, as new and long-tail ids do in real logs), and
cold_start_tables builds validation and test splits whose users training never saw. On
feed_ctr's spec (conftest.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from smt_runtime.synthetic import SyntheticWorld, cold_start_tables, sample_synthetic


def with_popularity_effect(config: Any, effect: float) -> Any:
    return replace(config, synthetic=replace(config.synthetic, popularity_effect=effect))


def test_popularity_effect_lowers_the_rate_of_rare_ids_and_zero_changes_nothing(feed_config: Any) -> None:
    plain, zero = SyntheticWorld.from_config(feed_config), SyntheticWorld.from_config(with_popularity_effect(feed_config, 0.0))
    assert all(np.array_equal(plain.id_effects[name], zero.id_effects[name]) for name in plain.id_effects)
    config = with_popularity_effect(feed_config, 1.0)
    table, probabilities = sample_synthetic(config, 40_000, seed=3)
    user = config.sparse_features[0].name
    popularity = SyntheticWorld.from_config(config).id_popularity[user][table.column(user).to_numpy()]
    rare = popularity < np.quantile(popularity, 0.2)
    assert probabilities[rare, 0].mean() < 0.8 * probabilities[~rare, 0].mean()
    assert abs(probabilities[:, 0].mean() - config.label_rates[0]) < 0.01  # the intercept still gives the rate


def test_cold_start_tables_hold_only_users_training_never_saw(feed_config: Any) -> None:
    train, valid, test, feature = cold_start_tables(feed_config, 4096, 1000, seed=2)
    assert feature == "user_id" and (train.num_rows, valid.num_rows, test.num_rows) == (4096, 1000, 1000)
    seen = set(train.column(feature).to_pylist())
    assert not seen & set(valid.column(feature).to_pylist()) and not seen & set(test.column(feature).to_pylist())
    assert valid.column(feature).to_pylist() != test.column(feature).to_pylist()
    few_ids = replace(feed_config, sparse_features=tuple(replace(f, cardinality=5) for f in feed_config.sparse_features))
    assert cold_start_tables(few_ids, 4096, 1000, seed=2, max_draws=3) is None
