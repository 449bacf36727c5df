"""Training: multi-task loss, optimizers, learning-rate schedule, and the training loop
with validation, early stopping, checkpoints and a metrics file per run.

A run (train) starts every output bias at the log-odds of the train split's label
rate, trains for at most config.epochs epochs, validates once per epoch (or every
config.eval_every steps), reduces the learning rates when the monitored validation
score (config.monitor: weighted logloss or AUC) does not improve and stops after
config.early_stopping_patience such validations in a row, restores the best weights,
shifts each output bias so that the mean prediction on the validation split matches its
label rate (config.calibrate) and reports metrics.py's metrics on the validation and
test splits. With a run
directory it writes checkpoint.pt at every validation (resume continues from it),
metrics.json (plain JSON) and predictions.npz (each split's logits and labels, rows X T)
at the end. Deterministic on CPU: weights, data order and
dropout all derive from config.seed.

fit is made of named parts: train_step (one optimizer step), EarlyStopping (best
weights, plateau, stop), save_checkpoint / load_checkpoint, plan_steps (the run's
planned length, which schedules are sized by).

Shapes: B = batch size, T = number of objectives.
"""

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import ModelConfig
from .data import Batch, Examples
from .distributed import Runtime, replicate, total
from .features import EmbeddingTables
from .metrics import Metrics, objective_metrics, predict, weighted_logloss
from .model import RankingModel

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_KEYS = {
    "model_name",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "rng",
    "result",
    "epoch",
    "position",
    "stopping",
}  # what save_checkpoint writes
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"  # per split: logits and labels, rows X T


class MultiTaskLoss(nn.Module):
    """Weighted sum of per-objective binary cross-entropies.

    total = sum_t weight_t * bce_t, weights from config.objectives.

    Args:
        config: the model's ModelConfig; reads config.objectives.

    Call Args:
        logits: tensor of shape B X T.
        labels: tensor of shape B X T, 0/1.

    Returns:
        (total, per_task): a scalar tensor and a tensor of shape T holding the
        mean cross-entropy of every objective.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        weights = [objective.weight for objective in config.objectives]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_task = F.binary_cross_entropy_with_logits(
            logits, labels, reduction="none"
        ).mean(dim=0)
        return (self.weights * per_task).sum(), per_task


class Optimizers:
    """The dense and the sparse optimizer of a ranking model, used as one.

    Args:
        dense: optimizer of every parameter but the embedding tables.
        sparse: optimizer of the embedding tables, or None without tables.
    """

    def __init__(
        self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None
    ) -> None:
        self.dense, self.sparse = dense, sparse
        self.all = [dense] if sparse is None else [dense, sparse]

    def zero_grad(self) -> None:
        for optimizer in self.all:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.all:
            optimizer.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [optimizer.state_dict() for optimizer in self.all]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for optimizer, state in zip(self.all, states, strict=True):
            optimizer.load_state_dict(state)


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row instead of one per weight.

    For the rows a sparse gradient g touches: state_r += mean_j(g_rj ** 2), then
    row_r -= lr * g_r / (sqrt(state_r) + eps). A table of C rows keeps C floats of
    state instead of C X d (the row-wise variant of TorchRec/FBGEMM's fused
    embedding optimizers).
    """

    def __init__(self, params: Any, lr: float, eps: float = 1e-10) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "sum" not in state:
                    state["sum"] = torch.zeros(param.shape[0], device=param.device)
                grad = param.grad
                if not grad.is_sparse:
                    grad = grad.to_sparse(1)
                grad = grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                state["sum"].index_add_(0, rows, values.pow(2).mean(dim=1))
                scale = state["sum"][rows].sqrt().add_(group["eps"]).unsqueeze(1)
                param.index_add_(0, rows, values / scale, alpha=-group["lr"])


# Learning rate of each embedding optimizer when config.embedding_learning_rate is None.
EMBEDDING_LEARNING_RATES = {"adagrad": 0.05, "adam": 0.001, "rowwise_adagrad": 0.05}


