"""Training: multi-task loss, optimizers, learning-rate schedule, and the training loop
with validation, early stopping, checkpoints and a metrics file per run.

A run (train) trains on the train split, validates every config.eval_every steps,
stops early when the validation loss has not improved for
config.early_stopping_patience validations, restores the best weights and reports
metrics.py's metrics on the validation and test splits. With a run directory it
writes checkpoint.pt at every validation (resume continues from it) and
metrics.json at the end. Deterministic on CPU: weights, data order and dropout all
derive from config.seed.

Shapes: B = batch size, T = number of objectives.
"""

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import ModelConfig
from .data import Batch, Examples
from .distributed import Runtime, replicate, total
from .metrics import Metrics, objective_metrics, predict, weighted_logloss
from .model import RankingModel

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


# SMT technique uncertainty_weighting 1.0.1: replaces extension point MultiTaskLoss.
class MultiTaskLoss(nn.Module):
    """Per-objective BCEs weighted by learned uncertainty (Kendall et al. 2018).

    total = sum_t exp(-s_t) * w_t * bce_t + s_t / 2, with w_t from config.objectives
    and s_t = log sigma_t^2 the parameter log_variances (shape T, initialised to 0).

    Args:
        config: the model's ModelConfig; reads config.objectives.

    Call Args:
        logits: tensor of shape B X T.
        labels: tensor of shape B X T, 0/1.

    Returns:
        (total, per_task): a scalar tensor and a tensor of shape T holding the
        mean cross-entropy of every objective (unweighted, as in the template).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        weights = [objective.weight for objective in config.objectives]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.log_variances = nn.Parameter(torch.zeros(len(weights)))

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_task = F.binary_cross_entropy_with_logits(
            logits, labels, reduction="none"
        ).mean(dim=0)
        precision = torch.exp(-self.log_variances)
        total = (precision * self.weights * per_task + 0.5 * self.log_variances).sum()
        return total, per_task


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
    """AdamW for the dense parameters (the model's and the loss's), Adagrad for the
    embedding tables.

    dense:  AdamW at config.learning_rate, weight decay config.weight_decay.
    sparse: Adagrad at config.embedding_learning_rate on the tables' sparse
            gradients: a step touches only the rows the batch used, and every row
            gets a step size of its own (rare ids keep larger steps).
    """
    tables = embedding_tables(model)
    table_ids = {id(table) for table in tables}
    dense = [
        parameter
        for parameter in [*model.parameters(), *loss_fn.parameters()]
        if id(parameter) not in table_ids
    ]
    return Optimizers(
        dense=torch.optim.AdamW(
            dense, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        sparse=(
            torch.optim.Adagrad(tables, lr=config.embedding_learning_rate)
            if tables
            else None
        ),
    )


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, config: ModelConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Learning-rate schedule of the dense optimizer (Optimizers.dense) over a run of
    total_steps optimizer steps.

    fit steps the schedule once after every optimizer step. This default returns
    None: the learning rate stays at config.learning_rate throughout.
    """
    return None


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Hook: runs after loss.backward() and before the optimizers step; techniques
    insert code here.
    """


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


@dataclass
class FitResult:
    """What a training loop did.

    Attributes:
        losses: training loss of every step, including steps before a resume.
        steps: optimizer steps done.
        best_step: step whose weights the model holds at the end (the best
            validation loss; the last step without validation).
        stopped_early: whether validation stopped training before the last step.
        history: {"step", "valid_loss"} of every validation.
        seconds: time spent in training steps (validation and checkpoints excluded)
            by this call.
        examples: training examples of this call, summed over every rank.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    best_step: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    examples: int = 0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else math.nan


