"""ModelSpec: the validated form of a model's Copier answers, and one-line errors for bad specs."""

from __future__ import annotations

import keyword
import os
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SmtError, brief

# Keys Copier itself writes into an answers file.
COPIER_KEYS = frozenset({"_src_path", "_commit"})
# Package names that would shadow what the generated code imports.
RESERVED_PACKAGE_NAMES = frozenset({"torch", "numpy", "pyarrow", "tests", "test", "generator"})


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{brief(value)} is not a Python identifier; use letters, digits and '_' ({what})")
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        raise ValueError(f"{brief(value)} is a Python keyword; choose another {what}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Objective(_Strict):
    name: str
    weight: float = Field(default=1.0, gt=0)

    _name = field_validator("name")(lambda v: _check_identifier(v, "objective name"))

    @field_validator("weight", mode="before")
    @classmethod
    def _int_weight_is_fine(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SparseFeature(_Strict):
    name: str
    cardinality: int = Field(ge=1)
    embedding_dim: int = Field(default=16, ge=1, le=1024)
    multi_valued: bool = False

    _name = field_validator("name")(lambda v: _check_identifier(v, "feature name"))


class DenseFeature(_Strict):
    name: str

    _name = field_validator("name")(lambda v: _check_identifier(v, "feature name"))


class Serving(_Strict):
    max_params: int = Field(ge=1)
    max_mflops_per_example: float = Field(gt=0)

    @field_validator("max_mflops_per_example", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TechniqueUse(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Hyperparameters(_Strict):
    """Template-level hyperparameters a model may override; defaults live in the template."""

    embedding_dim: int | None = Field(default=None, ge=1, le=1024)
    dense_arch_layers: list[int] | None = None
    over_arch_layers: list[int] | None = None
    tower_layers: list[int] | None = None
    dropout: float | None = Field(default=None, ge=0, lt=1)
    batch_norm: bool | None = None
    dense_optimizer: Literal["adamw", "adam"] | None = None
    learning_rate: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    embedding_optimizer: Literal["adagrad", "rowwise_adagrad", "sgd", "dense"] | None = None
    embedding_learning_rate: float | None = Field(default=None, gt=0)
    embedding_regularizer: float | None = Field(default=None, ge=0)
    embedding_init_std: float | None = Field(default=None, gt=0)  # normal init of the tables (unset: uniform)
    net_regularizer: float | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1)
    seed: int | None = None
    train_examples: int | None = Field(default=None, ge=1)
    eval_examples: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    eval_every: int | None = Field(default=None, ge=0)  # 0: once per epoch
    monitor: Literal["logloss", "auc"] | None = None
    lr_plateau_factor: float | None = Field(default=None, gt=0, le=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    calibrate: bool | None = None  # shift each output bias to the validation label rate after training
    min_count: int | None = Field(default=None, ge=0)  # ids rarer than this in training read the unknown row
    unknown_dropout: float | None = Field(default=None, ge=0, lt=1)  # share of training lookups read as unknown
    label_rates: list[float] | None = None  # synthetic data: positive rate per objective

    @field_validator("label_rates", mode="before")
    @classmethod
    def _rates(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError("expected a list of numbers, one per objective")
        if not all(0 < v < 1 for v in value):
            raise ValueError("every rate must be strictly between 0 and 1")
        return [float(v) for v in value]

    @field_validator("dense_arch_layers", "over_arch_layers", "tower_layers")
    @classmethod
    def _positive_widths(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(width < 1 for width in value):
            raise ValueError("every layer width must be at least 1")
        return value

    @field_validator(
        "dropout",
        "learning_rate",
        "weight_decay",
        "embedding_learning_rate",
        "embedding_regularizer",
        "embedding_init_std",
        "net_regularizer",
        "lr_plateau_factor",
        "unknown_dropout",
        mode="before",
    )
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class DataSpec(_Strict):
    """How the model's data files name their columns, and which id stands for "unknown"."""

    labels: dict[str, str] = Field(default_factory=dict)  # objective -> label column
    columns: dict[str, str] = Field(default_factory=dict)  # feature -> column
    unknown_ids: dict[str, int] = Field(default_factory=dict)  # sparse feature -> its unknown id


class Cross(_Strict):
    """A feature cross of the synthetic world: the labels depend on these sparse fields jointly."""

    fields: list[str] = Field(min_length=2, max_length=4)
    strength: float = Field(ge=0, le=5)  # logit standard deviation of the cross

    _int_is_fine = field_validator("strength", mode="before")(lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v)


class SyntheticSpec(_Strict):
    """Knobs of the model's synthetic world; unset ones keep the template's defaults."""

    crosses: list[Cross] | None = None  # default: the two smallest-cardinality sparse features at 0.6
    dense_cross: float | None = Field(default=None, ge=0, le=5)  # z_0 * z_1 of the first two dense features
    objective_correlation: float | None = Field(default=None, ge=0, le=1)  # shared share of effect variance
    label_noise: float | None = Field(default=None, ge=0, lt=0.5)  # probability that a label is flipped
    dense_tail: float | None = Field(default=None, gt=0, le=3)  # spread of log(1 + dense value), x the default
    bag_lengths: list[int] | None = Field(default=None, min_length=2, max_length=2)  # [min, max] ids per bag
    test_shift: float | None = Field(default=None, ge=0, le=3)  # covariate shift of the test split
    popularity_effect: float | None = Field(default=None, ge=0, le=3)  # logit std of effects following id popularity

    @field_validator("dense_cross", "objective_correlation", "label_noise", "dense_tail", "test_shift", "popularity_effect", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("bag_lengths")
    @classmethod
    def _bag_lengths(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not 1 <= value[0] <= value[1] <= 100:
            raise ValueError(f"{value} is not [min, max] with 1 <= min <= max <= 100")
        return value


def default_label_rates(num_objectives: int) -> list[float]:
    """The template's synthetic label rates: geometric from 0.25 (first) to 0.05 (last)."""
    return [0.25 * 0.2 ** (index / max(num_objectives - 1, 1)) for index in range(num_objectives)]


class ModelSpec(_Strict):
    """A model's inputs: objectives, features, serving budget and techniques."""

    model_name: str
    description: str = ""
    objectives: list[Objective] = Field(min_length=1, max_length=8)
    sparse_features: list[SparseFeature] = Field(min_length=1)
    dense_features: list[DenseFeature] = Field(default_factory=list)
    serving: Serving
    techniques: list[TechniqueUse] = Field(default_factory=list)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    data: DataSpec = Field(default_factory=DataSpec)
    synthetic: SyntheticSpec = Field(default_factory=SyntheticSpec)

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        _check_identifier(value, "model name")
        if value in RESERVED_PACKAGE_NAMES or value in sys.stdlib_module_names:
            raise ValueError(f"{brief(value)} would shadow a module the model imports; choose another name")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSpec:
        seen: dict[str, str] = {}
        for field, items in (("sparse_features", self.sparse_features), ("dense_features", self.dense_features)):
            for index, feature in enumerate(items):
                if feature.name in seen:
                    raise _FieldProblem(
                        f"{field}[{index}].name",
                        f"duplicate feature name {feature.name!r} (also in {seen[feature.name]}); feature names must be unique",
                    )
                if feature.name.startswith("label_"):
                    raise _FieldProblem(f"{field}[{index}].name", f"{feature.name!r}: the prefix 'label_' is reserved for objective labels")
                seen[feature.name] = field
        names: set[str] = set()
        for index, objective in enumerate(self.objectives):
            if objective.name in names:
                raise _FieldProblem(f"objectives[{index}].name", f"duplicate objective name {objective.name!r}")
            names.add(objective.name)
        rates = self.hyperparameters.label_rates
        if rates is not None and len(rates) != len(self.objectives):
            raise _FieldProblem("hyperparameters.label_rates", f"has {len(rates)} rate(s) but the model has {len(self.objectives)} objective(s); give one per objective")
        self._check_data()
        self._check_synthetic()
        self._check_embedding_size()
        used: set[str] = set()
        for index, use in enumerate(self.techniques):
            if use.name in used:
                raise _FieldProblem(f"techniques[{index}].name", f"technique {use.name!r} is listed twice; list it once")
            used.add(use.name)
        return self

    def _check_data(self) -> None:
        objectives = [objective.name for objective in self.objectives]
        sparse = {feature.name: feature for feature in self.sparse_features}
        features = [*sparse, *(feature.name for feature in self.dense_features)]
        for key, known, what in (("labels", objectives, "objective"), ("columns", features, "feature")):
            for name, column in getattr(self.data, key).items():
                if name not in known:
                    raise _FieldProblem(f"data.{key}.{name}", f"{name!r} is not a{'n' if what[0] == 'o' else ''} {what} of this model; use one of {', '.join(known)}")
                if not column.strip():
                    raise _FieldProblem(f"data.{key}.{name}", "the column name is empty")
        sources = [self.data.labels.get(name, "label_" + name) for name in objectives]
        sources += [self.data.columns.get(name, name) for name in features]
        duplicates = sorted({column for column in sources if sources.count(column) > 1})
        if duplicates:
            raise _FieldProblem("data", f"column {duplicates[0]!r} is used twice; every feature and label needs its own column")
        for name, unknown in self.data.unknown_ids.items():
            if name not in sparse:
                raise _FieldProblem(f"data.unknown_ids.{name}", f"{name!r} is not a sparse feature of this model; use one of {', '.join(sparse)}")
            if not 0 <= unknown < sparse[name].cardinality:
                raise _FieldProblem(f"data.unknown_ids.{name}", f"{unknown} is outside [0, {sparse[name].cardinality}), the feature's ids")

    def _check_synthetic(self) -> None:
        sparse = [feature.name for feature in self.sparse_features]
        for index, cross in enumerate(self.synthetic.crosses or []):
            where = f"synthetic.crosses[{index}].fields"
            for name in cross.fields:
                if name not in sparse:
                    raise _FieldProblem(where, f"{name!r} is not a sparse feature of this model; use some of {', '.join(sparse)}")
            if len(set(cross.fields)) != len(cross.fields):
                raise _FieldProblem(where, "a field is listed twice; a cross joins distinct fields")
        noise = self.synthetic.label_noise or 0.0
        rates = self.hyperparameters.label_rates or default_label_rates(len(self.objectives))
        if noise and noise >= min(rates):
            raise _FieldProblem("synthetic.label_noise", f"{noise} is not below every label rate (lowest {min(rates):g}); flipped labels alone would exceed it")

    def _check_embedding_size(self) -> None:
        """Refuse tables that can never serve or fit: their size follows from the spec alone."""
        parameters = embedding_parameters(self)
        if parameters > self.serving.max_params:
            raise _FieldProblem(
                "serving.max_params",
                f"the embedding tables alone hold {parameters:,} parameters (sum of rows x embedding_dim), over the "
                f"budget of {self.serving.max_params:,}; lower cardinalities or embedding dims, or raise serving.max_params",
            )
        memory = physical_memory_bytes()
        if memory and parameters * 4 > memory:
            raise _FieldProblem(
                "sparse_features",
                f"the embedding tables need {parameters * 4 / 2**30:,.1f} GiB (float32), more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory; lower cardinalities or embedding dims",
            )

    @property
    def technique_names(self) -> list[str]:
        return [use.name for use in self.techniques]


def embedding_parameters(spec: ModelSpec) -> int:
    """Parameters of the model's embedding tables: one row of embedding_dim per id, and one
    more, the unknown row, for a feature without a declared unknown id
    (smt_runtime.config.SparseFeature.num_embeddings)."""
    return sum(
        (feature.cardinality + (feature.name not in spec.data.unknown_ids)) * feature.embedding_dim
        for feature in spec.sparse_features
    )


def physical_memory_bytes() -> int:
    """This machine's memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


class _FieldProblem(ValueError):
    """A cross-field problem that knows which field it is about."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "spec"


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _FieldProblem):
        return ctx_error.field, ctx_error.problem
    where = _format_loc(loc)
    if kind == "extra_forbidden":
        return where, "unknown key; remove it or check its spelling"
    if kind == "missing":
        return where, "required key is missing"
    ctx = error.get("ctx") or {}
    if kind == "too_short":
        return where, f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return where, f"allows at most {ctx.get('max_length')} item(s)"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    given = error.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message} (got {brief(given)})"
    return where, message


def validate_spec(answers: Any, model: str) -> ModelSpec:
    """Validate a model's answers; raise SmtError naming the model, the field and the problem."""
    if not isinstance(answers, dict):
        raise SmtError(f"{model}: the spec must be a YAML mapping of answers, got {type(answers).__name__}; see README, The spec")
    data = {key: value for key, value in answers.items() if key not in COPIER_KEYS}
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        where, problem = _describe(exc.errors()[0])
        if ";" not in problem:  # pydantic's own wording says what is wrong, not what to do
            problem += f"; fix {where} in the spec (see README, The spec)"
        raise SmtError(f"{model}: {where}: {problem}") from None
    return spec


def spec_field_error(answers: dict[str, Any], field: str) -> str:
    """The first problem with ``field`` in partial answers, or "" (used by Copier's validators)."""
    data = {key: value for key, value in answers.items() if key not in COPIER_KEYS and key in ModelSpec.model_fields}
    try:
        ModelSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            where, problem = _describe(error)
            if where == field or where.startswith((f"{field}.", f"{field}[")):
                return f"{where}: {problem}"
    return ""
