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


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, config: ModelConfig, total_steps: int
) -> LRSchedule | None:
    """Learning-rate schedule of the dense optimizer over the planned run of total_steps
    optimizer steps (config.epochs epochs, capped by the run's steps; early stopping may
    end it sooner), stepped after every optimizer step and saved with checkpoints. This
    default returns None: the learning rate stays at config.learning_rate, except for
    reductions on plateau (config.lr_plateau_factor).
    """
    return None


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Hook: runs after loss.backward() and before the optimizers step (the fused
    embedding tables have already been updated); techniques insert code here.
    """
    # SMT technique grad_clip 1.1.1: inserts into hook after_backward.
    with_gradients = [p for p in model.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(with_gradients, max_norm=config.grad_clip.max_norm)


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
