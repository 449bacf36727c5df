"""Synthetic data whose best possible logloss is known.

The synthetic world. Logit of objective t for one example:
  intercept_t
  + sum over sparse features of the hidden effect of its id (mean over a bag's ids)
  + sum over dense features of weight * z (z = the feature's standardized log value)
  + feature crosses (config.synthetic.crosses): for a cross of fields a, b, ...,
    weight_t * sum_k u_a(id_a)_k * u_b(id_b)_k * ... / sqrt(K), whose logit std is
    the cross's strength (pairwise for two fields, higher-order for more)
  + dense_cross * weight_t * z_0 * z_1 of the first two dense features
With config.synthetic.popularity_effect = e > 0, every id's effect also holds
e * importance_f * z(id), where z is the id's log popularity standardized over the
examples (popular ids positive, rare ones down to about -2.5), shared by all objectives:
rare and unseen ids then predict systematically lower rates, which an embedding row
trained on rare ids (the unknown row, see training.py) can learn.
Per-id and dense effects are part shared (config.synthetic.objective_correlation of
their variance) and part specific to each objective, so objectives correlate; cross
weights are positive for every objective. A label is flipped with probability
config.synthetic.label_noise, so the probability of a positive label is
noise + (1 - 2 * noise) * sigmoid(logit); intercepts are calibrated so that these
probabilities average config.label_rates. A shifted split (the test split of a run:
config.synthetic.test_shift = s > 0) draws dense z from N(s, 1) and ids from a
flatter popularity (p ** (1 / (1 + s))), from the same conditional label
probabilities. Tables have the layout schema.py describes.

Shapes: T = number of objectives, N = number of dense features, C = number of crosses.
"""

import functools
import json
import math
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .config import ModelConfigBase, SyntheticSpec
from .hashing import keyed_rng
from .parquet_io import write_parquet
from .schema import LABEL_PREFIX, column_names

ZIPF_EXPONENT = 1.2  # popularity of the id of rank r ~ 1 / r**1.2
SPARSE_EFFECT_STD = 2.0  # logit std of all per-id effects together
DENSE_EFFECT_STD = 1.0  # logit std of all linear dense effects together
CROSS_RANK = 4  # K: width of the id factors u of a feature cross
CALIBRATION_EXAMPLES = 20000  # examples used to fit the intercepts to the label rates


