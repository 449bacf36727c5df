"""Training extension points of this model: the loss, the optimizers, the learning-rate
schedule and a hook. The training loop that calls them (validation, early stopping,
checkpoints, metrics.json, sharding under torchrun) is smt_runtime.training; PARTS hands
it this package's pieces.

Shapes: B = batch size, T = number of objectives.
"""

from typing import Any

import torch
import torch.nn.functional as F
from smt_runtime import training
from smt_runtime.parts import LRSchedule, ModelParts
from smt_runtime.sparse import EmbeddingOptimizer
from torch import nn

from .config import ModelConfig
from .model import RankingModel

import math


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


def build_optimizer(
    parameters: list[dict[str, Any]], config: ModelConfig
) -> torch.optim.Optimizer:
    """The optimizer of every parameter but the embedding tables (the model's and the
    loss's; the tables too with the "dense" embedding optimizer), as parameter groups:
    config.dense_optimizer, "adamw" (AdamW, decoupled weight decay config.weight_decay)
    or "adam" (Adam; its weight_decay is L2 in the gradient), at config.learning_rate.
    fused=True: one kernel over every parameter, about 4x faster than the per-tensor loop for
    a ranking model's many small tensors on CPU.
    """
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[
        config.dense_optimizer
    ]
    return optimizer(
        parameters,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=True,
    )


def build_embedding_optimizer(config: ModelConfig) -> EmbeddingOptimizer:
    """How the embedding tables learn: config.embedding_optimizer, "adagrad" (every weight
    gets a step size of its own; rare ids keep larger steps), "rowwise_adagrad" (one
    step size per row) or "sgd", each fused into backward by TorchRec, or "dense" (the
    dense optimizer trains the tables), at config.embedding_learning_rate
    (config.embedding_regularizer goes into the loss: smt_runtime.training.regularization).
    """
    return EmbeddingOptimizer(
        config.embedding_optimizer, config.embedding_learning_rate
    )


# SMT technique lr_warmup_cosine 1.1.1: adds warmup_cosine_factor.
def warmup_cosine_factor(
    step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Args:
        step: index of the optimizer step, 0 for the first.
        total_steps: S, optimizer steps of the run.
        warmup_steps: W, steps of linear warmup (0 for none).
        min_lr_ratio: m, the multiplier of the last step and of every later one.

    Returns:
        (step + 1) / W during warmup, then the cosine from 1 down to m.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )


# SMT technique lr_warmup_cosine 1.1.1: replaces extension point build_lr_schedule.
def build_lr_schedule(
    optimizer: torch.optim.Optimizer, config: ModelConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Linear warmup then cosine decay over total_steps, the run's planned length
    (see warmup_cosine_factor).

    The warmup length is config.lr_warmup_cosine.warmup_steps, or
    round(warmup_fraction * total_steps) when that is 0; it never exceeds total_steps.
    """
    params = config.lr_warmup_cosine
    warmup = params.warmup_steps or round(params.warmup_fraction * total_steps)
    warmup = min(warmup, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(
            step, total_steps, warmup, params.min_lr_ratio
        ),
    )


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Hook: runs after loss.backward() and before the optimizers step (the fused
    embedding tables have already been updated); techniques insert code here.
    """


PARTS = ModelParts(
    config=ModelConfig,
    model=RankingModel,
    loss=MultiTaskLoss,
    build_optimizer=build_optimizer,
    build_embedding_optimizer=build_embedding_optimizer,
    build_lr_schedule=build_lr_schedule,
    after_backward=after_backward,
)


def train(
    config: ModelConfig | None = None, steps: int | None = None, **options: Any
) -> training.RunResult:
    """Train this model (smt_runtime.training.train with PARTS; options as there)."""
    return training.train(PARTS, config, steps, **options)
