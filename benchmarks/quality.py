"""Quality benchmark: the plain template, each technique and FuxiCTR's DNN against the Bayes optimum.

    pip install -e '.[bench]'
    python benchmarks/quality.py [--quick] [--worlds crossed,frappe_like,...] [--techniques all|none|a,b]
                                 [--seeds 0,1,2] [--threads 1] [--json out.json]

The data. Each world is a synthetic ranking problem written as Parquet train/valid/test
files by this script (not by the generated package, so the benchmark does not move when the
template's own synthetic data changes), with labels drawn from known probabilities, so the
Bayes-optimal logloss and AUC of a split are exact: the true probabilities scored on its labels.

- additive, crossed, crossed_correlated: five single-valued sparse features with power-law id
  frequencies (20,000 users: few examples per id) and two heavy-tailed dense counters; every
  objective's logit is

      intercept_t + sum_f effect_t,f[id_f] + sum_j w_t,j * log1p(counter_j)
                  + cross * (<u_t[user], v_t[category]> + c_t[hour, device])

  where the cross terms are feature crosses no sum of per-feature effects can express (a
  low-rank user x category term and a full hour x device table). Objectives share part of
  every effect (correlation `shared`); intercepts are fitted to the target positive rates.
- frappe_like: the size and structure of the public 10-field app-usage CTR set (Frappe, as in
  the BARS benchmark): 288,609 rows in all (202,027 / 57,722 / 28,860), 1,000 users, 5,000
  items and eight small context and attribute fields (daytime, weekday, isweekend, homework,
  cost, weather, country, city), so every user has about 200 training rows and the label is
  almost decided by dense user x item x context interactions. Each row is a logged use with
  probability 1/3, its item drawn from the user's own preferences in that context (a softmax
  over items of item popularity + <p_user * (1 + r_context), q_item> + <s_context, q_item>),
  or a sampled negative with probability 2/3, its item drawn uniformly, as that set was built.
  The true probability of a row is the posterior of "logged use" given its fields.

Ours. The plain template at its defaults, the plain template at the DNN's settings (the
peer's settings below as `--set` overrides: embedding_dim, over_arch_layers = the DNN's hidden
units, tower_layers [], dropout, batch_norm, batch_size, learning_rate, embedding_regularizer,
monitor auc), and each technique alone (default params; a technique whose preconditions the
world does not meet is reported as n/a), rendered from the world's spec with the real pipeline
and trained through the generated command line, `python -m MODEL train --train --valid --test`,
validating once per epoch with early stopping, for the template's default epochs (or
--max-epochs); the test metrics come from metrics.json.

Peer. FuxiCTR's DNN (the model zoo's DNN: FeatureEmbedding, then MLP_Block to one sigmoid
output, built here from the fuxictr package's layers and BaseModel: Adam on every parameter,
embeddings initialised normal with std 1e-4, the embedding regularizer on whole tables,
gradient norm clipped at 10, learning rate x0.1 on a plateau, early stopping after 2
validations without a better monitored value, best weights restored), trained by its own
BaseModel.fit. Settings: on frappe_like, the BARS leaderboard's DNN settings for that set
(embedding 10, MLP [400, 400, 400] with batch norm and dropout 0.2, batch 4096, Adam 1e-3,
embedding L2 0.05, monitor AUC, at most 100 epochs); on the other worlds FuxiCTR's DNN_default
(Adam 1e-3, monitor AUC - logloss) with the dataset-dependent settings matched to ours
(embedding widths, MLP widths = ours' over arch and tower, batch size) and an L2 embedding
regularizer of --peer-embedding-regularizer. FuxiCTR's DNN is single-task, so in a world
with several objectives one peer is trained per objective.

Printed: per world and objective, each model's test logloss and AUC (mean and standard
deviation over --seeds), its logloss gap to the Bayes optimum (absolute, and relative to the
constant prediction's gap), and whether the plain template, at its defaults and at the DNN's
settings, is at least as good as FuxiCTR's DNN (mean logloss no higher and mean AUC no lower).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from generator.engine.errors import SmtError  # noqa: E402
from generator.render import render_model  # noqa: E402
from generator.sync import write_tree  # noqa: E402

Feature = tuple[str, int, int]  # (name, cardinality, embedding_dim); all single-valued

# The per-id worlds: their features and the strength of their effects.
SPARSE_FEATURES: list[Feature] = [
    ("user", 20000, 16), ("item", 5000, 16), ("category", 200, 8), ("hour", 24, 4), ("device", 8, 4)
]  # fmt: skip
DENSE_FEATURES = ["price", "item_age_days"]
ZIPF_EXPONENT = 1.1
EFFECT_STD = 1.6  # logit std of all per-id effects together
DENSE_STD = 0.5  # logit std of all dense effects together
CROSS_RANK = 4


@dataclass(frozen=True)
class DnnSettings:
    """FuxiCTR's DNN settings on a world; ours "at the DNN's settings" get the same through --set.

    Attributes:
        embedding_dim: width of every embedding.
        hidden_units: the MLP's widths (ours: over_arch_layers, with no tower layers).
        dropout, batch_norm: after every hidden Linear.
        batch_size, learning_rate: Adam's (ours: the dense optimizer's).
        embedding_regularizer: L2 of the embeddings (FuxiCTR: whole tables, lambda / 2 * |W|^2).
        monitor: FuxiCTR's monitored validation value (ours: monitor=auc either way).
        epochs: most epochs (early stopping ends sooner).
        embedding_init_std: std of FuxiCTR's normal embedding initialisation.
        max_gradient_norm: FuxiCTR's gradient norm clip.
    """

    embedding_dim: int
    hidden_units: tuple[int, ...]
    dropout: float
    batch_norm: bool
    batch_size: int
    learning_rate: float
    embedding_regularizer: float
    monitor: Any = "AUC"
    epochs: int = 100
    embedding_init_std: float = 1e-4
    max_gradient_norm: float = 10.0

    def ours(self) -> list[str]:
        """The same settings as --set assignments of the template's hyperparameters."""
        return [
            f"embedding_dim={self.embedding_dim}",
            f"over_arch_layers={json.dumps(list(self.hidden_units))}",
            "tower_layers=[]",
            f"dropout={self.dropout}",
            f"batch_norm={json.dumps(self.batch_norm)}",
            f"batch_size={self.batch_size}",
            f"learning_rate={self.learning_rate}",
            f"embedding_regularizer={self.embedding_regularizer}",
            "monitor=auc",
        ]

    def with_assignments(self, assignments: list[str]) -> "DnnSettings":
        """These settings changed by KEY=VALUE assignments (--peer-set), VALUE as JSON."""
        names = {field.name for field in fields(self)}
        changes = {}
        for assignment in assignments:
            key, _, text = assignment.partition("=")
            if key not in names:
                raise SystemExit(
                    f"--peer-set {assignment}: use KEY=VALUE with KEY one of {', '.join(sorted(names))}"
                )
            value = json.loads(text)
            changes[key] = tuple(value) if isinstance(value, list) else value
        return replace(self, **changes)


