"""The training loop every generated model runs, in one process or sharded under torchrun.

A run (train) builds the model from its package's ModelParts, shards it with TorchRec's
DistributedModelParallel (sparse.py: tables placed by the planner, embedding optimizer fused
into backward, everything else replicated), starts every output bias at the train split's
label rate, trains for at most config.epochs epochs, validates once per epoch (or every
config.eval_every steps), reduces the learning rates when the monitored validation score
(config.monitor: weighted logloss or AUC) does not improve and stops after
config.early_stopping_patience such validations in a row, restores the best weights, shifts
each output bias so that the mean prediction on the validation split matches its label rate
(config.calibrate) and reports metrics.py's metrics on the validation and test splits. With a
run directory it checkpoints at every validation (checkpoint.py; resume continues from it)
and writes metrics.json (plain JSON) at the end. Deterministic on CPU: weights, data order
and dropout all derive from config.seed, and N processes see the same global batches as one
(batch.rank_rows).

Shapes: B = batch size, T = number of objectives.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.api import CheckpointException
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm import tqdm

from . import checkpoint as checkpoints
from .batch import Batch
from .config import ModelConfigBase
from .data import Examples
from .distributed import Runtime, gather_values, mean_over_ranks, total
from .label_shift import LabelShift, label_shifts
from .metrics import Metrics, objective_metrics, predict, weighted_logloss
from .parts import LRSchedule, ModelParts, Optimizers
from .sparse import (
    Sharding,
    TablePlacement,
    apply_embedding_optimizer,
    init_tables,
    local_table_bytes,
    plan_sharding,
    placements,
    shard,
    table_modules,
    table_parameter_names,
    unsharded_state_dict,
    why_replicated,
)
from .unknown_ids import known_ids, set_known_ids, unknown_summary

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"  # per split: logits and labels, rows X T (written with metrics.json)


class ModelWithLoss(nn.Module):
    """The model and its loss as one module, the one DistributedModelParallel wraps, so
    that the gradients of both are averaged over ranks (a loss may have parameters, e.g.
    uncertainty weights).

    Call Args:
        dense: tensor of shape B X N.
        sparse: KeyedJaggedTensor of the batch's ids.
        labels: tensor of shape B X T.

    Returns:
        (total, per_task) of the loss on the batch.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, dense: torch.Tensor, sparse: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_fn(self.model(dense, sparse), labels)


@dataclass
class Prepared:
    """A model ready to train: sharded, initialised, with its optimizers.

    Attributes:
        model: the package's RankingModel (its tables sharded in place); call it to
            predict (every rank together).
        loss_fn: the package's MultiTaskLoss.
        step_module: DistributedModelParallel over ModelWithLoss(model, loss_fn).
        optimizer: the dense, fused and replicated-table optimizers.
        tables: where every table went (the plan).
        net_parameters: dense weights of two or more dimensions (net_regularizer).
        dense_tables: the tables held whole on every rank (data_parallel: every table with
            the "dense" embedding optimizer, and tables FBGEMM cannot hold), whose gradient
            is dense; the embedding regularizer penalizes them whole (regularization).
        pooled: the pooled embeddings of the fused tables in the batch being trained on
            (B X d_i each), kept for the embedding regularizer (regularization).
    """

    model: nn.Module
    loss_fn: nn.Module
    step_module: nn.Module
    optimizer: Optimizers
    tables: list[TablePlacement]
    net_parameters: list[nn.Parameter]
    dense_tables: list[nn.Parameter]
    pooled: list[torch.Tensor] = field(default_factory=list)