def embedding_tables(module: nn.Module) -> list[nn.Parameter]:
    """The weight of every nn.Embedding and nn.EmbeddingBag of module."""
    return [
        child.weight
        for child in module.modules()
        if isinstance(child, (nn.Embedding, nn.EmbeddingBag))
    ]


def build_optimizer(
    model: nn.Module, loss_fn: nn.Module, config: ModelConfig
) -> Optimizers:
    """The dense optimizer for the dense parameters (the model's and the loss's), the
    embedding optimizer for the embedding tables.

    dense:  config.dense_optimizer, "adamw" (AdamW, weight decay
            config.weight_decay) or "adam" (Adam; its weight_decay is L2 in the
            gradient), at config.learning_rate.
    sparse: config.embedding_optimizer on the tables' sparse gradients (a step
            touches only the rows the batch used) at config.embedding_learning_rate
            (None: EMBEDDING_LEARNING_RATES of the optimizer): "adagrad" (every
            weight gets a step size of its own; rare ids keep larger steps),
            "adam" (torch.optim.SparseAdam) or "rowwise_adagrad" (RowWiseAdagrad).
    """
    tables = embedding_tables(model)
    table_ids = {id(table) for table in tables}
    dense = [
        parameter
        for parameter in [*model.parameters(), *loss_fn.parameters()]
        if id(parameter) not in table_ids
    ]
    dense_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    sparse_class = {
        "adagrad": torch.optim.Adagrad,
        "adam": torch.optim.SparseAdam,
        "rowwise_adagrad": RowWiseAdagrad,
    }
    embedding_lr = config.embedding_learning_rate
    if embedding_lr is None:
        embedding_lr = EMBEDDING_LEARNING_RATES[config.embedding_optimizer]
    return Optimizers(
        dense=dense_class[config.dense_optimizer](
            dense, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        sparse=(
            sparse_class[config.embedding_optimizer](tables, lr=embedding_lr)
            if tables
            else None
        ),
    )


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, config: ModelConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Learning-rate schedule of the dense optimizer (Optimizers.dense) over the
    planned run of total_steps optimizer steps (plan_steps: config.epochs epochs of
    steps_per_epoch steps, capped by the run's steps; early stopping may end it
    sooner).

    fit steps the schedule once after every optimizer step, and saves and restores it
    with the checkpoint. This default returns None: the learning rate stays at
    config.learning_rate, except for reductions on plateau (config.lr_plateau_factor).
    """
    return None


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Hook: runs after loss.backward() and before the optimizers step; techniques
    insert code here.
    """
    # SMT technique grad_clip 1.1.0: inserts into hook after_backward.
    dense = [
        p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse
    ]
    torch.nn.utils.clip_grad_norm_(dense, max_norm=config.grad_clip.max_norm)


def build_model(config: ModelConfig) -> RankingModel:
    """A freshly initialised RankingModel; the same config.seed gives the same weights."""
    torch.manual_seed(config.seed)
    return RankingModel(config)


class ModelWithLoss(nn.Module):
    """The model and its loss as one module, so that data-parallel training averages
    the gradients of both (a loss may have parameters, e.g. uncertainty weights).

    Call Args:
        batch: a Batch on the model's device.

    Returns:
        (total, per_task) of the loss on the batch.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(
        self,
        dense: torch.Tensor,
        sparse_values: dict[str, torch.Tensor],
        sparse_offsets: dict[str, torch.Tensor],
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_fn(self.model(dense, sparse_values, sparse_offsets), labels)


def regularization(model: nn.Module, batch: Batch, config: ModelConfig) -> torch.Tensor:
    """The L2 penalties added to the training loss (0 when both are 0).

    embedding: config.embedding_regularizer / 2 * the sum of squared norms of the
        embedding rows the batch looked up (every occurrence of an id), divided by
        the batch size; its gradient is sparse and reaches only those rows.
    dense: config.net_regularizer / 2 * the sum of squared dense weights (every
        parameter of two or more dimensions that is not an embedding table).
    """
    penalty = torch.zeros((), device=batch.labels.device)
    if config.embedding_regularizer > 0:
        for module in model.modules():
            if isinstance(module, EmbeddingTables):
                for name, table in module.tables.items():
                    rows = F.embedding(
                        batch.sparse_values[name], table.weight, sparse=True
                    )
                    scale = config.embedding_regularizer / (2 * batch.batch_size)
                    penalty = penalty + scale * rows.pow(2).sum()
    if config.net_regularizer > 0:
        table_ids = {id(table) for table in embedding_tables(model)}
        for parameter in model.parameters():
            if parameter.dim() >= 2 and id(parameter) not in table_ids:
                penalty = penalty + config.net_regularizer / 2 * parameter.pow(2).sum()
    return penalty


def train_step(
    step_module: nn.Module,
    model: nn.Module,
    optimizer: Optimizers,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batch: Batch,
    config: ModelConfig,
) -> torch.Tensor:
    """One optimizer step on batch: loss (plus regularization), backward, the
    after_backward hook, the optimizers' and the schedule's step.

    Returns:
        the training loss of the batch (without the penalties), detached.
    """
    loss, _ = step_module(
        batch.dense, batch.sparse_values, batch.sparse_offsets, batch.labels
    )
    optimizer.zero_grad()
    (loss + regularization(model, batch, config)).backward()
    after_backward(model, config)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def validation_scores(metrics: Metrics, config: ModelConfig) -> dict[str, float]:
    """valid_loss (metrics.weighted_logloss) and valid_auc (the objectives' AUC
    averaged with their weights) of a validation."""
    weights = sum(objective.weight for objective in config.objectives)
    auc = sum(o.weight * metrics[o.name]["auc"] for o in config.objectives) / weights
    return {"valid_loss": weighted_logloss(metrics, config), "valid_auc": auc}


def validation_loss(
    model: nn.Module, valid: Examples, config: ModelConfig, runtime: Runtime
) -> float:
    """The weighted logloss (metrics.weighted_logloss) of model on valid."""
    return weighted_logloss(evaluate(model, valid, config, runtime), config)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


class EarlyStopping:
    """Keeps the best weights by the monitored validation score and decides when to
    stop; reduces the learning rates on a plateau.

    The score is valid_loss (lower is better) when config.monitor is "logloss",
    valid_auc (higher is better) when it is "auc". Every validation that does not
    improve on the best multiplies every learning rate by config.lr_plateau_factor
    (1.0: never); config.early_stopping_patience of them in a row stop training.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.key = "valid_auc" if config.monitor == "auc" else "valid_loss"
        self.sign = -1.0 if config.monitor == "auc" else 1.0
        self.patience, self.factor = (
            config.early_stopping_patience,
            config.lr_plateau_factor,
        )
        self.best: dict[str, Any] | None = None
        self.bad_validations = 0

    @property
    def stopped(self) -> bool:
        return self.bad_validations >= self.patience

    def update(
        self,
        entry: dict[str, float],
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: Optimizers,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    ) -> bool:
        """Record a validation (a history entry); return whether it is the new best."""
        score = self.sign * entry[self.key]
        if self.best is None or score < self.best["score"]:
            self.best = {
                "score": score,
                "step": entry["step"],
                "model": _state(model),
                "loss": _state(loss_fn),
            }
            self.bad_validations = 0
            return True
        self.bad_validations += 1
        if self.factor < 1.0 and not self.stopped:
            reduce_learning_rates(optimizer, scheduler, self.factor)
        return False

    def restore_best(self, model: nn.Module, loss_fn: nn.Module) -> int | None:
        """Load the best weights into model and loss_fn; their step (None: no validation)."""
        if self.best is None:
            return None
        model.load_state_dict(self.best["model"])
        loss_fn.load_state_dict(self.best["loss"])
        return self.best["step"]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_validations = state["best"], state["bad_validations"]


def reduce_learning_rates(
    optimizer: Optimizers,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    factor: float,
) -> None:
    """Multiply the learning rate of every optimizer by factor; a schedule keeps
    shaping the reduced rate (its base rates are reduced too)."""
    for part in optimizer.all:
        for group in part.param_groups:
            group["lr"] *= factor
    if scheduler is not None:
        scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]