# The BARS leaderboard's DNN on the public 10-field app-usage set (DNN_frappe_x1).
LEADERBOARD_DNN = DnnSettings(
    embedding_dim=10,
    hidden_units=(400, 400, 400),
    dropout=0.2,
    batch_norm=True,
    batch_size=4096,
    learning_rate=1e-3,
    embedding_regularizer=0.05,
    monitor="AUC",
)


@dataclass(frozen=True)
class World:
    """A per-id world: its objectives (name, positive rate), cross strength and sharing."""

    name: str
    objectives: tuple[tuple[str, float], ...]
    cross: float  # logit std of each of the two cross terms
    shared: float = 0.6  # share of every effect's variance common to all objectives
    sparse_features: tuple[Feature, ...] = tuple(SPARSE_FEATURES)
    dense_features: tuple[str, ...] = tuple(DENSE_FEATURES)
    sizes: tuple[int, int, int] | None = None  # train, valid, test (None: the command line's)

    def describe(self) -> str:
        rates = ", ".join(f"{name} {rate:.0%}" for name, rate in self.objectives)
        return f"{self.name}: objectives {rates}; cross std {self.cross}; shared {self.shared}"

    def truth(self, seed: int) -> "TrueModel":
        return TrueModel(self, seed)

    def dnn_settings(self, ours_config: dict[str, Any], args: argparse.Namespace) -> DnnSettings:
        """DNN_default, with the dataset-dependent settings matched to ours' defaults."""
        return DnnSettings(
            embedding_dim=ours_config["embedding_dim"],
            hidden_units=(*ours_config["over_arch_layers"], *ours_config["tower_layers"]),
            dropout=0.0,
            batch_norm=False,
            batch_size=args.batch_size,
            learning_rate=1e-3,
            embedding_regularizer=args.peer_embedding_regularizer,
            monitor={"AUC": 1, "logloss": -1},
        )

    def spec_hyperparameters(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"batch_size": args.batch_size}

    def peer_dims(self, settings: DnnSettings) -> dict[str, int]:
        """Embedding width of each feature in the peer: the spec's (ours' tables)."""
        return {name: dim for name, _, dim in self.sparse_features}


@dataclass(frozen=True)
class ContextWorld:
    """A world of many examples per id whose label is decided by user x item x context
    interactions, shaped like the public 10-field app-usage set (see the module docstring).

    Attributes:
        rank: rank of the user x item preference.
        preference_std: logit std of <p_user, q_item>.
        context_std: std of each user-preference multiplier r_context (all fields together).
        item_context_std: logit std of <s_context, q_item> (items that suit a context).
        popularity_exponent: an item's preference falls with its popularity rank as
            rank ** -exponent.
        embedding_dim: every feature's embedding width in the spec.
    """

    name: str
    objectives: tuple[tuple[str, float], ...] = (("click", 1 / 3),)
    users: int = 1000
    items: int = 5000
    rank: int = 8
    preference_std: float = 2.5
    context_std: float = 1.0
    item_context_std: float = 0.5
    popularity_exponent: float = 1.0
    embedding_dim: int = 10
    sizes: tuple[int, int, int] | None = (202_027, 57_722, 28_860)
    dense_features: tuple[str, ...] = ()

    # (field, cardinality) of the context fields drawn per row; isweekend follows weekday.
    CONTEXT = (("daytime", 7), ("weekday", 7), ("homework", 3), ("weather", 9))
    COUNTRIES, CITIES, PAID_SHARE = 80, 233, 0.1

    @property
    def sparse_features(self) -> tuple[Feature, ...]:
        cards = {
            "user": self.users, "item": self.items, "daytime": 7, "weekday": 7, "isweekend": 2,
            "homework": 3, "cost": 2, "weather": 9, "country": self.COUNTRIES, "city": self.CITIES,
        }  # fmt: skip
        return tuple((name, card, self.embedding_dim) for name, card in cards.items())

    def describe(self) -> str:
        return (
            f"{self.name}: objective click {self.objectives[0][1]:.0%}; {self.users:,} users, {self.items:,} items,"
            f" 8 context fields; preference rank {self.rank}, std {self.preference_std}, context x {self.context_std},"
            f" item x context {self.item_context_std}"
        )

    def truth(self, seed: int) -> "ContextTruth":
        return ContextTruth(self, seed)

    def dnn_settings(self, ours_config: dict[str, Any], args: argparse.Namespace) -> DnnSettings:
        return LEADERBOARD_DNN

    def spec_hyperparameters(self, args: argparse.Namespace) -> dict[str, Any]:
        return {}  # the template's defaults

    def peer_dims(self, settings: DnnSettings) -> dict[str, int]:
        return {name: settings.embedding_dim for name, _, _ in self.sparse_features}