def prepare(
    parts: ModelParts,
    config: ModelConfigBase,
    runtime: Runtime,
    sharding: Sharding = Sharding(),
    model: nn.Module | None = None,
) -> Prepared:
    """Build (or take) the model and loss, attach the embedding optimizer, shard with the
    planner's plan and initialise the tables (init_tables; a given model keeps its tables'
    weights), then build the dense optimizers.

    Raises:
        ValueError: in one line, when no plan fits the sharding options.
    """
    torch.manual_seed(config.seed)  # dense weights: the same on every rank
    given_tables = None
    if model is None:
        model = parts.model(config, "meta")
    else:
        given_tables = {name: value.detach().clone() for name, value in model.state_dict().items()}
    loss_fn = parts.loss(config).to(runtime.device)
    _move_allocated(model, runtime.device)
    embedding = parts.build_embedding_optimizer(config)
    apply_embedding_optimizer(model, embedding)
    wrapped = ModelWithLoss(model, loss_fn)
    plan = plan_sharding(wrapped, config, sharding, embedding, runtime.world_size, runtime.device)
    step_module = shard(wrapped, plan, runtime.device, runtime.world_size)
    if given_tables is None:
        init_tables(model, config, config.seed)
    else:
        load_unsharded(model, given_tables)
    table_names = {f"model.{name}" for name in table_parameter_names(model)}
    free = dict(in_backward_optimizer_filter(step_module.named_parameters()))  # not fused
    replicated_tables = [parameter for name, parameter in free.items() if name in table_names]
    dense = [parameter for name, parameter in free.items() if name not in table_names]
    groups: list[dict[str, Any]] = [{"params": dense}]
    if not embedding.fused and replicated_tables:
        groups.append({"params": replicated_tables})
    fused = getattr(step_module, "fused_optimizer", None)
    optimizer = Optimizers(
        dense=parts.build_optimizer(groups, config),
        fused=fused if fused is not None and fused.params else None,
        replicated=embedding.build(replicated_tables) if embedding.fused and replicated_tables else None,
    )
    model_names = {id(parameter) for parameter in model.parameters()}
    tables = placements(plan, config, why_replicated(config, sharding, embedding), runtime.world_size)
    # Fused tables get no gradient outside their kernel: their penalty goes through the pooled
    # embeddings. Replicated (data_parallel) tables have a dense gradient: penalized whole.
    fused_features = [table.sharding_type != "data_parallel" for table in tables]
    pooled: list[torch.Tensor] = []
    if embedding.fused and config.embedding_regularizer > 0 and any(fused_features):

        def keep_fused(module: nn.Module, _inputs: Any, output: list[torch.Tensor]) -> None:
            if module.training:
                pooled.extend(value for value, fused in zip(output, fused_features) if fused)

        for holder in table_modules(model):
            holder.register_forward_hook(keep_fused)
    return Prepared(
        model=model,
        loss_fn=loss_fn,
        step_module=step_module,
        optimizer=optimizer,
        tables=tables,
        net_parameters=[p for p in dense if p.dim() >= 2 and id(p) in model_names],
        dense_tables=replicated_tables,
        pooled=pooled,
    )


def _move_allocated(module: nn.Module, device: torch.device) -> None:
    """Move module's allocated tensors to device; tables on the meta device stay there for
    DistributedModelParallel to allocate (Module.to cannot move a meta tensor)."""
    if device.type == "cpu":
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        if not tensor.is_meta:
            tensor.data = tensor.data.to(device)


