"""The parts of a model's config that are the same for every model: the record types of
its facts (objectives, features, serving budget, synthetic world) and ModelConfigBase, the
base of every generated ``ModelConfig``, with the command line's ``--set`` overrides.

The values themselves live in each model's generated ``config.py``.
"""

import dataclasses
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
    embedding (the vector of "unseen"), not a zero vector. Without one, the table gets
    one row more than the data's ids, row cardinality, which plays that part
    (unknown_row, num_embeddings). Ids seen fewer than the config's min_count times in
    the training split read the unknown row too (smt_runtime.sparse.UnknownIds), so it
    learns from the rare ids what an unseen one predicts.
    """

    name: str
    cardinality: int
    embedding_dim: int
    multi_valued: bool
    column: str = ""
    unknown_id: int | None = None

    @property
    def unknown_row(self) -> int:
        """The row every unknown id of this feature reads: unknown_id when the spec declares
        one, else the row the runtime reserves past the data's ids, cardinality."""
        return self.cardinality if self.unknown_id is None else self.unknown_id

    @property
    def num_embeddings(self) -> int:
        """Rows of the feature's table: its cardinality, plus the reserved unknown row
        when the spec declares no unknown id."""
        return self.cardinality + (self.unknown_id is None)


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
    popularity_effect: logit std, over examples, of the part of the per-id effects that
    follows the ids' log popularity (popular ids more positive, rare and unseen ids
    systematically lower, as in real logs; 0: effects do not depend on popularity).
    """

    crosses: tuple[Cross, ...] = ()
    dense_cross: float = 0.6
    objective_correlation: float = 0.5
    label_noise: float = 0.0
    dense_tail: float = 1.0
    bag_lengths: tuple[int, int] = (1, 5)
    test_shift: float = 0.0
    popularity_effect: float = 0.0


class ModelConfigBase:
    """What every model's ModelConfig shares: the generated config.py declares a frozen
    dataclass ``ModelConfig(ModelConfigBase)`` whose fields are that model's facts and
    hyperparameters; the runtime reads them through these properties and with_overrides.
    """

    def with_overrides(self, assignments: list[str]) -> Self:
        """This config with hyperparameters changed by KEY=VALUE assignments (the
        command line's --set); VALUE is JSON (e.g. 0.5, [64, 32], true), or a plain
        string for text fields. KEY is a hyperparameter (HYPERPARAMETERS) or a technique's
        param, TECHNIQUE.PARAM (e.g. dcn_v2.num_cross_layers), checked like the spec checks
        it: its type, and the bounds and choices of the technique's technique.yml, which
        the generated Params records carry as field metadata.

        Raises:
            ValueError: in one line, for an unknown key or a value of the wrong type
                or outside the hyperparameter's range.
        """
        changes: dict[str, typing.Any] = {}
        techniques = self.technique_params()
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key, text = key.strip(), text.strip()
            technique, dot, param = key.partition(".")
            if sep and dot and technique in techniques:
                record = changes.get(technique, techniques[technique])
                changes[technique] = replace(record, **{param: _parse_param(key, text, record, param)})
            elif sep and dot:
                names = ", ".join(techniques) or "none"
                raise ValueError(
                    f"--set {assignment!r}: {technique!r} is not a technique with params of"
                    f" {self.model_name}; use TECHNIQUE.PARAM=VALUE with TECHNIQUE one of {names}"
                )
            elif sep and key in HYPERPARAMETERS:
                changes[key] = _parse_value(key, text, getattr(self, key))
            else:
                known = ", ".join(sorted(HYPERPARAMETERS))
                raise ValueError(
                    f"--set {assignment!r}: unknown hyperparameter {key!r}; use KEY=VALUE"
                    f" with KEY one of {known}, or TECHNIQUE.PARAM"
                )
        if "label_rates" in changes and len(changes["label_rates"]) != self.num_objectives:
            raise ValueError(f"--set label_rates: give {self.num_objectives} rate(s), one per objective")
        return replace(self, **changes)

    def technique_params(self) -> dict[str, typing.Any]:
        """technique -> its params for this model: the fields holding a record that the
        model's own config module defines (one per technique with params, e.g.
        ``dcn_v2: DcnV2Params``), unlike the runtime's record types (serving, synthetic)."""
        return {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)  # type: ignore[arg-type]
            if dataclasses.is_dataclass(getattr(self, item.name))
            and type(getattr(self, item.name)).__module__ == type(self).__module__
        }

    @classmethod
    def from_dict(cls, data: dict[str, typing.Any]) -> Self:
        """The config whose dataclasses.asdict is data (best.pt keeps one): records and
        tuples of records rebuilt from the fields' types; a field data lacks keeps its
        default.

        Raises:
            ValueError: data names a field the config (or one of its records) lacks.
        """
        return _from_dict(cls, data)

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
    "min_count": (lambda v: _is_int(v) and v >= 0, "an integer of at least 0 (0: every id keeps its row)"),
    "unknown_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
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