@dataclass
class FitResult:
    """What a training loop did, over every segment of a resumed run.

    Attributes:
        losses: training loss of every step, including steps before a resume.
        steps: optimizer steps done.
        epochs: epochs done (steps / steps_per_epoch, a fraction for a partial one).
        planned_steps: the run's plan (plan_steps), what schedules are sized by.
        steps_per_epoch: optimizer steps of one epoch (per rank).
        best_step: step whose weights the model holds at the end (the best
            monitored validation score; the last step without validation).
        stopped_early: whether early stopping ended training.
        history: one entry per validation: epoch, step, valid_loss, valid_auc,
            train_loss (mean since the previous validation), lr (dense, then
            embedding learning rate) and best (whether it improved).
        seconds: time spent in training steps (validation and checkpoints excluded),
            summed over every segment of a resumed run up to its last checkpoint.
        examples: training examples of those steps, summed over every rank.
        segment_seconds: the part of seconds spent by this call.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    epochs: float = 0.0
    planned_steps: int = 0
    steps_per_epoch: int = 0
    best_step: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    examples: int = 0
    segment_seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else math.nan


def steps_per_epoch(data: Examples, config: ModelConfig, runtime: Runtime) -> int:
    """Optimizer steps of one pass over a rank's shard of data (the same on every
    rank, so that ranks validate together)."""
    rows = math.ceil(data.num_rows / runtime.world_size)
    return max(1, math.ceil(rows / config.batch_size))


def plan_steps(epoch_steps: int, config: ModelConfig, steps: int | None) -> int:
    """The run's planned length: config.epochs epochs, capped by steps if given."""
    planned = config.epochs * epoch_steps
    return planned if steps is None else min(planned, steps)