@torch.no_grad()
def load_unsharded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole (unsharded) state dict into model, whose tables may be sharded: each
    rank copies the rows and columns of its own shards."""
    for name, target in model.state_dict().items():
        source = state[name]
        if isinstance(target, ShardedTensor):
            for piece in target.local_shards():
                (row, column), (rows, columns) = piece.metadata.shard_offsets, piece.metadata.shard_sizes
                piece.tensor.copy_(source[row : row + rows, column : column + columns])
        else:
            target.copy_(source)


def regularization(prepared: Prepared, config: ModelConfigBase, device: torch.device) -> torch.Tensor:
    """The L2 penalties added to the training loss (0 when both are 0).

    dense: config.net_regularizer / 2 * the sum of squared dense weights (every dense
        parameter of two or more dimensions).
    embedding: config.embedding_regularizer / 2 * the sum of squared weights of every table
        held data_parallel (every table with the "dense" embedding optimizer, and tables
        FBGEMM cannot hold), as FuxiCTR regularizes embeddings and as template 0.6.0's
        replicated Adagrad did through its weight decay; for fused tables,
        config.embedding_regularizer / 2 * the squared norm of every pooled embedding of the
        batch, divided by the batch size: for a single-valued feature the row it looked up,
        every time it is looked up (FBGEMM's fused CPU kernels ignore weight decay, so the
        penalty goes through the loss, and its gradient reaches only those rows); for a
        multi-valued feature its bag's mean.
    """
    penalty = torch.zeros((), device=device)
    if config.net_regularizer > 0:
        for parameter in prepared.net_parameters:
            penalty = penalty + config.net_regularizer / 2 * parameter.pow(2).sum()
    if config.embedding_regularizer > 0:
        for table in prepared.dense_tables:
            penalty = penalty + config.embedding_regularizer / 2 * table.pow(2).sum()
        for pooled in prepared.pooled:
            penalty = penalty + config.embedding_regularizer / (2 * pooled.shape[0]) * pooled.pow(2).sum()
    return penalty


def train_step(
    prepared: Prepared,
    parts: ModelParts,
    scheduler: LRSchedule | None,
    batch: Batch,
    config: ModelConfigBase,
) -> torch.Tensor:
    """One optimizer step on batch: loss (plus regularization), backward (which updates
    the fused tables), the after_backward hook, the optimizers' and the schedule's step.

    Returns:
        the training loss of the batch (without the penalties), detached.
    """
    # zero_grad first: it also hands the fused optimizer's current learning rate to the
    # FBGEMM kernels, which read it when the forward pass builds the backward.
    prepared.optimizer.zero_grad()
    loss, _ = prepared.step_module(batch.dense, batch.sparse, batch.labels)
    penalty = regularization(prepared, config, batch.labels.device)
    prepared.pooled.clear()
    (loss + penalty).backward()
    parts.after_backward(prepared.model, config)
    prepared.optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def validation_scores(metrics: Metrics, config: ModelConfigBase) -> dict[str, float]:
    """valid_loss (metrics.weighted_logloss) and valid_auc (the objectives' AUC
    averaged with their weights) of a validation."""
    weights = sum(objective.weight for objective in config.objectives)
    auc = sum(o.weight * metrics[o.name]["auc"] for o in config.objectives) / weights
    return {"valid_loss": weighted_logloss(metrics, config), "valid_auc": auc}


class Snapshot:
    """A copy of a module's weights, sharded tables included (each rank copies its own
    shards), that can be put back."""

    def __init__(self, module: nn.Module) -> None:
        self.values: dict[str, Any] = {}
        for name, value in module.state_dict().items():
            if isinstance(value, ShardedTensor):
                self.values[name] = [piece.tensor.detach().clone() for piece in value.local_shards()]
            else:
                self.values[name] = value.detach().clone()

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            saved = self.values[name]
            if isinstance(value, ShardedTensor):
                for piece, copy in zip(value.local_shards(), saved, strict=True):
                    piece.tensor.copy_(copy)
            else:
                value.copy_(saved)


class EarlyStopping:
    """Keeps the best weights by the monitored validation score and decides when to
    stop; reduces the learning rates on a plateau.

    The score is valid_loss (lower is better) when config.monitor is "logloss",
    valid_auc (higher is better) when it is "auc". Every validation that does not
    improve on the best multiplies every learning rate by config.lr_plateau_factor
    (1.0: never); config.early_stopping_patience of them in a row stop training.
    """

    def __init__(self, config: ModelConfigBase) -> None:
        self.key = "valid_auc" if config.monitor == "auc" else "valid_loss"
        self.sign = -1.0 if config.monitor == "auc" else 1.0
        self.patience, self.factor = config.early_stopping_patience, config.lr_plateau_factor
        self.score: float | None = None
        self.step: int | None = None
        self.weights: tuple[Snapshot, Snapshot] | None = None
        self.bad_validations = 0

    @property
    def stopped(self) -> bool:
        return self.bad_validations >= self.patience

    def update(
        self, entry: dict[str, float], prepared: Prepared, scheduler: LRSchedule | None
    ) -> bool:
        """Record a validation (a history entry); return whether it is the new best."""
        score = self.sign * entry[self.key]
        if self.score is None or score < self.score:
            self.score, self.step = score, int(entry["step"])
            self.weights = (Snapshot(prepared.model), Snapshot(prepared.loss_fn))
            self.bad_validations = 0
            return True
        self.bad_validations += 1
        if self.factor < 1.0 and not self.stopped:
            reduce_learning_rates(prepared.optimizer, scheduler, self.factor)
        return False

    def restore_best(self, prepared: Prepared) -> int | None:
        """Load the best weights into the model and loss; their step (None: no validation)."""
        if self.weights is None:
            return None
        self.weights[0].restore(prepared.model)
        self.weights[1].restore(prepared.loss_fn)
        return self.step

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "step": self.step, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any], prepared: Prepared) -> None:
        """Restore the counters; the model holds the best weights (read_tensors of the
        best folder) when this is called with a best score."""
        self.score, self.step, self.bad_validations = state["score"], state["step"], state["bad_validations"]
        if self.score is not None:
            self.weights = (Snapshot(prepared.model), Snapshot(prepared.loss_fn))


def reduce_learning_rates(optimizer: Optimizers, scheduler: LRSchedule | None, factor: float) -> None:
    """Multiply the learning rate of every optimizer by factor; a schedule keeps
    shaping the reduced rate (its base rates are reduced too)."""
    optimizer.scale_learning_rates(factor)
    if scheduler is not None:
        scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]


@dataclass
class FitResult:
    """What a training loop did, over every segment of a resumed run.

    Attributes:
        losses: training loss of every step (the mean over ranks: the loss of the
            global batch), including steps before a resume.
        steps: optimizer steps done.
        epochs: epochs done (steps / steps_per_epoch, a fraction for a partial one).
        planned_steps: the run's plan (plan_steps), what schedules are sized by.
        steps_per_epoch: optimizer steps of one epoch (the same on every rank).
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


