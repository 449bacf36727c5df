"""The runtime's synthetic worlds: label rates, power-law ids, the recorded Bayes-optimal logloss,
and the spec's knobs (crosses, objective correlation, label noise, dense tails, bag lengths,
test shift)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from smt_runtime.config import Cross, Objective, SparseFeature, SyntheticSpec
from smt_runtime.data import (
    generate_synthetic,
    optimal_metrics,
    optimal_path,
    read_parquet,
    sample_synthetic,
    write_synthetic,
)
from smt_runtime.training import RunData


@pytest.fixture(scope="module")
def feed(feed_ctr: Any) -> Any:
    """feed_ctr's spec: dense features and a multi-valued feature."""
    return feed_ctr.train.PARTS.config()


def test_write_synthetic_records_the_bayes_optimal_logloss(feed: Any, tmp_path: Any) -> None:
    path = tmp_path / "train.parquet"
    summary = write_synthetic(feed, path, num_examples=5000, seed=2)
    written = json.loads(optimal_path(path).read_text())
    assert written == json.loads(json.dumps(summary))
    assert optimal_path(path).name == "train.optimal.json"
    assert (written["model_name"], written["examples"], written["seed"]) == (feed.model_name, 5000, 2)
    table = read_parquet(path, feed)
    assert table.equals(generate_synthetic(feed, 5000, seed=2))
    _, probabilities = sample_synthetic(feed, 5000, seed=2)
    assert list(written["objectives"]) == list(feed.objective_names)
    for index, (name, values) in enumerate(written["objectives"].items()):
        labels = table.column(f"label_{name}").to_numpy()
        assert values["base_rate"] == pytest.approx(labels.mean())
        assert values["bayes_logloss"] < values["constant_logloss"]
        assert values["bayes_ne"] == pytest.approx(values["bayes_logloss"] / values["constant_logloss"])
        assert 0.0 < values["bayes_ne"] < 1.0
        # The true probabilities beat a blurred copy of themselves: they are the optimum.
        blurred = 0.5 * probabilities[:, index] + 0.5 * labels.mean()
        blurred_logloss = -np.mean(labels * np.log(blurred) + (1 - labels) * np.log(1 - blurred))
        assert values["bayes_logloss"] < blurred_logloss
    again = tmp_path / "again.parquet"  # deterministic: the same call writes the same files
    write_synthetic(feed, again, num_examples=5000, seed=2)
    assert optimal_path(again).read_text() == optimal_path(path).read_text().replace("train.parquet", "again.parquet")
    assert read_parquet(again).equals(read_parquet(path))


def test_label_rates_are_honoured(package: Any) -> None:
    config = package.train.PARTS.config()

    def observed(config: Any) -> np.ndarray:
        table = generate_synthetic(config, 20000, seed=11)
        return np.array([table.column(f"label_{n}").to_numpy().mean() for n in config.objective_names])

    assert len(config.label_rates) == config.num_objectives
    np.testing.assert_allclose(observed(config), config.label_rates, rtol=0.1, atol=0.005)
    custom = replace(config, label_rates=tuple(np.linspace(0.4, 0.02, config.num_objectives)))
    np.testing.assert_allclose(observed(custom), custom.label_rates, rtol=0.1, atol=0.005)
    with pytest.raises(ValueError, match="label_rates"):
        generate_synthetic(replace(config, label_rates=(0.5,) * (config.num_objectives + 1)), 10, seed=0)


def test_synthetic_ids_follow_a_power_law(feed: Any) -> None:
    feature = SparseFeature("test_popularity", 10000, 4, multi_valued=False)
    config = replace(feed, sparse_features=(*feed.sparse_features, feature))
    ids = generate_synthetic(config, 20000, seed=12).column(feature.name).to_numpy()
    counts = np.sort(np.bincount(ids, minlength=feature.cardinality))[::-1]
    # Heavy head and long tail: the top 1% of ids take most of the traffic, many are never drawn.
    assert counts[:100].sum() > 0.5 * counts.sum()
    assert (counts == 0).sum() > 1000


def small_world(base: Any, objectives: int = 1, cardinality: int = 10, **knobs: Any) -> Any:
    """base reduced to two single-valued sparse fields a, b and no dense features, with the given
    synthetic knobs: small enough to fit a model of the world exactly."""
    return replace(
        base,
        objectives=tuple(Objective(f"o{index}", 1.0) for index in range(objectives)),
        label_columns=tuple(f"label_o{index}" for index in range(objectives)),
        label_rates=(0.3,) * objectives,
        sparse_features=tuple(SparseFeature(name, cardinality, 4, False) for name in ("a", "b")),
        dense_features=(),
        dense_columns=(),
        synthetic=SyntheticSpec(**{"crosses": (), **knobs}),
    )