def save_checkpoint(
    path: Path,
    config: ModelConfig,
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: Optimizers,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    stopping: EarlyStopping,
    result: FitResult,
    data_position: tuple[int, int],
    runtime: Runtime,
) -> None:
    """Write everything a resume needs to path (rank 0; every rank must call it, to
    gather the random states), atomically."""
    rng = [torch.get_rng_state()] * runtime.world_size
    if runtime.world_size > 1:
        torch.distributed.all_gather_object(rng, torch.get_rng_state())
    if not runtime.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "model_name": config.model_name,
            "model": model.state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng,
            "result": asdict(result),
            "epoch": data_position[0],
            "position": data_position[1],
            "stopping": stopping.state_dict(),
        },
        partial,
    )
    os.replace(partial, path)


def read_checkpoint(
    path: Path | None, config: ModelConfig, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """What save_checkpoint wrote at path, checked to be this model's.

    Raises:
        FileNotFoundError: there is no file at path.
        ValueError: in one line, for a truncated, random or foreign file or a checkpoint
            of another model.
    """
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint to resume from at {path}; run without resume"
        )
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
    except (
        Exception
    ) as error:  # truncated, random bytes, not a torch file: all unreadable
        raise ValueError(
            f"{path}: not a readable checkpoint ({_first_line(error)}); delete it to start"
            " afresh, or resume from another --run-dir"
        ) from None
    missing = (
        sorted(CHECKPOINT_KEYS - set(saved)) if isinstance(saved, dict) else ["all"]
    )
    if missing:
        raise ValueError(
            f"{path}: not a checkpoint written by this package (missing {', '.join(missing)});"
            " resume from a --run-dir that this model's training wrote"
        )
    if saved["model_name"] != config.model_name:
        raise ValueError(
            f"{path} is a checkpoint of model {saved['model_name']}, not"
            f" {config.model_name}; resume from a --run-dir of {config.model_name}"
        )
    return saved


def check_checkpoint(path: Path, config: ModelConfig, model: nn.Module) -> None:
    """Raise ValueError (one line) unless path holds a checkpoint of this model whose
    weights fit model: resume checks it before it prints or writes anything."""
    saved = read_checkpoint(path, config)
    try:
        model.load_state_dict(saved["model"])
        FitResult(**saved["result"])
    except _MISFIT as error:
        raise _misfit(path, error) from None