def steps_per_epoch(data: Examples, config: ModelConfigBase, runtime: Runtime) -> int:
    """Optimizer steps of one pass over data: its global batches of world_size X
    batch_size examples (a last one with fewer rows than ranks is left out)."""
    global_size = config.batch_size * runtime.world_size
    full, rest = divmod(data.num_rows, global_size)
    return max(1, full + (rest >= runtime.world_size))


def plan_steps(epoch_steps: int, config: ModelConfigBase, steps: int | None) -> int:
    """The run's planned length: config.epochs epochs, capped by steps if given."""
    planned = config.epochs * epoch_steps
    return planned if steps is None else min(planned, steps)


def _rng_states(runtime: Runtime) -> list[torch.Tensor]:
    states = [torch.get_rng_state()] * runtime.world_size
    if runtime.world_size > 1:
        torch.distributed.all_gather_object(states, torch.get_rng_state())
    return states


def save_checkpoint(
    run_dir: Path,
    config: ModelConfigBase,
    prepared: Prepared,
    scheduler: LRSchedule | None,
    stopping: EarlyStopping,
    result: FitResult,
    data_position: tuple[int, int],
    runtime: Runtime,
    best_folder: str,
    label_rates: dict[str, float] | None,
) -> None:
    """Write the run's checkpoint (checkpoint.py); every rank must call it."""
    folder = f"checkpoint-{result.steps}"
    checkpoints.write_tensors(
        run_dir / folder, checkpoints.module_tensors(prepared.model, prepared.loss_fn, prepared.optimizer.fused)
    )
    rng = _rng_states(runtime)
    checkpoints.save_state(
        run_dir,
        {
            "model_name": config.model_name,
            "world_size": runtime.world_size,
            "tensors": folder,
            "best_tensors": best_folder,
            "optimizer": {
                "dense": prepared.optimizer.dense.state_dict(),
                "replicated": (
                    prepared.optimizer.replicated.state_dict() if prepared.optimizer.replicated else None
                ),
            },
            "learning_rates": prepared.optimizer.group_learning_rates(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng,
            "result": asdict(result),
            "epoch": data_position[0],
            "position": data_position[1],
            "stopping": stopping.state_dict(),
            "label_rates": label_rates,
        },
    )


_MISFIT = (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError)


def _misfit(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"{path}: the checkpoint does not fit this model as configured now"
        f" ({checkpoints.first_line(error)}); resume with the spec and --set options of the run"
        " that wrote it, or start afresh in another --run-dir"
    )


def load_checkpoint(
    run_dir: Path,
    config: ModelConfigBase,
    prepared: Prepared,
    scheduler: LRSchedule | None,
    stopping: EarlyStopping,
    runtime: Runtime,
) -> tuple[FitResult, tuple[int, int], dict[str, Any]]:
    """Restore what save_checkpoint wrote; return the run's FitResult so far, the data
    position (data epoch, batches read in it) and the saved state."""
    path = run_dir / checkpoints.CHECKPOINT_FILE
    saved = checkpoints.read_state(path, config.model_name, runtime.world_size)
    fused = prepared.optimizer.fused
    try:
        if saved["best_tensors"]:
            state = checkpoints.module_tensors(prepared.model, prepared.loss_fn, None)
            checkpoints.read_tensors(run_dir / saved["best_tensors"], state)
            checkpoints.restore_module_tensors(prepared.model, prepared.loss_fn, None, state)
        stopping.load_state_dict(saved["stopping"], prepared)
        state = checkpoints.module_tensors(prepared.model, prepared.loss_fn, fused)
        checkpoints.read_tensors(run_dir / saved["tensors"], state)
        checkpoints.restore_module_tensors(prepared.model, prepared.loss_fn, fused, state)
        prepared.optimizer.dense.load_state_dict(saved["optimizer"]["dense"])
        if prepared.optimizer.replicated is not None:
            prepared.optimizer.replicated.load_state_dict(saved["optimizer"]["replicated"])
        prepared.optimizer.set_group_learning_rates(saved["learning_rates"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"][runtime.rank].cpu())
        result = FitResult(**saved["result"])
    except _MISFIT as error:
        raise _misfit(path, error) from None
    except CheckpointException as error:  # dcp's wrapper of each rank's error, a BaseException
        raise _misfit(path, next(iter(error.failures.values()))[0]) from None
    result.segment_seconds = 0.0  # this call's own time starts now
    return result, (saved["epoch"], saved["position"]), saved


def fit(
    prepared: Prepared,
    parts: ModelParts,
    data: Examples,
    config: ModelConfigBase,
    steps: int | None = None,
    scheduler: LRSchedule | None = None,
    *,
    valid: Examples | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime = Runtime(),
    report: Callable[[dict[str, Any]], None] | None = None,
    label_rates: dict[str, float] | None = None,
) -> FitResult:
    """Train for config.epochs epochs (at most steps optimizer steps, if given) over
    reshuffled passes of data, with validation and early stopping.

    Args:
        data: training examples; each rank reads its part of every global batch.
        steps: cap on the optimizer steps (None: config.epochs epochs).
        scheduler: learning-rate schedule stepped after every optimizer step
            (build_lr_schedule, sized by plan_steps); None keeps the learning rates.
        valid: validation examples. With them, the model is validated once per
            epoch (every config.eval_every steps instead when that is above 0) and at
            the last step; EarlyStopping reduces the learning rates on a plateau,
            stops training, and the model ends with the best weights.
        run_dir: where checkpoints go, written at every validation.
        resume: continue from run_dir's checkpoint: weights, optimizers, schedule,
            data position, random state, validation history and training time.
        progress: show a progress bar (rank 0 only).
        runtime: this process's device and rank (distributed.start).
        report: called with every validation's history entry (rank 0 only).
        label_rates: the train split's label rates, kept in checkpoints for metrics.json.

    Returns:
        a FitResult.
    """
    if data.num_rows == 0:
        raise ValueError("cannot train on an empty split")
    run_path = Path(run_dir) if run_dir is not None else None
    stopping = EarlyStopping(config)
    result, (epoch, position) = FitResult(), (0, 0)
    best_folder = ""
    if resume:
        assert run_path is not None
        result, (epoch, position), saved = load_checkpoint(run_path, config, prepared, scheduler, stopping, runtime)
        best_folder = saved["best_tensors"]
    result.steps_per_epoch = steps_per_epoch(data, config, runtime)
    result.planned_steps = plan_steps(result.steps_per_epoch, config, steps)
    bar = tqdm(
        total=result.planned_steps,
        initial=result.steps,
        desc=config.model_name,
        unit="step",
        disable=not (progress and runtime.is_main),
        dynamic_ncols=True,
    )

    def epoch_batches() -> Any:
        return data.batches(config, config.batch_size, shuffle=True, seed=config.seed + epoch, shard=runtime.shard)

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
    prepared.step_module.train()
    while result.steps < result.planned_steps and not result.stopped_early:
        started = time.perf_counter()
        batch: Batch | None = next(batches, None)
        if batch is None:  # the epoch's global batches are used up: the next data epoch
            epoch, position = epoch + 1, 0
            batches = epoch_batches()
            continue
        batch = batch.to(runtime.device)
        loss = train_step(prepared, parts, scheduler, batch, config)
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
        metrics = evaluate(prepared.model, valid, config, runtime)
        prepared.step_module.train()
        entry: dict[str, Any] = {
            "epoch": round(result.steps / result.steps_per_epoch, 4),
            "step": result.steps,
            **validation_scores(metrics, config),
            "train_loss": mean_over_ranks(torch.stack(losses[-since_validation:]), runtime).mean().item(),
            "lr": prepared.optimizer.learning_rates(),
        }
        since_validation = 0
        entry["best"] = stopping.update(entry, prepared, scheduler)
        result.history.append(entry)
        result.stopped_early = stopping.stopped
        if report is not None and runtime.is_main:
            report(entry)
        if run_path is not None:
            if entry["best"]:
                best_folder = f"best-{result.steps}"
                checkpoints.write_tensors(
                    run_path / best_folder, checkpoints.module_tensors(prepared.model, prepared.loss_fn, None)
                )
            result.losses += mean_over_ranks(torch.stack(losses), runtime).tolist()
            losses = []
            _add_time(result, examples, seconds, runtime)
            examples, seconds = 0, 0.0
            save_checkpoint(
                run_path,
                config,
                prepared,
                scheduler,
                stopping,
                result,
                (epoch, position),
                runtime,
                best_folder,
                label_rates,
            )
    bar.close()
    if losses:
        result.losses += mean_over_ranks(torch.stack(losses), runtime).tolist()
    _add_time(result, examples, seconds, runtime)
    best_step = stopping.restore_best(prepared)
    result.best_step = result.steps if best_step is None else best_step
    result.epochs = round(result.steps / result.steps_per_epoch, 4)
    return result


def _add_time(result: FitResult, examples: int, seconds: float, runtime: Runtime) -> None:
    """Add a stretch of training steps to the run's totals."""
    result.examples += int(total(examples, runtime))
    result.seconds += seconds
    result.segment_seconds += seconds


def evaluate(
    model: nn.Module,
    data: pa.Table | Examples,
    config: ModelConfigBase,
    runtime: Runtime = Runtime(),
) -> Metrics:
    """metrics.py's metrics of every objective on data (every rank's part of it)."""
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
    def synthetic(cls, config: ModelConfigBase) -> "RunData":
        """config.train_examples training and config.eval_examples validation and test
        examples: independent samples of the model's synthetic world (seeds
        config.seed, + 1 and + 2; the test split from the shifted distribution of
        config.synthetic.test_shift)."""
        return cls(*(cls.synthetic_split(config, split) for split in ("train", "valid", "test")))

    @staticmethod
    def synthetic_split(config: ModelConfigBase, split: str) -> Examples:
        """One split ("train", "valid" or "test") of RunData.synthetic(config), drawn alone."""
        index = ("train", "valid", "test").index(split)
        rows = config.train_examples if split == "train" else config.eval_examples
        return Examples.synthetic(config, rows, config.seed + index, shifted=split == "test")


@dataclass
class RunResult:
    """A finished run: its fit, and metrics.py's metrics per split.

    Attributes:
        fit: what the training loop did.
        metrics: "valid" and "test" -> objective -> metric -> value.
        optimal: split -> the split's optimal metrics, for splits that know them.
        label_rates: objective -> rate of positive labels of the train split, the
            rate every output bias started from.
        tables: where every embedding table went (the sharding plan).
        prepared: the trained model, sharded, with its optimizers.
        split_label_rates: split ("train", "valid", "test") -> objective -> label rate.
        label_shifts: the label rates that moved between splits (label_shift.py).
        unknown_ids: what reads the unknown rows (unknown_ids.unknown_summary).
        best_state: on rank 0, the model's state dict with every table whole: the best
            weights after calibration, what best.pt holds (None on other ranks).
    """

    fit: FitResult
    metrics: dict[str, Metrics]
    optimal: dict[str, Any]
    label_rates: dict[str, float] | None = None
    tables: list[TablePlacement] = field(default_factory=list)
    prepared: Prepared | None = None
    rank_table_bytes: list[int] = field(default_factory=list)
    split_label_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    label_shifts: list[LabelShift] = field(default_factory=list)
    unknown_ids: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def model(self) -> nn.Module:
        """The trained RankingModel (best weights, calibrated)."""
        assert self.prepared is not None
        return self.prepared.model

    def summary(
        self,
        config: ModelConfigBase,
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
            "label_rates": self.split_label_rates,
            "label_shifts": [shift.as_json() for shift in self.label_shifts],
            "unknown_ids": self.unknown_ids,
            "sharding": {
                "tables": [asdict(table) for table in self.tables],
                "rank_table_bytes": self.rank_table_bytes,
            },
            "validation": self.fit.history,
            "metrics": self.metrics,
            "optimal": self.optimal,
            "overrides": overrides or {},
            "config": asdict(config),
        }


def init_dense_statistics(
    model: nn.Module,
    data: Examples,
    config: ModelConfigBase,
    runtime: Runtime = Runtime(),
    batches: int = 8,
) -> None:
    """Fit the dense preprocessor's statistics on the first train batches, when it has
    any (the template's DensePreprocessor.fit; a technique's replacement may not). Runs
    before init_output_bias, whose untrained logits depend on them.
    """
    preprocessor = getattr(getattr(model, "dense_arch", None), "preprocessor", None)
    fit_statistics = getattr(preprocessor, "fit", None)
    if fit_statistics is None or config.num_dense_features == 0:
        return
    # Global batches: N processes fit the same statistics as one.
    first = islice(data.batches(config, config.batch_size * runtime.world_size), batches)
    dense = [batch.dense for batch in first]
    if dense:
        fit_statistics(torch.cat(dense).to(runtime.device))


def init_output_bias(
    model: nn.Module,
    label_rates: dict[str, float],
    data: Examples | None = None,
    config: ModelConfigBase | None = None,
    runtime: Runtime = Runtime(),
    batches: int = 4,
) -> None:
    """Start every objective's output bias (RankingModel.output_bias) so the untrained
    model predicts the label rates: the log-odds of each rate, or, given data, the bias
    at which the mean predicted probability over its first batches equals the rate
    (the towers' random initial logits shift the mean otherwise, whatever TaskTowers is).
    Every rank must call it (the prediction is sharded).
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
        first = islice(data.batches(config, config.batch_size, shard=runtime.shard), batches)
        logits, _ = predict(model, first, runtime)
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
    config: ModelConfigBase,
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


def build_model(parts: ModelParts, config: ModelConfigBase | None = None) -> nn.Module:
    """A freshly initialised, unsharded RankingModel of parts: the same config.seed
    gives the same weights as a training run starts from."""
    config = config or parts.config()
    # A run builds its model with tables on the meta device (prepare), which draw no random
    # numbers; tables built here would, and shift every dense weight drawn after them.
    torch.manual_seed(config.seed)
    start = parts.model(config, "meta").state_dict()
    model = parts.model(config)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not start[name].is_meta:
                value.copy_(start[name])
    init_tables(model, config, config.seed)
    return model


def train(
    parts: ModelParts,
    config: ModelConfigBase | None = None,
    steps: int | None = None,
    *,
    model: nn.Module | None = None,
    data: RunData | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime | None = None,
    sharding: Sharding = Sharding(),
    report: Callable[[dict[str, Any]], None] | None = None,
    overrides: dict[str, str] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
) -> RunResult:
    """Train for config.epochs epochs (at most steps steps) with validation, learning
    rate reduction on plateau and early stopping, then evaluate the best weights on
    the validation and test splits.

    Args:
        parts: the model package's ModelParts (its train.PARTS).
        config: the model's ModelConfig; parts.config() if None.
        steps: cap on the optimizer steps of config.batch_size examples (per rank).
        model: an unsharded model whose weights to start from; a new one if None.
        data: the splits; RunData.synthetic(config) if None.
        run_dir: directory of checkpoints and, at the end, metrics.json and
            predictions.npz (each split's logits and labels).
        resume: continue from run_dir's checkpoint (see fit).
        progress: show a progress bar.
        runtime: this process's device and rank (distributed.start() if None).
        sharding: how the tables are placed (sparse.Sharding).
        report: called with every validation's history entry (see fit).
        overrides: the hyperparameters changed for this run (`--set`), recorded in
            metrics.json.
        on_prepared: called on every rank with the sharded model before training
            (the command line prints the plan and what each rank holds).

    Returns:
        a RunResult; its model holds the best weights.
    """
    from .distributed import start  # noqa: PLC0415 - only when the caller gave no runtime

    config = config or parts.config()
    runtime = runtime or start("cpu")
    if data is None:
        data = RunData.synthetic(config)
    for split in ("train", "valid", "test"):  # every process reads a part of every split
        rows = getattr(data, split).num_rows
        if rows < runtime.world_size:
            raise ValueError(f"the {split} split holds {rows} example(s); a run needs at least {runtime.world_size} (one per process)")
    prepared = prepare(parts, config, runtime, sharding, model)
    if on_prepared is not None:
        on_prepared(prepared)
    # Ids rarer than config.min_count in the train split read the unknown row from the first
    # step on (a resumed run restores the same flags with the model's weights).
    id_counts = {"train": data.train.id_counts(config), "valid": data.valid.id_counts(config), "test": data.test.id_counts(config)}
    known = known_ids(id_counts["train"], config)
    set_known_ids(prepared.model, known, config)
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run directory of the run to continue")
        saved = checkpoints.read_state(Path(run_dir) / checkpoints.CHECKPOINT_FILE, config.model_name, runtime.world_size)
        label_rates = saved.get("label_rates")
    else:
        label_rates = data.train.label_rates(config)
        init_dense_statistics(prepared.model, data.train, config, runtime)
        init_output_bias(prepared.model, label_rates, data.train, config, runtime)
    torch.manual_seed(config.seed + runtime.rank)
    epoch_steps = steps_per_epoch(data.train, config, runtime)
    planned = plan_steps(epoch_steps, config, steps)
    scheduler = parts.build_lr_schedule(prepared.optimizer.dense, config, planned)
    fitted = fit(
        prepared,
        parts,
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
        label_rates=label_rates,
    )
    calibrate_output_bias(prepared.model, data.valid, config, runtime)
    splits = {"valid": data.valid, "test": data.test}
    rates = {"train": label_rates or {}, **{name: examples.label_rates(config) for name, examples in splits.items()}}
    rows = {"train": data.train.num_rows, **{name: examples.num_rows for name, examples in splits.items()}}
    outputs = {  # (logits, labels) per split, rows X T: the metrics, and predictions.npz
        name: predict(prepared.model, examples.batches(config, config.batch_size, shard=runtime.shard), runtime)
        for name, examples in splits.items()
    }
    result = RunResult(
        fit=fitted,
        metrics={name: objective_metrics(*outputs[name], config) for name in splits},
        optimal={name: examples.optimal for name, examples in splits.items() if examples.optimal is not None},
        label_rates=label_rates,
        tables=prepared.tables,
        prepared=prepared,
        rank_table_bytes=gather_values(local_table_bytes(prepared.model), runtime),
        split_label_rates=rates,
        label_shifts=label_shifts(rates, rows),
        unknown_ids=unknown_summary(id_counts, known, config),
        best_state=unsharded_state_dict(prepared.model),  # every rank takes part; rank 0 gets it
    )
    if run_dir is not None and runtime.is_main:
        path = Path(run_dir) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoints.save_best(Path(run_dir), best_checkpoint(result, config, overrides, sharding, data))
        summary = result.summary(config, runtime, overrides)
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        np.savez_compressed(  # per-example results: smt qualify's paired bootstrap reads them
            Path(run_dir) / PREDICTIONS_FILE,
            objectives=np.array(config.objective_names),
            **{f"{name}_logits": logits for name, (logits, _) in outputs.items()},
            **{f"{name}_labels": labels.astype(np.int8) for name, (_, labels) in outputs.items()},
        )
    return result


def best_checkpoint(
    result: RunResult,
    config: ModelConfigBase,
    overrides: dict[str, str] | None,
    sharding: Sharding,
    data: RunData,
) -> dict[str, Any]:
    """What best.pt holds (checkpoint.save_best): the model's best weights after calibration,
    every table whole (result.best_state), and what rebuilds and re-scores it exactly: the
    config as trained (ModelConfigBase.from_dict), the sharding options, the test split's
    raw-id hashing, the --set overrides, the best step and the metrics it scored."""
    from . import __version__  # noqa: PLC0415 - the package's own metadata

    return {
        "format": checkpoints.BEST_FORMAT,
        "model_name": config.model_name,
        "runtime_version": __version__,
        "config": asdict(config),
        "overrides": overrides or {},
        "sharding": asdict(sharding),
        "hash_raw_ids": sorted(data.test.hash_raw_ids) if not isinstance(data.test.hash_raw_ids, bool) else data.test.hash_raw_ids,
        "best_step": result.fit.best_step,
        "metrics": result.metrics,
        "state": result.best_state,
    }


@dataclass
class Restored:
    """A model restored from best.pt (restore_best_checkpoint).

    Attributes:
        config: the config the run trained with.
        model: the unsharded model holding best.pt's weights, in eval mode.
        saved: best.pt's other entries (best_checkpoint).
    """

    config: ModelConfigBase
    model: nn.Module
    saved: dict[str, Any]


def restore_best_checkpoint(parts: ModelParts, path: str | Path) -> Restored:
    """The model of best.pt at path (a run directory names its best.pt).

    Raises:
        FileNotFoundError: no best.pt there.
        ValueError: in one line, for an unreadable file, another model's, or weights that do
            not fit this package's model.
    """
    config_class = parts.config
    saved = checkpoints.read_best(Path(path), parts.config().model_name)
    try:
        config = config_class.from_dict(saved["config"])
        model = parts.model(config)
        model.load_state_dict(saved["state"])
    except _MISFIT as error:
        raise ValueError(
            f"{path}: its weights do not fit this package's model ({checkpoints.first_line(error)});"
            " evaluate it with the version of the package that trained it"
        ) from None
    return Restored(config, model.eval(), saved)


def evaluate_checkpoint(
    parts: ModelParts,
    restored: Restored,
    data: Examples,
    runtime: Runtime,
) -> Metrics:
    """metrics.py's metrics of best.pt's model on data, computed as the run computed its test
    metrics: the model sharded the same way (best.pt's sharding options), through the same
    DistributedModelParallel kernels, in batches of config.batch_size. For the run's test
    split and number of processes they equal metrics.json's test metrics exactly."""
    saved = restored.saved["sharding"]
    sharding = Sharding(saved["strategy"], saved["max_rank_memory"])
    prepared = prepare(parts, restored.config, runtime, sharding, copy.deepcopy(restored.model))
    return evaluate(prepared.model, data, restored.config, runtime)


def unsharded_model(parts: ModelParts, config: ModelConfigBase, model: nn.Module, runtime: Runtime) -> nn.Module | None:
    """A plain, unsharded copy of a trained (sharded) model, on rank 0 (None on the other
    ranks, which must call this too): every table gathered whole, for export and serving."""
    state = unsharded_state_dict(model)
    if state is None:
        return None
    plain = parts.model(config)
    plain.load_state_dict(state)
    return plain.eval()