WORLDS: dict[str, World | ContextWorld] = {
    "additive": World("additive", (("click", 0.2),), cross=0.0),
    "crossed": World("crossed", (("click", 0.2),), cross=1.0),
    "crossed_correlated": World("crossed_correlated", (("click", 0.2), ("convert", 0.05)), cross=1.0),
    "frappe_like": ContextWorld("frappe_like"),
}


# ---------------------------------------------------------------------------------------
# The worlds' data


class TrueModel:
    """The hidden parameters of a world: per-id effects, crosses, dense weights, intercepts."""

    def __init__(self, world: World, seed: int) -> None:
        rng = np.random.default_rng([seed, 7])
        self.world = world
        num_tasks = len(world.objectives)
        per_feature = EFFECT_STD / math.sqrt(len(SPARSE_FEATURES))

        def mixed(shape: tuple[int, ...], std: float) -> np.ndarray:
            """T independent draws sharing a common part: shape T X shape."""
            common = rng.normal(0, std, shape)
            own = rng.normal(0, std, (num_tasks, *shape))
            return math.sqrt(world.shared) * common + math.sqrt(1 - world.shared) * own

        self.popularity = {}
        self.effects = {}
        for name, cardinality, _ in SPARSE_FEATURES:
            ranks = rng.permutation(cardinality) + 1
            weights = ranks.astype(float) ** -ZIPF_EXPONENT
            self.popularity[name] = weights / weights.sum()
            self.effects[name] = mixed((cardinality,), per_feature)
        cardinality = dict((name, card) for name, card, _ in SPARSE_FEATURES)
        factor_std = math.sqrt(world.cross) / CROSS_RANK**0.25  # <u, v> has std world.cross
        self.user_factors = mixed((cardinality["user"], CROSS_RANK), factor_std)
        self.category_factors = mixed((cardinality["category"], CROSS_RANK), factor_std)
        self.hour_device = mixed((cardinality["hour"], cardinality["device"]), world.cross)
        self.dense_weights = mixed((len(DENSE_FEATURES),), DENSE_STD / math.sqrt(len(DENSE_FEATURES)))
        self.intercepts = np.zeros(num_tasks)
        features, dense = self.draw_features(50000, rng)
        logits = self.logits_without_intercept(features, dense)
        for task, (_, rate) in enumerate(world.objectives):
            self.intercepts[task] = _intercept_for_rate(logits[:, task], rate)

    def draw_features(self, rows: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        features = {
            name: rng.choice(card, size=rows, p=self.popularity[name]) for name, card, _ in SPARSE_FEATURES
        }
        dense = rng.lognormal(mean=2.0, sigma=1.0, size=(rows, len(DENSE_FEATURES)))
        return features, dense

    def logits_without_intercept(self, features: dict[str, np.ndarray], dense: np.ndarray) -> np.ndarray:
        rows = len(features["user"])
        z = np.log1p(dense)
        z = z - 2.0  # about standardised: log1p of a lognormal(2, 1) counter
        out = np.zeros((rows, len(self.world.objectives)))
        for task in range(out.shape[1]):
            for name, _, _ in SPARSE_FEATURES:
                out[:, task] += self.effects[name][task][features[name]]
            out[:, task] += z @ self.dense_weights[task]
            if self.world.cross:
                u = self.user_factors[task][features["user"]]
                v = self.category_factors[task][features["category"]]
                out[:, task] += (u * v).sum(axis=1)
                out[:, task] += self.hour_device[task][features["hour"], features["device"]]
        return out

    def sample(self, rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
        """rows labelled examples (a Parquet-ready table) and their true probabilities (rows X T)."""
        rng = np.random.default_rng([seed, 11])
        features, dense = self.draw_features(rows, rng)
        probabilities = 1.0 / (
            1.0 + np.exp(-(self.logits_without_intercept(features, dense) + self.intercepts))
        )
        labels = (rng.random(probabilities.shape) < probabilities).astype(np.float32)
        columns: dict[str, Any] = {
            name: pa.array(features[name].astype(np.int64)) for name, _, _ in SPARSE_FEATURES
        }
        for j, name in enumerate(DENSE_FEATURES):
            columns[name] = pa.array(dense[:, j].astype(np.float32))
        for task, (name, _) in enumerate(self.world.objectives):
            columns[f"label_{name}"] = pa.array(labels[:, task])
        return pa.table(columns), probabilities


def _intercept_for_rate(logits: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(logits + b)) = rate (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(100):
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


class ContextTruth:
    """The hidden parameters of a ContextWorld and its sampler.

    A row: a user (activity power-law), the user's city and country, a context (daytime,
    weekday, isweekend, homework, weather), then a label y ~ Bernoulli(1/3); for y = 1 the
    item is drawn from the user's preferences in that context,

        P(item | user, context, y=1) = softmax over items of
            a_item + <p_user * (1 + r_context), q_item> + <s_context, q_item>,

    (a_item falls with the item's popularity rank, paid items less used), for y = 0 uniformly
    over items. The true probability of a row is P(y = 1 | user, context, item), by Bayes:
    its log-odds are log(1/2) + log P(item | user, context, y=1) + log(items).
    """

    CHUNK = 2048  # rows whose item scores are computed at once (CHUNK X items floats)

    def __init__(self, world: ContextWorld, seed: int) -> None:
        rng = np.random.default_rng([seed, 13])
        self.world = world
        users, items, rank = world.users, world.items, world.rank
        self.user_activity = _zipf(rng, users, 0.8)
        self.city_of_user = rng.choice(world.CITIES, size=users, p=_zipf(rng, world.CITIES, 1.0))
        self.country_of_city = rng.choice(
            world.COUNTRIES, size=world.CITIES, p=_zipf(rng, world.COUNTRIES, 1.0)
        )
        self.paid = (rng.random(items) < world.PAID_SHARE).astype(np.int64)
        popularity_rank = rng.permutation(items) + 1
        self.item_bias = -world.popularity_exponent * np.log(popularity_rank) - 1.0 * self.paid
        self.user_factors = rng.normal(0, world.preference_std / math.sqrt(rank), (users, rank))
        self.item_factors = rng.normal(0, 1, (items, rank))
        per_field = 1 / math.sqrt(len(world.CONTEXT))
        self.context_user = {
            f: rng.normal(0, world.context_std * per_field, (c, rank)) for f, c in world.CONTEXT
        }
        self.context_item = {
            f: rng.normal(0, world.item_context_std * per_field / math.sqrt(rank), (c, rank))
            for f, c in world.CONTEXT
        }
        self.daytime_rates = rng.dirichlet(np.full(7, 4.0))
        self.weather_rates = rng.dirichlet(np.full(9, 1.0))
        # homework (home, work, unknown) given isweekend
        self.homework_rates = np.array([[0.45, 0.35, 0.20], [0.75, 0.05, 0.20]])

    def sample(self, rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
        """rows labelled examples (a Parquet-ready table) and their true probabilities (rows X 1)."""
        world = self.world
        rng = np.random.default_rng([seed, 17])
        user = rng.choice(world.users, size=rows, p=self.user_activity)
        weekday = rng.integers(0, 7, rows)
        weekend = (weekday >= 5).astype(np.int64)
        context = {
            "daytime": rng.choice(7, size=rows, p=self.daytime_rates),
            "weekday": weekday,
            "homework": (rng.random((rows, 1)) > np.cumsum(self.homework_rates[weekend], axis=1)).sum(axis=1),
            "weather": rng.choice(9, size=rows, p=self.weather_rates),
        }
        label = rng.random(rows) < world.objectives[0][1]
        item = rng.integers(0, world.items, rows)  # negatives; positives are redrawn below
        log_odds = np.empty(rows)
        factors = self.item_factors.T.astype(np.float32)
        for start in range(0, rows, self.CHUNK):
            part = slice(start, start + self.CHUNK)
            shift = sum(self.context_user[f][context[f][part]] for f, _ in world.CONTEXT)
            suit = sum(self.context_item[f][context[f][part]] for f, _ in world.CONTEXT)
            left = (self.user_factors[user[part]] * (1 + shift) + suit).astype(np.float32)
            scores = left @ factors + self.item_bias.astype(np.float32)  # chunk X items
            top = scores.max(axis=1, keepdims=True)
            weights = np.exp(scores - top)
            total = weights.sum(axis=1, dtype=np.float64)
            positives = np.flatnonzero(label[part])
            if len(positives):
                cumulative = np.cumsum(weights[positives], axis=1, dtype=np.float64)
                draw = rng.random(len(positives)) * cumulative[:, -1]
                item[start + positives] = np.minimum(
                    (cumulative < draw[:, None]).sum(axis=1), world.items - 1
                )
            chosen = scores[np.arange(len(scores)), item[part]] - top[:, 0]
            log_odds[part] = math.log(0.5) + chosen - np.log(total) + math.log(world.items)
        probabilities = 1.0 / (1.0 + np.exp(-log_odds))
        city = self.city_of_user[user]
        columns = {
            "user": user, "item": item, "daytime": context["daytime"], "weekday": weekday, "isweekend": weekend,
            "homework": context["homework"], "cost": self.paid[item], "weather": context["weather"],
            "country": self.country_of_city[city], "city": city,
        }  # fmt: skip
        table = {name: pa.array(np.asarray(values, dtype=np.int64)) for name, values in columns.items()}
        table[f"label_{world.objectives[0][0]}"] = pa.array(label.astype(np.float32))
        return pa.table(table), probabilities[:, None]


def _zipf(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """Power-law probabilities over size ids in a random order."""
    weights = (rng.permutation(size) + 1.0) ** -exponent
    return weights / weights.sum()


def logloss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def write_world(
    world: World | ContextWorld, sizes: dict[str, int], seed: int, directory: Path
) -> dict[str, Any]:
    """Write train/valid/test.parquet of a world; returns the splits' paths and test optimum."""
    truth = world.truth(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths, optimum = {}, {}
    for offset, (split, rows) in enumerate(sizes.items()):
        table, probabilities = truth.sample(rows, seed * 1000 + offset + 1)
        paths[split] = directory / f"{split}.parquet"
        pq.write_table(table, paths[split])
        if split == "test":
            for task, (name, _) in enumerate(world.objectives):
                labels = table.column(f"label_{name}").to_numpy()
                rate = float(labels.mean())
                optimum[name] = {
                    "bayes_logloss": logloss(probabilities[:, task], labels),
                    "bayes_auc": auc(probabilities[:, task], labels),
                    "constant_logloss": logloss(np.full(len(labels), rate), labels),
                    "base_rate": rate,
                }
    return {"paths": paths, "optimum": optimum}


# ---------------------------------------------------------------------------------------
# Ours: rendered models trained through their own command line


def spec_for(world: World | ContextWorld, techniques: list[str], args: argparse.Namespace) -> dict[str, Any]:
    name = f"quality_{world.name}_{'_'.join(techniques) or 'plain'}"
    return {
        "model_name": name,
        "description": f"Quality benchmark model ({world.name}; {', '.join(techniques) or 'plain template'}).",
        "objectives": [{"name": objective, "weight": 1.0} for objective, _ in world.objectives],
        "sparse_features": [
            {"name": n, "cardinality": c, "embedding_dim": d, "multi_valued": False}
            for n, c, d in world.sparse_features
        ],
        "dense_features": [{"name": n} for n in world.dense_features],
        "serving": {"max_params": 10_000_000, "max_mflops_per_example": 10.0},
        "techniques": [{"name": t} for t in techniques],
        # Every other hyperparameter is the template's default (validation once per epoch).
        "hyperparameters": world.spec_hyperparameters(args),
    }


def render(spec: dict[str, Any], directory: Path) -> Path:
    tree = render_model(REPO_ROOT, spec, spec["model_name"])
    target = directory / spec["model_name"]
    write_tree(target, tree, yaml.safe_dump(spec, sort_keys=False))
    return target


def train_ours(
    model_dir: Path,
    paths: dict[str, Path],
    label: str,
    assignments: list[str],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    """Train a rendered model through `python -m MODEL train` with --set assignments; its metrics.json."""
    name = model_dir.name
    env = {**os.environ, "PYTHONPATH": str(model_dir), "OMP_NUM_THREADS": str(args.threads)}
    run_dir = model_dir / "runs" / f"{label.replace(' ', '_').replace(',', '')}-seed{seed}"
    budget = [] if args.max_epochs is None else ["--epochs", str(args.max_epochs)]
    command = [
        sys.executable, "-m", name, "train", *budget, "--threads", str(args.threads), f"--seed={seed}",
        f"--run-dir={run_dir}", "--no-progress", *(f"--set={a}" for a in assignments),
        f"--train={paths['train']}", f"--valid={paths['valid']}", f"--test={paths['test']}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=model_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    saved = json.loads((run_dir / "metrics.json").read_text())
    saved["wall_seconds"] = time.perf_counter() - start
    saved["command"] = " ".join(shlex.quote(part) for part in command[1:])
    return saved


# ---------------------------------------------------------------------------------------
# The peer: FuxiCTR's DNN


def build_peer_dnn(
    world: World | ContextWorld, workdir: Path, label: str, settings: DnnSettings, seed: int
) -> Any:
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from fuxictr.pytorch.torch_utils import seed_everything

    class DNN(BaseModel):
        """FuxiCTR's model_zoo DNN (model_zoo/DNN/DNN_torch/src/DNN.py): embeddings, then an MLP."""

        def __init__(self, feature_map, model_id="DNN", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                     hidden_units=[64, 64, 64], hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                     embedding_regularizer=None, net_regularizer=None,
                     embedding_initializer="partial(nn.init.normal_, std=1e-4)", **kwargs):  # fmt: skip
            super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)  # fmt: skip
            self.embedding_layer = FeatureEmbedding(
                feature_map, embedding_dim, embedding_initializer=embedding_initializer
            )
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=hidden_units,
                                 hidden_activations=hidden_activations, output_activation=self.output_activation,
                                 dropout_rates=net_dropout, batch_norm=batch_norm)  # fmt: skip
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X, flatten_emb=True)
            return {"y_pred": self.mlp(feature_emb)}

    dims = world.peer_dims(settings)
    features = [
        {n: {"source": "", "type": "categorical", "vocab_size": c, "embedding_dim": dims[n]}}
        for n, c, _ in world.sparse_features
    ] + [
        {n: {"source": "", "type": "numeric", "embedding_dim": settings.embedding_dim}}
        for n in world.dense_features
    ]
    spec = {
        "dataset_id": "smt_quality",
        "num_fields": len(features),
        "total_features": sum(c for _, c, _ in world.sparse_features) + len(world.dense_features),
        "input_length": len(features),
        "labels": [label],
        "features": features,
    }
    (workdir / "feature_map.json").write_text(json.dumps(spec))
    feature_map = FeatureMap("smt_quality", str(workdir))
    feature_map.load(str(workdir / "feature_map.json"), params={"embedding_dim": settings.embedding_dim})
    seed_everything(seed)
    torch.manual_seed(seed)
    return DNN(
        feature_map,
        learning_rate=settings.learning_rate,
        embedding_dim=settings.embedding_dim,
        hidden_units=list(settings.hidden_units),
        net_dropout=settings.dropout,
        batch_norm=settings.batch_norm,
        embedding_regularizer=float(settings.embedding_regularizer),
        embedding_initializer=f"partial(nn.init.normal_, std={settings.embedding_init_std!r})",
        net_regularizer=0,
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["logloss", "AUC"],
        monitor=settings.monitor,
        monitor_mode="max",
        early_stop_patience=2,
        reduce_lr_on_plateau=True,
        save_best_only=True,
        model_root=str(workdir),
        verbose=0,
    )


class PeerBatches:
    """FuxiCTR's batch dicts (feature name -> tensor, label -> labels) of a table, as its
    DataLoader yields them: len() batches, reshuffled every epoch when shuffle is set."""

    def __init__(
        self,
        table: pa.Table,
        world: World | ContextWorld,
        label: str,
        batch_size: int,
        shuffle: bool,
        seed: int,
    ) -> None:
        import torch

        self.columns = {
            n: torch.from_numpy(table.column(n).to_numpy().copy()) for n, _, _ in world.sparse_features
        }
        self.columns.update(
            {n: torch.from_numpy(table.column(n).to_numpy().astype(np.float32)) for n in world.dense_features}
        )
        self.columns[label] = torch.from_numpy(table.column(label).to_numpy().astype(np.float32))
        self.rows, self.batch_size, self.shuffle = table.num_rows, batch_size, shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self) -> Any:
        import torch

        order = self.rng.permutation(self.rows) if self.shuffle else np.arange(self.rows)
        for start in range(0, self.rows, self.batch_size):
            index = torch.from_numpy(order[start : start + self.batch_size])
            yield {name: values[index] for name, values in self.columns.items()}


def train_peer(
    world: World | ContextWorld, paths: dict[str, Path], objective: str, settings: DnnSettings,
    args: argparse.Namespace, seed: int, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """FuxiCTR's DNN trained by BaseModel.fit on one objective; its test logloss and AUC."""
    import logging

    import torch

    logging.disable(logging.INFO)
    label = f"label_{objective}"
    tables = {split: pq.read_table(path) for split, path in paths.items()}
    (workdir / "smt_quality").mkdir(parents=True, exist_ok=True)  # where BaseModel.fit keeps its best weights
    model = build_peer_dnn(world, workdir, label, settings, seed)
    train_batches = PeerBatches(tables["train"], world, label, settings.batch_size, shuffle=True, seed=seed)
    valid_batches = PeerBatches(tables["valid"], world, label, settings.batch_size, shuffle=False, seed=0)
    epochs = settings.epochs if args.max_epochs is None else min(settings.epochs, args.max_epochs)
    start = time.perf_counter()
    model.fit(
        train_batches,
        epochs=epochs,
        validation_data=valid_batches,
        max_gradient_norm=settings.max_gradient_norm,
    )
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_batches = PeerBatches(tables["test"], world, label, 4096, shuffle=False, seed=0)
        predictions = torch.cat([model(b)["y_pred"][:, 0] for b in test_batches]).double().numpy()
    labels = tables["test"].column(label).to_numpy()
    return {
        "logloss": logloss(predictions, labels),
        "auc": auc(predictions, labels),
        "epochs": model._epoch_index + 1,
        "wall_seconds": seconds,
    }


# ---------------------------------------------------------------------------------------
# Running and reporting

DEFAULTS, DNN_SETTINGS, PEER = "plain template", "plain template, DNN settings", "FuxiCTR DNN"
VARIANTS = {"defaults": DEFAULTS, "dnn": DNN_SETTINGS}


def available_techniques() -> list[str]:
    return sorted(p.parent.name for p in (REPO_ROOT / "techniques").glob("*/technique.yml"))


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    try:
        import fuxictr

        peer = f"fuxictr {fuxictr.__version__}"
    except ImportError:
        peer = "fuxictr not installed"
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, {peer}"


def progress(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def world_sizes(world: World | ContextWorld, args: argparse.Namespace) -> dict[str, int]:
    """Rows of each split: the command line's when given, else the world's own (or 200,000 / 50,000)."""
    train, valid, test = world.sizes or (200_000, 50_000, 50_000)
    if args.train_examples is not None:
        train = args.train_examples
    if args.eval_examples is not None:
        valid = test = args.eval_examples
    return {"train": train, "valid": valid, "test": test}


def run_world(
    world: World | ContextWorld, techniques: list[str], seed: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Every model of one world on one seed: the splits' optimum and each model's test metrics."""
    sizes = world_sizes(world, args)
    progress(f"{world.describe()}: seed {seed}, writing {sizes} examples")
    data = write_world(world, sizes, seed, workdir / f"seed{seed}" / "data")
    rows: dict[str, Any] = {}
    config: dict[str, Any] | None = None
    plans: list[tuple[str, str | None]] = [(VARIANTS[variant], None) for variant in args.ours.split(",")]
    plans += [(technique, technique) for technique in techniques]
    for label, technique in plans:
        spec = spec_for(world, [technique] if technique else [], args)
        try:
            model_dir = workdir / spec["model_name"]
            if not model_dir.exists():
                model_dir = render(spec, workdir)
        except SmtError as error:  # a precondition this world does not meet
            rows[label] = {"n/a": str(error).splitlines()[0]}
            progress(f"  {label}: n/a ({rows[label]['n/a']})")
            continue
        if label == DNN_SETTINGS:
            if config is None:  # the DNN's settings may depend on ours' defaults (matched widths)
                config = render_config(model_dir)
            assignments = world.dnn_settings(config, args).ours() + args.set
        else:
            assignments = list(args.set)
        progress(f"  training {label}" + (f" (--set {' '.join(assignments)})" if assignments else ""))
        saved = train_ours(model_dir, data["paths"], label, assignments, args, seed)
        if label == DEFAULTS:
            config = saved["config"]
        test = saved["metrics"]["test"]
        rows[label] = {
            "test": {o: {"logloss": test[o]["logloss"], "auc": test[o]["auc"]} for o, _ in world.objectives},
            "epochs": saved["epochs"],
            "best_step": saved.get("best_step"),
            "wall_seconds": saved["wall_seconds"],
            "command": saved["command"],
        }
        progress(
            f"    {_brief(rows[label], world)}; {saved['epochs']:g} epochs, {saved['wall_seconds']:.0f} s"
        )
    if not args.no_peer:
        if config is None:
            config = render_config(render(spec_for(world, [], args), workdir))
        settings = world.dnn_settings(config, args).with_assignments(args.peer_set)
        peer: dict[str, Any] = {}
        for objective, _ in world.objectives:
            progress(f"  training {PEER} on {objective} ({_settings_text(settings)})")
            peer[objective] = train_peer(
                world,
                data["paths"],
                objective,
                settings,
                args,
                seed,
                workdir / f"seed{seed}" / f"peer_{objective}",
            )
        rows[PEER] = {
            "test": {o: {"logloss": r["logloss"], "auc": r["auc"]} for o, r in peer.items()},
            "epochs": max(r["epochs"] for r in peer.values()),
            "wall_seconds": sum(r["wall_seconds"] for r in peer.values()),
            "settings": asdict(settings),
        }
        progress(
            f"    {_brief(rows[PEER], world)}; {rows[PEER]['epochs']} epochs, {rows[PEER]['wall_seconds']:.0f} s"
        )
    return {"optimum": data["optimum"], "sizes": sizes, "models": rows}


def render_config(model_dir: Path) -> dict[str, Any]:
    """The rendered model's ModelConfig defaults as a dict (what metrics.json's config holds)."""
    code = (
        "import dataclasses, json, sys; from {m}.config import ModelConfig;"
        "print(json.dumps(dataclasses.asdict(ModelConfig()), default=str))"
    ).format(m=model_dir.name)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=model_dir, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def _brief(row: dict[str, Any], world: World | ContextWorld) -> str:
    return ", ".join(
        f"{o} logloss {row['test'][o]['logloss']:.5f} AUC {row['test'][o]['auc']:.5f}"
        for o, _ in world.objectives
    )


def _settings_text(settings: DnnSettings) -> str:
    return (
        f"embedding {settings.embedding_dim}, MLP {list(settings.hidden_units)}, dropout {settings.dropout},"
        f" batch norm {settings.batch_norm}, batch {settings.batch_size}, Adam {settings.learning_rate:g},"
        f" embedding L2 {settings.embedding_regularizer:g}, monitor {settings.monitor}, init std {settings.embedding_init_std:g}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    techniques = {"all": available_techniques(), "none": []}.get(args.techniques)
    if techniques is None:
        techniques = [t for t in args.techniques.split(",") if t]
    workdir = Path(tempfile.mkdtemp(prefix="smt_quality_"))
    results: dict[str, Any] = {}
    for world_name in args.worlds.split(","):
        world = WORLDS[world_name]
        seeds = {}
        for seed in args.seed_list:
            seeds[str(seed)] = run_world(world, techniques, seed, args, workdir / world.name)
        results[world.name] = {"world": world.describe(), "sizes": world_sizes(world, args), "seeds": seeds}
    return {
        "command": " ".join(shlex.quote(p) for p in ["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "worlds": results,
    }


def _mean_sd(values: list[float], digits: int = 5) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}±{statistics.stdev(values):.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    seeds = s["seed_list"]
    epochs_text = (
        "template default epochs" if s["max_epochs"] is None else f"at most {s['max_epochs']} epochs"
    )
    lines = [
        "Test logloss and AUC vs the Bayes optimum (gap % = (logloss - Bayes) / (constant prediction's logloss - Bayes))",
        f"  seeds {', '.join(map(str, seeds))}" + (" (mean±sd over seeds)" if len(seeds) > 1 else "")
        + f"; {epochs_text}; {s['threads']} thread(s)",
    ]  # fmt: skip
    verdicts = []
    for world in report["worlds"].values():
        runs = list(world["seeds"].values())
        objectives = list(runs[0]["optimum"])
        sizes = world["sizes"]
        lines += [
            "",
            world["world"],
            f"  {sizes['train']:,} train / {sizes['valid']:,} valid / {sizes['test']:,} test examples",
        ]
        width = 17 if len(seeds) > 1 else 9
        header = (
            f"  {'model':<30}"
            + "".join(f"{o + ' logloss':>{width}}{'gap %':>7}{'AUC':>{width}}" for o in objectives)
            + f"{'epochs':>8}{'s':>6}"
        )
        lines.append(header)

        def bound(key: str, o: str) -> list[float]:
            return [r["optimum"][o][key] for r in runs]

        def share(values: list[float], o: str) -> float:
            gaps = [
                (v - r["optimum"][o]["bayes_logloss"])
                / (r["optimum"][o]["constant_logloss"] - r["optimum"][o]["bayes_logloss"])
                for v, r in zip(values, runs)
            ]
            return 100 * statistics.fmean(gaps)

        lines.append(
            f"  {'Bayes optimum':<30}"
            + "".join(
                f"{_mean_sd(bound('bayes_logloss', o)):>{width}}{'':>7}{_mean_sd(bound('bayes_auc', o)):>{width}}"
                for o in objectives
            )
        )
        lines.append(
            f"  {'constant prediction':<30}"
            + "".join(
                f"{_mean_sd(bound('constant_logloss', o)):>{width}}{100:>6.0f}%{0.5:>{width}.5f}"
                for o in objectives
            )
        )
        labels = list(runs[0]["models"])
        means: dict[str, dict[str, tuple[float, float]]] = {}
        for label in labels:
            rows = [r["models"][label] for r in runs]
            if any("n/a" in row for row in rows):
                lines.append(f"  {label:<30}  n/a: {rows[0].get('n/a', '')[:90]}")
                continue
            cells = ""
            means[label] = {}
            for o in objectives:
                losses = [row["test"][o]["logloss"] for row in rows]
                aucs = [row["test"][o]["auc"] for row in rows]
                means[label][o] = (statistics.fmean(losses), statistics.fmean(aucs))
                cells += f"{_mean_sd(losses):>{width}}{share(losses, o):>6.1f}%{_mean_sd(aucs):>{width}}"
            epochs = statistics.fmean(row["epochs"] for row in rows)
            seconds = statistics.fmean(row["wall_seconds"] for row in rows)
            lines.append(f"  {label:<30}{cells}{epochs:>8.1f}{seconds:>6.0f}")
        name = world["world"].split(":")[0]
        if PEER in means:
            for label in (DEFAULTS, DNN_SETTINGS):
                if label not in means:
                    continue
                for o in objectives:
                    (ours_loss, ours_auc), (peer_loss, peer_auc) = means[label][o], means[PEER][o]
                    verdict = "PASS" if ours_loss <= peer_loss and ours_auc >= peer_auc else "FAIL"
                    verdicts.append(
                        f"{name} {o}: {label} {ours_loss:.5f} / {ours_auc:.5f} vs {PEER} {peer_loss:.5f} / {peer_auc:.5f}"
                        f" (logloss {100 * (ours_loss / peer_loss - 1):+.2f}%, AUC {ours_auc - peer_auc:+.5f}): {verdict}"
                    )
    if verdicts:
        lines += [
            "",
            "plain template at least as good as FuxiCTR's DNN (mean test logloss no higher, AUC no lower):",
        ]
        lines += ["  " + v for v in verdicts]
    lines += ["", f"date: {report['date']}", f"machine: {report['machine']}", f"command: {report['command']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one small world (crossed_correlated), 3 epochs: minutes, not an hour",
    )
    parser.add_argument("--worlds", default=",".join(WORLDS), help=f"comma-separated, of {', '.join(WORLDS)}")
    parser.add_argument(
        "--techniques", default="all", help="all, none (plain template only) or a comma-separated list"
    )
    parser.add_argument(
        "--ours",
        default="defaults,dnn",
        help="the plain template's runs: defaults, dnn (at the DNN's settings) or both",
    )
    parser.add_argument(
        "--train-examples", type=int, help="training rows of every world (default: the world's own; 200,000)"
    )
    parser.add_argument(
        "--eval-examples", type=int, help="rows of each of valid and test (default: the world's own; 50,000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=512, help="batch size of the per-id worlds (ours and the peer)"
    )
    parser.add_argument(
        "--max-epochs", type=int, help="cap on every run's epochs (default: the template's, the peer's 100)"
    )
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds (each: its own data and initialisation)"
    )
    parser.add_argument("--seed", type=int, help="one seed (same as --seeds N)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every training process")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--set of every run of ours (ablations)",
    )
    parser.add_argument(
        "--peer-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a DNN setting of the peer (ablations)",
    )
    parser.add_argument(
        "--peer-embedding-regularizer",
        type=float,
        default=1e-5,
        help="the peer's embedding L2 on the per-id worlds",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip FuxiCTR's DNN")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    args.seed_list = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.worlds = "crossed_correlated" if args.worlds == ",".join(WORLDS) else args.worlds
        args.train_examples, args.eval_examples, args.max_epochs = 40_000, 10_000, 3
    unknown = [w for w in args.worlds.split(",") if w not in WORLDS]
    if unknown or any(v not in VARIANTS for v in args.ours.split(",")):
        parser.error(f"--worlds of {', '.join(WORLDS)}; --ours of {', '.join(VARIANTS)}")
    import torch

    torch.set_num_threads(args.threads)
    report = run(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