def _parse_param(key: str, text: str, record: typing.Any, param: str) -> typing.Any:
    """The value of `--set TECHNIQUE.PARAM=text` for the params record, as the spec would
    take it (generator.engine.technique.Param.coerce), or ValueError."""
    fields = {item.name: item for item in dataclasses.fields(record)}
    if param not in fields:
        technique = key.partition(".")[0]
        raise ValueError(f"--set {key}={text}: {technique} has no param {param!r}; its params: {', '.join(fields)}")
    kind = typing.get_type_hints(type(record))[param]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare word, e.g. bilinear_type=field_all
    bounds = fields[param].metadata
    is_list = typing.get_origin(kind) is tuple
    item_kind = typing.get_args(kind)[0] if is_list else kind
    items = value if is_list and isinstance(value, list) else [value]
    checked = [_param_item(item_kind, item, bounds) for item in items]
    if None in checked or is_list != isinstance(value, list):
        raise ValueError(f"--set {key}={text}: {key} must be {_param_expected(item_kind, bounds, is_list)}")
    return tuple(checked) if is_list else checked[0]


def _param_item(kind: type, value: typing.Any, bounds: typing.Mapping[str, typing.Any]) -> typing.Any:
    """value as kind within bounds (min, max, choices), or None."""
    fits = {int: _is_int(value), float: _is_number(value), bool: isinstance(value, bool), str: isinstance(value, str)}
    if not fits.get(kind, False):
        return None
    value = float(value) if kind is float else value
    if "min" in bounds and value < bounds["min"] or "max" in bounds and value > bounds["max"]:
        return None
    if "choices" in bounds and value not in bounds["choices"]:
        return None
    return value


def _param_expected(kind: type, bounds: typing.Mapping[str, typing.Any], is_list: bool) -> str:
    """What a technique param must be, in words (e.g. "an integer of at least 1")."""
    noun = {int: "an integer", float: "a number", bool: "true or false", str: "a word"}[kind]
    if "choices" in bounds:
        noun = "one of " + ", ".join(str(choice) for choice in bounds["choices"])
    elif "min" in bounds and "max" in bounds:
        noun += f" in [{bounds['min']}, {bounds['max']}]"
    elif "min" in bounds:
        noun += f" of at least {bounds['min']}"
    elif "max" in bounds:
        noun += f" of at most {bounds['max']}"
    return f"a list, each item {noun}" if is_list else noun


def _from_dict(kind: typing.Any, value: typing.Any) -> typing.Any:
    """value (from dataclasses.asdict) rebuilt as kind: a dataclass, a tuple of them, or as is."""
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = {item.name for item in dataclasses.fields(kind)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{kind.__name__} has no field {unknown[0]!r}")
        return kind(**{name: _from_dict(hints[name], item) for name, item in value.items()})
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        arguments = typing.get_args(kind)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_from_dict(arguments[0], item) for item in value)
        return tuple(_from_dict(argument, item) for argument, item in zip(arguments, value))
    return value