def validation_loss(
    model: nn.Module, valid: Examples, config: ModelConfig, runtime: Runtime
) -> float:
    """The weighted logloss (metrics.weighted_logloss) of model on valid."""
    return weighted_logloss(evaluate(model, valid, config, runtime), config)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: Optimizers,
    data: pa.Table | Examples,
    config: ModelConfig,
    steps: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    valid: Examples | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime = Runtime(),
) -> FitResult:
    """Train model for steps optimizer steps over reshuffled passes of data.

    Args:
        data: training examples; each rank reads its own shard.
        scheduler: learning-rate schedule stepped after every optimizer step
            (build_lr_schedule); None keeps the optimizers' learning rates.
        valid: validation examples. With them, the model is validated every
            config.eval_every steps and at the last step, training stops when
            config.early_stopping_patience validations in a row did not improve
            on the best loss, and the model ends with the best weights.
        run_dir: directory of checkpoint.pt, written at every validation (by rank 0).
        resume: continue from run_dir's checkpoint: weights, optimizers, schedule,
            data position, random state and validation history.
        progress: show a progress bar (rank 0 only).
        runtime: this process's device and rank (distributed.start).

    Returns:
        a FitResult.
    """
    if isinstance(data, pa.Table):
        data = Examples.from_table(data, config)
    if data.num_rows == 0:
        raise ValueError("cannot train on an empty table")
    checkpoint = Path(run_dir) / CHECKPOINT_FILE if run_dir is not None else None
    result, epoch, position = FitResult(), 0, 0
    best: dict[str, Any] | None = None
    bad_validations = 0
    if resume:
        if checkpoint is None or not checkpoint.is_file():
            raise FileNotFoundError(
                f"no checkpoint to resume from at {checkpoint}; run without resume"
            )
        saved = torch.load(checkpoint, map_location=runtime.device, weights_only=False)
        if saved["model_name"] != config.model_name:
            raise ValueError(
                f"{checkpoint} is a checkpoint of model {saved['model_name']},"
                f" not {config.model_name}"
            )
        model.load_state_dict(saved["model"])
        loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"][runtime.rank].cpu())
        result = saved["result"]
        epoch, position = saved["epoch"], saved["position"]
        best, bad_validations = saved["best"], saved["bad_validations"]
    step_module = replicate(ModelWithLoss(model, loss_fn), runtime)
    bar = tqdm(
        total=steps,
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

    batches = islice(epoch_batches(), position, None)
    losses: list[torch.Tensor] = []
    examples, seconds = 0, 0.0
    # Sparse gradients are built by torch itself: skip its invariant checks (and say
    # so, which also silences its warning about them).
    torch.sparse.check_sparse_tensor_invariants.disable()
    model.train()
    loss_fn.train()
    while result.steps < steps and not result.stopped_early:
        started = time.perf_counter()
        batch: Batch | None = next(batches, None)
        if batch is None:
            epoch, position = epoch + 1, 0
            batches = epoch_batches()
            continue
        batch = batch.to(runtime.device)
        loss, _ = step_module(
            batch.dense, batch.sparse_values, batch.sparse_offsets, batch.labels
        )
        optimizer.zero_grad()
        loss.backward()
        after_backward(model, config)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        position += 1
        result.steps += 1
        examples += batch.batch_size
        seconds += time.perf_counter() - started
        bar.update()
        if result.steps % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if valid is None or (
            result.steps % config.eval_every and result.steps != steps
        ):
            continue
        valid_loss = validation_loss(model, valid, config, runtime)
        model.train()
        result.history.append({"step": result.steps, "valid_loss": valid_loss})
        if best is None or valid_loss < best["valid_loss"]:
            best = {
                "valid_loss": valid_loss,
                "step": result.steps,
                "model": _state(model),
                "loss": _state(loss_fn),
            }
            bad_validations = 0
        else:
            bad_validations += 1
            result.stopped_early = bad_validations >= config.early_stopping_patience
        if checkpoint is not None:
            result.losses += torch.stack(losses).tolist()
            losses = []
            rng = [torch.get_rng_state()] * runtime.world_size
            if runtime.world_size > 1:
                torch.distributed.all_gather_object(rng, torch.get_rng_state())
            if runtime.is_main:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                partial = checkpoint.with_suffix(".partial")
                torch.save(
                    {
                        "model_name": config.model_name,
                        "model": model.state_dict(),
                        "loss": loss_fn.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": (
                            scheduler.state_dict() if scheduler is not None else None
                        ),
                        "rng": rng,
                        "result": result,
                        "epoch": epoch,
                        "position": position,
                        "best": best,
                        "bad_validations": bad_validations,
                    },
                    partial,
                )
                os.replace(partial, checkpoint)
    bar.close()
    if losses:
        result.losses += torch.stack(losses).tolist()
    if best is not None:
        model.load_state_dict(best["model"])
        loss_fn.load_state_dict(best["loss"])
        result.best_step = best["step"]
    else:
        result.best_step = result.steps
    result.examples = int(total(examples, runtime))
    result.seconds = seconds
    return result


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
        config.seed, + 1 and + 2)."""
        return cls(
            train=Examples.synthetic(config, config.train_examples, config.seed),
            valid=Examples.synthetic(config, config.eval_examples, config.seed + 1),
            test=Examples.synthetic(config, config.eval_examples, config.seed + 2),
        )


@dataclass
class RunResult:
    """A finished run: its fit, and metrics.py's metrics per split.

    Attributes:
        fit: what the training loop did.
        metrics: "valid" and "test" -> objective -> metric -> value.
        optimal: split -> the split's optimal metrics, for splits that know them.
    """

    fit: FitResult
    metrics: dict[str, Metrics]
    optimal: dict[str, Any]

    def summary(self, config: ModelConfig, runtime: Runtime) -> dict[str, Any]:
        """What metrics.json holds."""
        return {
            "model_name": config.model_name,
            "seed": config.seed,
            "steps": self.fit.steps,
            "best_step": self.fit.best_step,
            "stopped_early": self.fit.stopped_early,
            "world_size": runtime.world_size,
            "device": str(runtime.device),
            "train_seconds": self.fit.seconds,
            "train_examples_per_second": self.fit.examples_per_second,
            "final_train_loss": self.fit.losses[-1] if self.fit.losses else None,
            "validation": self.fit.history,
            "metrics": self.metrics,
            "optimal": self.optimal,
            "config": asdict(config),
        }


def train(
    config: ModelConfig,
    steps: int,
    model: nn.Module | None = None,
    data: RunData | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    runtime: Runtime = Runtime(),
) -> RunResult:
    """Train for at most steps steps with validation and early stopping, then evaluate
    the best weights on the validation and test splits.

    Args:
        config: the model's ModelConfig.
        steps: most optimizer steps of config.batch_size examples (per rank).
        model: the model to train in place; a new one (build_model) if None.
        data: the splits; RunData.synthetic(config) if None.
        run_dir: directory of checkpoint.pt and, at the end, metrics.json.
        resume: continue from run_dir's checkpoint (see fit).
        progress: show a progress bar.
        runtime: this process's device and rank (distributed.start).

    Returns:
        a RunResult; the model holds the best weights.
    """
    if model is None:
        model = build_model(config)
    model.to(runtime.device)
    if data is None:
        data = RunData.synthetic(config)
    torch.manual_seed(config.seed + runtime.rank)
    loss_fn = MultiTaskLoss(config).to(runtime.device)
    optimizer = build_optimizer(model, loss_fn, config)
    scheduler = build_lr_schedule(optimizer.dense, config, steps)
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
    )
    splits = {"valid": data.valid, "test": data.test}
    result = RunResult(
        fit=fitted,
        metrics={
            name: evaluate(model, examples, config, runtime)
            for name, examples in splits.items()
        },
        optimal={
            name: examples.optimal
            for name, examples in splits.items()
            if examples.optimal is not None
        },
    )
    if run_dir is not None and runtime.is_main:
        path = Path(run_dir) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = result.summary(config, runtime)
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return result