def _bag_mean(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean of rows over each bag; rows is L X K, offsets has B + 1 entries."""
    sums = np.add.reduceat(rows, offsets[:-1], axis=0)
    return sums / np.diff(offsets)[:, None]


def _mixed_effects(
    rng: np.random.Generator, size: int, num_objectives: int, shared_fraction: float
) -> np.ndarray:
    """size X T standard-normal effects whose columns correlate by shared_fraction."""
    shared = rng.standard_normal((size, 1))
    own = rng.standard_normal((size, num_objectives))
    return np.sqrt(shared_fraction) * shared + np.sqrt(1 - shared_fraction) * own


def _noisy(probabilities: np.ndarray, noise: float) -> np.ndarray:
    """Probability of a positive label when a label of probability p is flipped with
    probability noise."""
    return noise + (1 - 2 * noise) * probabilities


def _shifted_popularity(popularity: np.ndarray, shift: float) -> np.ndarray:
    """A flatter id popularity: p ** (1 / (1 + shift)), normalized (rare ids more common)."""
    flattened = popularity ** (1 / (1 + shift))
    return flattened / flattened.sum()


def _popularity_scores(popularity: np.ndarray) -> np.ndarray:
    """Each id's log popularity, standardized over examples (mean 0, std 1 when ids are
    drawn with these probabilities)."""
    logged = np.log(popularity)
    mean = np.sum(popularity * logged)
    std = np.sqrt(np.sum(popularity * (logged - mean) ** 2))
    return (logged - mean) / std if std > 0 else np.zeros_like(logged)


def _label_rates(config: ModelConfigBase) -> np.ndarray:
    rates = np.asarray(config.label_rates, dtype=np.float64)
    if rates.shape != (config.num_objectives,) or not ((rates > 0) & (rates < 1)).all():
        raise ValueError(
            f"label_rates must hold one rate in (0, 1) per objective"
            f" ({config.num_objectives}), not {config.label_rates}"
        )
    return rates


@dataclass(frozen=True)
class SyntheticWorld:
    """The hidden ground truth synthetic labels are drawn from; fixed by the config.

    Attributes:
        id_popularity: sparse feature -> probabilities of its ids (power law over
            a shuffled id order).
        id_effects: sparse feature -> cardinality X T logit effect of each id.
        cross_factors: per cross, its fields -> cardinality X K factors.
        cross_weights: C X T weights of the crosses.
        dense_location, dense_scale: N parameters of log(1 + dense value).
        dense_weights: N X T linear dense effects.
        dense_pair_weights: T weights of z_0 * z_1.
        intercepts: T intercepts, calibrated to config.label_rates.
    """

    id_popularity: dict[str, np.ndarray]
    id_effects: dict[str, np.ndarray]
    cross_factors: tuple[dict[str, np.ndarray], ...]
    cross_weights: np.ndarray
    dense_location: np.ndarray
    dense_scale: np.ndarray
    dense_weights: np.ndarray
    dense_pair_weights: np.ndarray
    intercepts: np.ndarray

    @classmethod
    def from_config(cls, config: ModelConfigBase) -> "SyntheticWorld":
        """Draw the world from config.seed and the feature and objective names."""
        seed, num_objectives = config.seed, config.num_objectives
        knobs: SyntheticSpec = config.synthetic
        rates = _label_rates(config)
        importance = keyed_rng(seed, "importance").uniform(0.5, 1.5, config.num_sparse_features)
        importance *= SPARSE_EFFECT_STD / np.sqrt(np.sum(importance**2))
        popularity, effects = {}, {}
        for feature, std in zip(config.sparse_features, importance):
            rng = keyed_rng(seed, "world", feature.name)
            ranks = rng.permutation(feature.cardinality) + 1.0
            weights = ranks**-ZIPF_EXPONENT
            popularity[feature.name] = weights / weights.sum()
            effects[feature.name] = std * _mixed_effects(
                rng, feature.cardinality, num_objectives, knobs.objective_correlation
            )
            if knobs.popularity_effect:
                share = std / SPARSE_EFFECT_STD  # this feature's part of the total effect std
                effects[feature.name] += knobs.popularity_effect * share * _popularity_scores(popularity[feature.name])[:, None]
        rng = keyed_rng(seed, "weights", *config.objective_names)
        first_cross_weights = rng.uniform(0.5, 1.0, num_objectives)
        num_dense = config.num_dense_features
        dense_std = DENSE_EFFECT_STD / np.sqrt(max(num_dense, 1))
        dense_location = rng.uniform(1.0, 6.0, num_dense)
        dense_scale = rng.uniform(0.5, 1.5, num_dense)
        dense_weights = dense_std * _mixed_effects(
            rng, num_dense, num_objectives, knobs.objective_correlation
        )
        dense_pair_weights = knobs.dense_cross * rng.uniform(0.5, 1.0, num_objectives)
        cardinality = {f.name: f.cardinality for f in config.sparse_features}
        cross_factors, cross_weights = [], []
        for index, cross in enumerate(knobs.crosses):
            # The first cross draws from the streams of the template's former fixed pair,
            # so a spec without a synthetic: section keeps its world.
            key = ("pair",) if index == 0 else ("cross", str(index))
            cross_factors.append(
                {
                    name: keyed_rng(seed, *key, name).standard_normal((cardinality[name], CROSS_RANK))
                    for name in cross.fields
                }
            )
            if index == 0:
                unit = first_cross_weights
            else:
                names = config.objective_names
                unit = keyed_rng(seed, "cross weights", str(index), *names).uniform(0.5, 1.0, num_objectives)
            cross_weights.append(cross.strength * unit)
        world = cls(
            id_popularity=popularity,
            id_effects=effects,
            cross_factors=tuple(cross_factors),
            cross_weights=np.reshape(cross_weights, (len(cross_weights), num_objectives)),
            dense_location=dense_location,
            dense_scale=dense_scale,
            dense_weights=dense_weights,
            dense_pair_weights=dense_pair_weights,
            intercepts=np.zeros(num_objectives),
        )
        _, logits = world.sample(config, CALIBRATION_EXAMPLES, seed, "calibration")
        return world._with_intercepts(logits, rates, knobs.label_noise)

    def _with_intercepts(self, logits: np.ndarray, rates: np.ndarray, noise: float) -> "SyntheticWorld":
        """The world with intercepts that give every objective its label rate.

        logits: examples X T logits of this world without intercepts.
        rates: T target label rates (of the labels after flipping with noise).
        """
        low = np.full(logits.shape[1], -20.0)
        high = np.full(logits.shape[1], 20.0)
        for _ in range(60):  # bisection; the mean probability grows with the intercept
            middle = (low + high) / 2
            mean = _noisy(1 / (1 + np.exp(-(logits + middle))), noise).mean(axis=0)
            low = np.where(mean < rates, middle, low)
            high = np.where(mean < rates, high, middle)
        return replace(self, intercepts=(low + high) / 2)

    def sample(
        self,
        config: ModelConfigBase,
        num_examples: int,
        seed: int,
        stream: str,
        shift: float = 0.0,
    ) -> tuple[dict[str, pa.Array], np.ndarray]:
        """Draw feature columns and their true logits (num_examples X T); shift > 0
        draws them from the shifted distribution (see the module docstring)."""
        knobs: SyntheticSpec = config.synthetic
        logits = np.tile(self.intercepts, (num_examples, 1))
        columns: dict[str, pa.Array] = {}
        pooled_factors: list[list[np.ndarray]] = [[] for _ in self.cross_factors]
        for feature in config.sparse_features:
            rng = keyed_rng(seed, stream, feature.name)
            if feature.multi_valued:
                shortest, longest = knobs.bag_lengths
                lengths = rng.integers(shortest, longest + 1, num_examples)
            else:
                lengths = np.ones(num_examples, dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            popularity = self.id_popularity[feature.name]
            if shift > 0:
                popularity = _shifted_popularity(popularity, shift)
            ids = rng.choice(feature.cardinality, size=offsets[-1], p=popularity)
            logits += _bag_mean(self.id_effects[feature.name][ids], offsets)
            for pooled, factors in zip(pooled_factors, self.cross_factors):
                if feature.name in factors:
                    pooled.append(_bag_mean(factors[feature.name][ids], offsets))
            if feature.multi_valued:
                bags = pa.array(offsets.astype(np.int32))
                columns[feature.name] = pa.ListArray.from_arrays(bags, pa.array(ids))
            else:
                columns[feature.name] = pa.array(ids)
        for pooled, weights in zip(pooled_factors, self.cross_weights):
            cross = functools.reduce(operator.mul, pooled).sum(axis=1) / np.sqrt(CROSS_RANK)
            logits += cross[:, None] * weights
        z = np.zeros((num_examples, config.num_dense_features))
        for index, name in enumerate(config.dense_features):
            z[:, index] = keyed_rng(seed, stream, name).standard_normal(num_examples)
        if shift > 0:
            z += shift
        logits += z @ self.dense_weights
        if config.num_dense_features >= 2:
            logits += (z[:, 0] * z[:, 1])[:, None] * self.dense_pair_weights
        # Heavy-tailed like counters: log1p(value) = location + dense_tail * scale * z.
        spread = knobs.dense_tail * self.dense_scale
        values = np.expm1(self.dense_location + spread * z).astype(np.float32)
        for index, name in enumerate(config.dense_features):
            columns[name] = pa.array(values[:, index])
        return columns, logits


def sample_synthetic(
    config: ModelConfigBase, num_examples: int, seed: int, shifted: bool = False
) -> tuple[pa.Table, np.ndarray]:
    """generate_synthetic's table and the true probabilities its labels were drawn from.

    Returns:
        (table, probabilities): probabilities has shape num_examples X T, objectives
        in config order; with label noise, the probabilities of the (noisy) labels.
    """
    world = SyntheticWorld.from_config(config)
    shift = config.synthetic.test_shift if shifted else 0.0
    columns, logits = world.sample(config, num_examples, seed, "examples", shift)
    probabilities = _noisy(1 / (1 + np.exp(-logits)), config.synthetic.label_noise)
    draws = keyed_rng(seed, "examples", "labels").random(probabilities.shape)
    labels = (draws < probabilities).astype(np.float32)
    for index, name in enumerate(config.objective_names):
        columns[LABEL_PREFIX + name] = pa.array(labels[:, index])
    return pa.table(columns), probabilities


def generate_synthetic(
    config: ModelConfigBase, num_examples: int, seed: int, shifted: bool = False
) -> pa.Table:
    """Draw num_examples labelled examples from the model's synthetic world.

    The world (id popularity with power-law frequencies, hidden per-id and dense
    effects shared in part by all objectives, intercepts giving config.label_rates)
    depends only on the config; seed picks the examples, so tables with different
    seeds are independent samples of one world (e.g. train and eval data). The same
    (config, num_examples, seed) always gives the same table. shifted draws from the
    test distribution of config.synthetic.test_shift (the same as unshifted when 0).

    Returns:
        a table with the columns described in this module's docstring.
    """
    return sample_synthetic(config, num_examples, seed, shifted)[0]


def cold_start_tables(
    config: ModelConfigBase, train_examples: int, eval_examples: int, seed: int, max_draws: int = 64
) -> tuple[pa.Table, pa.Table, pa.Table, str] | None:
    """A cold start in the model's synthetic world: a train table, and validation and test
    tables whose ids of one feature (the single-valued feature of most ids, say the users)
    never occur in the train table, as a time split leaves new users in its later splits.

    The train table is generate_synthetic(config, train_examples, seed); validation and test
    are the first rows of further samples (seeds seed + 1, ...) whose id of that feature is
    unseen in training, so their labels follow the world as every other row's. Unseen ids
    are the world's rare ones: with config.synthetic.popularity_effect above 0 they also
    predict lower rates, as new and long-tail ids do in real logs.

    Returns:
        (train, valid, test, feature), or None when max_draws samples of train_examples rows
        hold fewer than 2 X eval_examples such rows (a feature with few ids).
    """
    singles = [f for f in config.sparse_features if not f.multi_valued] or list(config.sparse_features)
    feature = max(singles, key=lambda f: f.cardinality)
    train = generate_synthetic(config, train_examples, seed)
    column = train.column(feature.name).combine_chunks()
    ids = column.flatten() if pa.types.is_list(column.type) else column
    seen = np.bincount(ids.to_numpy(), minlength=feature.cardinality) > 0
    cold: list[pa.Table] = []
    rows = 0
    for draw in range(1, max_draws + 1):
        pool = generate_synthetic(config, train_examples, seed + draw)
        pool_column = pool.column(feature.name).combine_chunks()
        if pa.types.is_list(pool_column.type):  # every id of the bag unseen
            offsets = pool_column.offsets.to_numpy()
            seen_before = np.concatenate([[0], np.cumsum(seen[pool_column.flatten().to_numpy()])])
            unseen = seen_before[offsets[1:]] == seen_before[offsets[:-1]]
        else:
            unseen = ~seen[pool_column.to_numpy()]
        cold.append(pool.filter(pa.array(unseen)))
        rows += int(unseen.sum())
        if rows >= 2 * eval_examples:
            both = pa.concat_tables(cold)
            return train, both.slice(0, eval_examples), both.slice(eval_examples, eval_examples), feature.name
    return None


def _entropy(rate: float) -> float:
    """Logloss of always predicting rate on labels whose mean is rate."""
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def optimal_metrics(
    config: ModelConfigBase, table: pa.Table, probabilities: np.ndarray
) -> dict[str, dict[str, float]]:
    """How well the true probabilities predict a synthetic table's labels: the floor
    for any model, since no model can know more than the world the labels came from.

    Args:
        table, probabilities: from sample_synthetic.

    Returns:
        objective -> base_rate (fraction of positive labels), label_rate (the
        configured rate), constant_logloss (entropy of the base rate: the logloss of
        always predicting it), bayes_logloss (logloss of the true probabilities on
        these labels) and bayes_ne (bayes_logloss / constant_logloss, comparable with
        the NE train.evaluate reports on the same table).
    """
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    metrics = {}
    for index, (name, rate) in enumerate(zip(config.objective_names, config.label_rates)):
        labels = table.column(LABEL_PREFIX + name).to_numpy().astype(np.float64)
        p = clipped[:, index]
        bayes = float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())
        base_rate = float(labels.mean())
        constant = _entropy(base_rate)
        metrics[name] = {
            "base_rate": base_rate,
            "label_rate": float(rate),
            "constant_logloss": constant,
            "bayes_logloss": bayes,
            "bayes_ne": bayes / constant if constant > 0 else math.nan,
        }
    return metrics


def optimal_path(path: str | Path) -> Path:
    """Where write_synthetic puts the optimal metrics of data file path:
    train.parquet -> train.optimal.json."""
    path = Path(path)
    return path.with_name(path.stem + ".optimal.json")


def write_synthetic(
    config: ModelConfigBase,
    path: str | Path,
    num_examples: int | None = None,
    seed: int | None = None,
    row_group_size: int | None = None,
    shifted: bool = False,
) -> dict[str, Any]:
    """Write synthetic examples to a Parquet file and their optimal metrics next to it.

    Args:
        config: the model's ModelConfigBase.
        path: the Parquet file to write; the metrics go to optimal_path(path).
        num_examples: rows; config.train_examples if None.
        seed: seed of the examples (see generate_synthetic); config.seed if None.
        row_group_size: rows per Parquet row group (see stream_parquet).
        shifted: draw from the shifted test distribution (see generate_synthetic).

    Returns:
        what the JSON file holds: model_name, examples, seed, data (the Parquet
        file's name) and objectives (optimal_metrics of the written table).
    """
    num_examples = config.train_examples if num_examples is None else num_examples
    seed = config.seed if seed is None else seed
    table, probabilities = sample_synthetic(config, num_examples, seed, shifted)
    # Named as the model's data files name them (the spec's data conventions).
    write_parquet(table.rename_columns(column_names(config)), path, row_group_size=row_group_size)
    summary = {
        "model_name": config.model_name,
        "examples": num_examples,
        "seed": seed,
        "data": Path(path).name,
        "objectives": optimal_metrics(config, table, probabilities),
    }
    optimal_path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