_MISFIT = (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError)


def _misfit(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"{path}: the checkpoint does not fit this model as configured now"
        f" ({_first_line(error)}); resume with the spec and --set options of the run"
        " that wrote it, or start afresh in another --run-dir"
    )


def load_checkpoint(
    path: Path | None,
    config: ModelConfig,
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: Optimizers,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    stopping: EarlyStopping,
    runtime: Runtime,
) -> tuple[FitResult, tuple[int, int]]:
    """Restore what save_checkpoint wrote; return the run's FitResult so far and the
    data position (data epoch, batches read in it)."""
    saved = read_checkpoint(path, config, runtime.device)
    try:
        model.load_state_dict(saved["model"])
        loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"][runtime.rank].cpu())
        stopping.load_state_dict(saved["stopping"])
        result = FitResult(**saved["result"])
    except _MISFIT as error:
        raise _misfit(path, error) from None
    result.segment_seconds = 0.0  # this call's own time starts now
    return result, (saved["epoch"], saved["position"])


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def _learning_rates(optimizer: Optimizers) -> list[float]:
    return [part.param_groups[0]["lr"] for part in optimizer.all]


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: Optimizers,
    data: pa.Table | Examples,
    config: ModelConfig,
    steps: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    valid: Examples | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime = Runtime(),
    report: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train model for config.epochs epochs (at most steps optimizer steps, if given)
    over reshuffled passes of data, with validation and early stopping.

    Args:
        data: training examples; each rank reads its own shard.
        steps: cap on the optimizer steps (None: config.epochs epochs).
        scheduler: learning-rate schedule stepped after every optimizer step
            (build_lr_schedule, sized by plan_steps); None keeps the optimizers'
            learning rates.
        valid: validation examples. With them, the model is validated once per
            epoch (every config.eval_every steps instead when that is above 0) and at
            the last step; EarlyStopping reduces the learning rates on a plateau,
            stops training, and the model ends with the best weights.
        run_dir: directory of checkpoint.pt, written at every validation (by rank 0).
        resume: continue from run_dir's checkpoint: weights, optimizers, schedule,
            data position, random state, validation history and training time.
        progress: show a progress bar (rank 0 only).
        runtime: this process's device and rank (distributed.start).
        report: called with every validation's history entry (rank 0 only).

    Returns:
        a FitResult.
    """
    if isinstance(data, pa.Table):
        data = Examples.from_table(data, config)
    if data.num_rows == 0:
        raise ValueError("cannot train on an empty table")
    checkpoint = Path(run_dir) / CHECKPOINT_FILE if run_dir is not None else None
    stopping = EarlyStopping(config)
    result, (epoch, position) = FitResult(), (0, 0)
    if resume:
        result, (epoch, position) = load_checkpoint(
            checkpoint, config, model, loss_fn, optimizer, scheduler, stopping, runtime
        )
    result.steps_per_epoch = steps_per_epoch(data, config, runtime)
    result.planned_steps = plan_steps(result.steps_per_epoch, config, steps)
    step_module = replicate(ModelWithLoss(model, loss_fn), runtime)
    bar = tqdm(
        total=result.planned_steps,
        initial=result.steps,
        desc=config.model_name,
        unit="step",
        disable=not (progress and runtime.is_main),
        dynamic_ncols=True,
    )

    def epoch_batches() -> Any:
        return data.batches(
            config,
            config.batch_size,
            shuffle=True,
            seed=config.seed + epoch,
            shard=runtime.shard,
        )

    def validation_due() -> bool:
        if valid is None:
            return False
        if result.steps == result.planned_steps:
            return True
        every = config.eval_every or result.steps_per_epoch
        return result.steps % every == 0

    batches = islice(epoch_batches(), position, None)
    losses: list[torch.Tensor] = []
    examples, seconds, since_validation = 0, 0.0, 0
    # Sparse gradients are built by torch itself: skip its invariant checks (and say
    # so, which also silences its warning about them).
    torch.sparse.check_sparse_tensor_invariants.disable()
    model.train()
    loss_fn.train()
    while result.steps < result.planned_steps and not result.stopped_early:
        started = time.perf_counter()
        batch: Batch | None = next(batches, None)
        if batch is None:  # this rank's shard is used up: the next data epoch
            epoch, position = epoch + 1, 0
            batches = epoch_batches()
            continue
        batch = batch.to(runtime.device)
        loss = train_step(step_module, model, optimizer, scheduler, batch, config)
        losses.append(loss)
        position += 1
        result.steps += 1
        since_validation += 1
        examples += batch.batch_size
        seconds += time.perf_counter() - started
        bar.update()
        if result.steps % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if not validation_due():
            continue
        metrics = evaluate(model, valid, config, runtime)
        model.train()
        entry: dict[str, Any] = {
            "epoch": round(result.steps / result.steps_per_epoch, 4),
            "step": result.steps,
            **validation_scores(metrics, config),
            "train_loss": torch.stack(losses[-since_validation:]).mean().item(),
            "lr": _learning_rates(optimizer),
        }
        since_validation = 0
        entry["best"] = stopping.update(entry, model, loss_fn, optimizer, scheduler)
        result.history.append(entry)
        result.stopped_early = stopping.stopped
        if report is not None and runtime.is_main:
            report(entry)
        if checkpoint is not None:
            result.losses += torch.stack(losses).tolist()
            losses = []
            _add_time(result, examples, seconds, runtime)
            examples, seconds = 0, 0.0
            save_checkpoint(
                checkpoint,
                config,
                model,
                loss_fn,
                optimizer,
                scheduler,
                stopping,
                result,
                (epoch, position),
                runtime,
            )
    bar.close()
    if losses:
        result.losses += torch.stack(losses).tolist()
    _add_time(result, examples, seconds, runtime)
    best_step = stopping.restore_best(model, loss_fn)
    result.best_step = result.steps if best_step is None else best_step
    result.epochs = round(result.steps / result.steps_per_epoch, 4)
    return result


def _add_time(
    result: FitResult, examples: int, seconds: float, runtime: Runtime
) -> None:
    """Add a stretch of training steps to the run's totals."""
    result.examples += int(total(examples, runtime))
    result.seconds += seconds
    result.segment_seconds += seconds


