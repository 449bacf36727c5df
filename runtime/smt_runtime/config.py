"""The parts of a model's config that are the same for every model: the record types of
its facts (objectives, features, serving budget, synthetic world) and ModelConfigBase, the
base of every generated ``ModelConfig``, with the command line's ``--set`` overrides.

The values themselves live in each model's generated ``config.py``.
"""

import json
import typing
from dataclasses import dataclass, replace
from typing import Self


@dataclass(frozen=True)
class Objective:
    """One binary optimization event (e.g. click) and its weight in the training loss."""

    name: str
    weight: float


@dataclass(frozen=True)
class SparseFeature:
    """One categorical feature: ids in [0, cardinality), pooled by an embedding bag.

    Single-valued features carry one id per example (sum pooling), multi-valued
    features a list of ids (mean pooling). column names the feature's column in data
    files ("" = name). unknown_id, when set, is the id of every unknown value: null
    ids are read as it, hashed raw ids avoid it, and its row is an ordinary learned
    embedding (the vector of "unseen"), not a zero vector.
    """

    name: str
    cardinality: int
    embedding_dim: int
    multi_valued: bool
    column: str = ""
    unknown_id: int | None = None


@dataclass(frozen=True)
class ServingBudget:
    """What one serving replica of the model may cost."""

    max_params: int
    max_mflops_per_example: float


@dataclass(frozen=True)
class Cross:
    """A feature cross of the synthetic world: labels depend on these sparse fields
    jointly (a product of per-id factors), with this logit standard deviation."""

    fields: tuple[str, ...]
    strength: float


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the model's synthetic world (synthetic.py; the spec's synthetic: section).

    crosses: pairwise (two fields) and higher-order feature crosses. dense_cross: logit
    std of z_0 * z_1 of the first two dense features. objective_correlation: share of
    the per-id and dense effects' variance common to all objectives. label_noise:
    probability that a label is flipped. dense_tail: spread of log(1 + dense value)
    relative to the default (above 1: heavier tails). bag_lengths: fewest and most ids
    of a multi-valued feature. test_shift: covariate shift of the test split.
    """

    crosses: tuple[Cross, ...] = ()
    dense_cross: float = 0.6
    objective_correlation: float = 0.5
    label_noise: float = 0.0
    dense_tail: float = 1.0
    bag_lengths: tuple[int, int] = (1, 5)
    test_shift: float = 0.0


class ModelConfigBase:
    """What every model's ModelConfig shares: the generated config.py declares a frozen
    dataclass ``ModelConfig(ModelConfigBase)`` whose fields are that model's facts and
    hyperparameters; the runtime reads them through these properties and with_overrides.
    """

    def with_overrides(self, assignments: list[str]) -> Self:
        """This config with hyperparameters changed by KEY=VALUE assignments (the
        command line's --set); VALUE is JSON (e.g. 0.5, [64, 32], true), or a plain
        string for text fields.

        Raises:
            ValueError: in one line, for an unknown key or a value of the wrong type
                or outside the hyperparameter's range.
        """
        changes = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep or key not in HYPERPARAMETERS:
                known = ", ".join(sorted(HYPERPARAMETERS))
                raise ValueError(
                    f"--set {assignment!r}: unknown hyperparameter {key!r}; use KEY=VALUE"
                    f" with KEY one of {known}"
                )
            changes[key] = _parse_value(key, text.strip(), getattr(self, key))
        if "label_rates" in changes and len(changes["label_rates"]) != self.num_objectives:
            raise ValueError(f"--set label_rates: give {self.num_objectives} rate(s), one per objective")
        return replace(self, **changes)

    @property
    def num_objectives(self) -> int:
        """T: number of objectives."""
        return len(self.objectives)

    @property
    def num_sparse_features(self) -> int:
        """F: number of sparse features."""
        return len(self.sparse_features)

    @property
    def num_dense_features(self) -> int:
        """N: number of dense features."""
        return len(self.dense_features)

    @property
    def objective_names(self) -> tuple[str, ...]:
        """Objective names in the order of the model's output columns."""
        return tuple(objective.name for objective in self.objectives)


# What `--set KEY=VALUE` accepts: hyperparameter -> (check of the parsed value, what it must be).
HYPERPARAMETERS: dict[str, tuple[typing.Callable[[typing.Any], bool], str]] = {
    "embedding_dim": (
        lambda v: _is_int(v) and 1 <= v <= 1024,
        "an integer in [1, 1024]",
    ),
    "dense_arch_layers": (lambda v: _is_widths(v), "a list of positive integers"),
    "over_arch_layers": (lambda v: _is_widths(v), "a list of positive integers"),
    "tower_layers": (lambda v: _is_widths(v), "a list of positive integers"),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "batch_norm": (lambda v: isinstance(v, bool), "true or false"),
    "dense_optimizer": (lambda v: v in ("adamw", "adam"), "adamw or adam"),
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a number above 0"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    "embedding_optimizer": (
        lambda v: v in ("adagrad", "rowwise_adagrad", "sgd", "dense"),
        "adagrad, rowwise_adagrad, sgd or dense",
    ),
    "embedding_learning_rate": (
        lambda v: v is None or _is_number(v) and v > 0,
        "a number above 0 or null",
    ),
    "embedding_regularizer": (
        lambda v: _is_number(v) and v >= 0,
        "a number of at least 0",
    ),
    "embedding_init_std": (
        lambda v: v is None or _is_number(v) and v > 0,
        "a number above 0 or null (uniform)",
    ),
    "net_regularizer": (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "seed": (lambda v: _is_int(v), "an integer"),
    "train_examples": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "eval_examples": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "eval_every": (
        lambda v: _is_int(v) and v >= 0,
        "an integer of at least 0 (0: once per epoch)",
    ),
    "monitor": (lambda v: v in ("logloss", "auc"), "logloss or auc"),
    "lr_plateau_factor": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "early_stopping_patience": (
        lambda v: _is_int(v) and v >= 1,
        "an integer of at least 1",
    ),
    "calibrate": (lambda v: isinstance(v, bool), "true or false"),
    "label_rates": (
        lambda v: isinstance(v, list) and all(_is_number(r) and 0 < r < 1 for r in v),
        "a list of rates in (0, 1), one per objective",
    ),
}


# Hyperparameters that are a float or None (None: a documented fallback).
OPTIONAL_NUMBERS = ("embedding_learning_rate", "embedding_init_std")


def _is_int(value: typing.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: typing.Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_widths(value: typing.Any) -> bool:
    return isinstance(value, list) and all(_is_int(width) and width >= 1 for width in value)


def _parse_value(key: str, text: str, current: typing.Any) -> typing.Any:
    """The value of `--set key=text`, converted to the field's type, or ValueError."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare word, e.g. monitor=auc
    check, expected = HYPERPARAMETERS[key]
    if not check(value):
        raise ValueError(f"--set {key}={text}: {key} must be {expected}")
    if isinstance(value, list):
        return tuple(float(v) for v in value) if key == "label_rates" else tuple(value)
    if isinstance(current, float) or key in OPTIONAL_NUMBERS:
        return None if value is None else float(value)
    return value