def main_effects_logloss(config: Any, table: pa.Table) -> float:
    """Logloss of the best logistic model of the first label on one effect per id of a and of b
    (no cross term), fitted on the table itself."""
    a = torch.tensor(table.column("a").to_numpy())
    b = torch.tensor(table.column("b").to_numpy())
    labels = torch.tensor(table.column("label_o0").to_numpy(), dtype=torch.float64)
    size = config.sparse_features[0].cardinality
    weights = torch.zeros(2 * size + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(weights[-1] + weights[a] + weights[size + b], labels)
        value.backward()
        return value

    optimizer.step(loss)
    return float(loss().detach())


def bayes_logloss(config: Any, table: pa.Table, probabilities: np.ndarray) -> float:
    return optimal_metrics(config, table, probabilities)["o0"]["bayes_logloss"]


def test_a_cross_makes_labels_depend_on_the_pair(feed: Any) -> None:
    """With a strong cross of a and b, a model of a's and b's main effects falls short of the true
    probabilities; without it, it reaches them."""
    gaps = {}
    for strength in (0.0, 2.0):
        config = small_world(feed, crosses=(Cross(("a", "b"), strength),))
        table, probabilities = sample_synthetic(config, 20000, seed=5)
        gaps[strength] = main_effects_logloss(config, table) - bayes_logloss(config, table, probabilities)
    assert gaps[0.0] < 0.005
    assert gaps[2.0] > 0.03


def test_a_higher_order_cross_is_not_a_sum_of_pairs(feed: Any) -> None:
    """What a three-field cross adds to the logits is not explained by any sum of pairwise cell
    effects of a, b, c; what pairwise crosses add is."""
    features = tuple(SparseFeature(name, 10, 4, False) for name in ("a", "b", "c"))

    def cross_logits(*crosses: Cross) -> tuple[pa.Table, np.ndarray]:
        config = replace(small_world(feed, crosses=crosses), sparse_features=features)
        table, probabilities = sample_synthetic(config, 5000, seed=6)
        return table, np.log(probabilities / (1 - probabilities))[:, 0]

    table, without = cross_logits()
    ids = {name: table.column(name).to_numpy() for name in "abc"}
    cells = np.zeros((table.num_rows, 300))  # one column per (pair of fields, pair of ids)
    for index, (x, y) in enumerate((("a", "b"), ("a", "c"), ("b", "c"))):
        cells[np.arange(table.num_rows), 100 * index + 10 * ids[x] + ids[y]] = 1

    def unexplained(*crosses: Cross) -> float:
        added = cross_logits(*crosses)[1] - without
        fit, *_ = np.linalg.lstsq(cells, added, rcond=None)
        return float((added - cells @ fit).var() / added.var())

    assert unexplained(*(Cross(pair, 1.5) for pair in (("a", "b"), ("b", "c"), ("a", "c")))) < 1e-6
    assert unexplained(Cross(("a", "b", "c"), 1.5)) > 0.15


def test_label_noise_raises_the_optimal_logloss_and_keeps_the_rate(feed: Any) -> None:
    results = {}
    for noise in (0.0, 0.2):
        config = small_world(feed, label_noise=noise)
        table, probabilities = sample_synthetic(config, 20000, seed=7)
        results[noise] = bayes_logloss(config, table, probabilities)
        assert table.column("label_o0").to_numpy().mean() == pytest.approx(0.3, abs=0.015)
        # The optimum is the probability of the noisy label: never below noise.
        assert probabilities.min() >= noise and probabilities.max() <= 1 - noise
    assert results[0.2] > results[0.0] + 0.05


def test_objective_correlation_correlates_the_objectives(feed: Any) -> None:
    def correlation(shared: float) -> float:
        config = small_world(feed, objectives=2, cardinality=300, objective_correlation=shared)
        _, probabilities = sample_synthetic(config, 20000, seed=8)
        return float(np.corrcoef(np.log(probabilities / (1 - probabilities)).T)[0, 1])

    assert correlation(0.9) > correlation(0.1) + 0.4


def test_bag_lengths_are_as_configured(feed: Any) -> None:
    multi = next(f for f in feed.sparse_features if f.multi_valued)

    def lengths(config: Any) -> tuple[int, int]:
        column = pc.list_value_length(generate_synthetic(config, 2000, seed=9).column(multi.name))
        return pc.min(column).as_py(), pc.max(column).as_py()

    assert lengths(replace(feed, synthetic=replace(feed.synthetic, bag_lengths=(2, 7)))) == (2, 7)
    assert lengths(feed) == feed.synthetic.bag_lengths


def test_dense_tail_widens_the_log_of_dense_values(feed: Any) -> None:
    name = feed.dense_features[0]

    def spread(tail: float) -> float:
        config = replace(feed, synthetic=replace(feed.synthetic, dense_tail=tail))
        return float(np.log1p(generate_synthetic(config, 5000, seed=10).column(name).to_numpy()).std())

    assert spread(2.0) == pytest.approx(4 * spread(0.5), rel=0.1)


def test_test_shift_moves_the_test_split_only(feed: Any) -> None:
    shifted = replace(feed, synthetic=replace(feed.synthetic, test_shift=1.0))
    train = generate_synthetic(shifted, 5000, seed=13)
    test = generate_synthetic(shifted, 5000, seed=13, shifted=True)
    assert train.equals(generate_synthetic(replace(shifted, synthetic=feed.synthetic), 5000, seed=13))
    # Rarer ids are more common in the shifted split, dense values larger.
    widest = max(feed.sparse_features, key=lambda f: f.cardinality)

    def distinct_ids(table: pa.Table) -> int:
        column = table.column(widest.name)
        return len(np.unique((pc.list_flatten(column) if widest.multi_valued else column).to_numpy()))

    assert distinct_ids(test) > 1.2 * distinct_ids(train)
    # log1p(value) = location + dense_tail * scale * z, scale >= 0.5, z shifted by 1.0.
    moved = 0.25 * feed.synthetic.dense_tail
    for name in feed.dense_features:
        assert np.log1p(test.column(name).to_numpy()).mean() > np.log1p(train.column(name).to_numpy()).mean() + moved
    # Without a shift the "shifted" split is an ordinary one; a run's test split is shifted.
    unshifted = replace(feed, synthetic=replace(feed.synthetic, test_shift=0.0))
    assert generate_synthetic(unshifted, 500, seed=13, shifted=True).equals(generate_synthetic(unshifted, 500, seed=13))
    small = replace(shifted, train_examples=100, eval_examples=300)
    assert RunData.synthetic(small).test.table.equals(generate_synthetic(small, 300, small.seed + 2, shifted=True))