def evaluate(
    model: nn.Module,
    data: pa.Table | Examples,
    config: ModelConfig,
    runtime: Runtime = Runtime(),
) -> Metrics:
    """metrics.py's metrics of every objective on data (every rank's shard of it)."""
    if isinstance(data, pa.Table):
        data = Examples.from_table(data, config)
    batches = data.batches(config, config.batch_size, shard=runtime.shard)
    return objective_metrics(*predict(model, batches, runtime), config)


@dataclass
class RunData:
    """The three splits of a run."""

    train: Examples
    valid: Examples
    test: Examples

    @classmethod
    def synthetic(cls, config: ModelConfig) -> "RunData":
        """config.train_examples training and config.eval_examples validation and test
        examples: independent samples of the model's synthetic world (seeds
        config.seed, + 1 and + 2; the test split from the shifted distribution of
        config.synthetic.test_shift)."""
        return cls(
            train=Examples.synthetic(config, config.train_examples, config.seed),
            valid=Examples.synthetic(config, config.eval_examples, config.seed + 1),
            test=Examples.synthetic(
                config, config.eval_examples, config.seed + 2, shifted=True
            ),
        )


@dataclass
class RunResult:
    """A finished run: its fit, and metrics.py's metrics per split.

    Attributes:
        fit: what the training loop did.
        metrics: "valid" and "test" -> objective -> metric -> value.
        optimal: split -> the split's optimal metrics, for splits that know them.
        label_rates: objective -> rate of positive labels of the train split, the
            rate every output bias started from (None when resumed).
    """

    fit: FitResult
    metrics: dict[str, Metrics]
    optimal: dict[str, Any]
    label_rates: dict[str, float] | None = None

    def summary(
        self,
        config: ModelConfig,
        runtime: Runtime,
        overrides: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """What metrics.json holds (plain JSON: readable without this package)."""
        return {
            "model_name": config.model_name,
            "seed": config.seed,
            "steps": self.fit.steps,
            "epochs": self.fit.epochs,
            "steps_per_epoch": self.fit.steps_per_epoch,
            "planned_steps": self.fit.planned_steps,
            "best_step": self.fit.best_step,
            "stopped_early": self.fit.stopped_early,
            "monitor": config.monitor,
            "world_size": runtime.world_size,
            "device": str(runtime.device),
            "threads": torch.get_num_threads(),
            "train_seconds": self.fit.seconds,
            "segment_train_seconds": self.fit.segment_seconds,
            "train_examples_per_second": self.fit.examples_per_second,
            "final_train_loss": self.fit.losses[-1] if self.fit.losses else None,
            "train_label_rates": self.label_rates,
            "validation": self.fit.history,
            "metrics": self.metrics,
            "optimal": self.optimal,
            "overrides": overrides or {},
            "config": asdict(config),
        }


def init_dense_statistics(
    model: nn.Module,
    data: Examples,
    config: ModelConfig,
    runtime: Runtime = Runtime(),
    batches: int = 8,
) -> None:
    """Fit the dense preprocessor's statistics on the first train batches, when it has
    any (the template's DensePreprocessor.fit; a technique's replacement may not). Runs
    before init_output_bias, whose untrained logits depend on them.
    """
    preprocessor = getattr(getattr(model, "dense_arch", None), "preprocessor", None)
    fit = getattr(preprocessor, "fit", None)
    if fit is None or config.num_dense_features == 0:
        return
    dense = [
        batch.dense
        for batch in islice(data.batches(config, config.batch_size), batches)
    ]
    if dense:
        fit(torch.cat(dense).to(runtime.device))


def init_output_bias(
    model: nn.Module,
    label_rates: dict[str, float],
    data: Examples | None = None,
    config: ModelConfig | None = None,
    runtime: Runtime = Runtime(),
    batches: int = 4,
) -> None:
    """Start every objective's output bias (RankingModel.output_bias) so the untrained
    model predicts the label rates: the log-odds of each rate, or, given data, the bias
    at which the mean predicted probability over its first batches equals the rate
    (the towers' random initial logits shift the mean otherwise, whatever TaskTowers is).
    """
    bias = getattr(model, "output_bias", None)
    if bias is None:
        return
    rates = torch.tensor(list(label_rates.values()), dtype=torch.float64)
    rates = rates.clamp(1e-6, 1 - 1e-6)
    value = torch.log(rates / (1 - rates))
    if data is not None and config is not None:
        with torch.no_grad():
            bias.zero_()
            logits, _ = predict(
                model, islice(data.batches(config, config.batch_size), batches), runtime
            )
        value = bias_matching_rates(torch.from_numpy(logits).double(), rates)
    with torch.no_grad():
        bias.copy_(value.to(bias.dtype))


def bias_matching_rates(logits: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """The shift s per objective at which mean(sigmoid(logits + s)) equals rates.

    Args:
        logits: tensor of shape rows X T.
        rates: tensor of shape T, each in (0, 1).

    Returns:
        tensor of shape T, found by bisection (the mean probability grows with s).
    """
    low, high = torch.full_like(rates, -30.0), torch.full_like(rates, 30.0)
    for _ in range(60):
        middle = (low + high) / 2
        above = torch.sigmoid(logits + middle).mean(dim=0) > rates
        low, high = torch.where(above, low, middle), torch.where(above, middle, high)
    return (low + high) / 2


def calibrate_output_bias(
    model: nn.Module,
    data: Examples,
    config: ModelConfig,
    runtime: Runtime = Runtime(),
    min_count: int = 10,
) -> None:
    """Shift every objective's output bias so that the mean predicted probability on data
    (the validation split) equals its observed label rate (config.calibrate).

    For one objective that shift is the bias minimising its logloss on data: the
    logloss's derivative in the bias is mean(p) - rate. Objectives with fewer than
    min_count positives or negatives in data keep their bias (too few to measure a rate).
    """
    bias = getattr(model, "output_bias", None)
    if bias is None or not config.calibrate:
        return
    batches = data.batches(config, config.batch_size, shard=runtime.shard)
    logits, labels = predict(model, batches, runtime)
    positives = torch.from_numpy(labels).sum(dim=0)
    measurable = (positives >= min_count) & (len(labels) - positives >= min_count)
    rates = (positives / max(len(labels), 1)).clamp(1e-6, 1 - 1e-6)
    shift = bias_matching_rates(torch.from_numpy(logits).double(), rates)
    with torch.no_grad():
        bias.add_(torch.where(measurable, shift, 0.0).to(bias.dtype))


def train(
    config: ModelConfig,
    steps: int | None = None,
    model: nn.Module | None = None,
    data: RunData | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime = Runtime(),
    report: Callable[[dict[str, Any]], None] | None = None,
    overrides: dict[str, str] | None = None,
) -> RunResult:
    """Train for config.epochs epochs (at most steps steps) with validation, learning
    rate reduction on plateau and early stopping, then evaluate the best weights on
    the validation and test splits.

    Args:
        config: the model's ModelConfig.
        steps: cap on the optimizer steps of config.batch_size examples (per rank).
        model: the model to train in place; a new one (build_model) if None.
        data: the splits; RunData.synthetic(config) if None.
        run_dir: directory of checkpoint.pt and, at the end, metrics.json and
            predictions.npz.
        resume: continue from run_dir's checkpoint (see fit).
        progress: show a progress bar.
        runtime: this process's device and rank (distributed.start).
        report: called with every validation's history entry (see fit).
        overrides: the hyperparameters changed for this run (`--set`), recorded in
            metrics.json.

    Returns:
        a RunResult; the model holds the best weights.
    """
    if model is None:
        model = build_model(config)
    if data is None:
        data = RunData.synthetic(config)
    label_rates = None
    if not resume:
        label_rates = data.train.label_rates(config)
        model.to(runtime.device)
        init_dense_statistics(model, data.train, config, runtime)
        init_output_bias(model, label_rates, data.train, config, runtime)
    model.to(runtime.device)
    torch.manual_seed(config.seed + runtime.rank)
    loss_fn = MultiTaskLoss(config).to(runtime.device)
    optimizer = build_optimizer(model, loss_fn, config)
    epoch_steps = steps_per_epoch(data.train, config, runtime)
    planned = plan_steps(epoch_steps, config, steps)
    scheduler = build_lr_schedule(optimizer.dense, config, planned)
    fitted = fit(
        model,
        loss_fn,
        optimizer,
        data.train,
        config,
        steps,
        scheduler,
        valid=data.valid,
        run_dir=run_dir,
        resume=resume,
        progress=progress,
        runtime=runtime,
        report=report,
    )
    calibrate_output_bias(model, data.valid, config, runtime)
    splits = {"valid": data.valid, "test": data.test}
    outputs = {  # (logits, labels) per split: the metrics, and predictions.npz
        name: predict(
            model,
            examples.batches(config, config.batch_size, shard=runtime.shard),
            runtime,
        )
        for name, examples in splits.items()
    }
    result = RunResult(
        fit=fitted,
        metrics={name: objective_metrics(*outputs[name], config) for name in splits},
        optimal={
            name: examples.optimal
            for name, examples in splits.items()
            if examples.optimal is not None
        },
        label_rates=label_rates,
    )
    if run_dir is not None and runtime.is_main:
        path = Path(run_dir) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = result.summary(config, runtime, overrides)
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        np.savez_compressed(  # per-example results: smt qualify's paired bootstrap reads them
            Path(run_dir) / PREDICTIONS_FILE,
            objectives=np.array(config.objective_names),
            **{f"{name}_logits": logits for name, (logits, _) in outputs.items()},
            **{
                f"{name}_labels": labels.astype(np.int8)
                for name, (_, labels) in outputs.items()
            },
        )
    return result
