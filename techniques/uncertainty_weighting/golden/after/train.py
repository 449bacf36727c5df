"""Training and evaluation: multi-task loss, optimizer, learning-rate schedule, training
loop and metrics.

Metrics per objective, on held-out data:
    logloss     mean binary cross-entropy
    ne          normalized entropy = logloss / entropy of the observed base rate;
                below 1 means better than always predicting the base rate
    auc         area under the ROC curve (rank based, ties count one half)
    base_rate   fraction of positive labels

Shapes: B = batch size, T = number of objectives.
"""

import math
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .data import generate_synthetic, table_to_batches
from .model import RankingModel

Metrics = dict[str, dict[str, float]]  # objective -> metric name -> value


# SMT technique uncertainty_weighting 1.0.0: replaces extension point MultiTaskLoss.
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


def build_optimizer(
    params: Iterable[nn.Parameter], config: ModelConfig
) -> torch.optim.Optimizer:
    """Adam over params (the model's and the loss's) at config.learning_rate."""
    return torch.optim.Adam(params, lr=config.learning_rate)


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, config: ModelConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Learning-rate schedule of a training run of total_steps optimizer steps.

    fit steps the schedule once after every optimizer step. This default returns
    None: the learning rate stays at config.learning_rate throughout.
    """
    return None


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Hook: runs after loss.backward() and before optimizer.step(); techniques insert
    code here.
    """


def build_model(config: ModelConfig) -> RankingModel:
    """A freshly initialised RankingModel; the same config.seed gives the same weights."""
    torch.manual_seed(config.seed)
    return RankingModel(config)


def synthetic_tables(config: ModelConfig) -> tuple[pa.Table, pa.Table]:
    """Train and eval tables: independent samples of the model's synthetic world."""
    train_table = generate_synthetic(config, config.train_examples, seed=config.seed)
    eval_table = generate_synthetic(config, config.eval_examples, seed=config.seed + 1)
    return train_table, eval_table


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    table: pa.Table,
    config: ModelConfig,
    steps: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> list[float]:
    """Run steps optimizer steps over reshuffled passes of table.

    Args:
        scheduler: learning-rate schedule stepped after every optimizer step
            (build_lr_schedule); None keeps the optimizer's learning rate.

    Returns:
        the total training loss of every step.
    """
    if table.num_rows == 0:
        raise ValueError("cannot train on an empty table")
    model.train()
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        batches = table_to_batches(
            table, config.batch_size, shuffle=True, seed=config.seed + epoch
        )
        for batch in batches:
            if len(losses) == steps:
                break
            logits = model(batch.dense, batch.sparse_values, batch.sparse_offsets)
            loss, _ = loss_fn(logits, batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            after_backward(model, config)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
        epoch += 1
    return losses


@torch.no_grad()
def predict(
    model: nn.Module, table: pa.Table, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every row of table, each of shape rows X T."""
    model.eval()
    logits, labels = [], []
    for batch in table_to_batches(table, batch_size):
        logits.append(model(batch.dense, batch.sparse_values, batch.sparse_offsets))
        labels.append(batch.labels)
    return torch.cat(logits).double().numpy(), torch.cat(labels).double().numpy()


def logloss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of 1-D logits against 0/1 labels."""
    # -log sigmoid(x) = log(1 + exp(-x)), written to stay finite for large |x|.
    losses = np.logaddexp(0.0, logits) - labels * logits
    return float(losses.mean())


def normalized_entropy(logloss_value: float, base_rate: float) -> float:
    """logloss divided by the entropy of a constant prediction at base_rate."""
    if base_rate <= 0.0 or base_rate >= 1.0:
        return math.nan
    entropy = -(
        base_rate * math.log(base_rate) + (1 - base_rate) * math.log(1 - base_rate)
    )
    return logloss_value / entropy


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); tied scores share their mean rank."""
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)  # 1-based rank of the last element of each tie group
    mean_rank = last_rank - (counts - 1) / 2
    positive_rank_sum = mean_rank[inverse][labels == 1].sum()
    return float(
        (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    )


def evaluate(model: nn.Module, table: pa.Table, config: ModelConfig) -> Metrics:
    """logloss, ne, auc and base_rate of every objective on table."""
    logits, labels = predict(model, table, config.batch_size)
    metrics: Metrics = {}
    for index, name in enumerate(config.objective_names):
        task_logits, task_labels = logits[:, index], labels[:, index]
        base_rate = float(task_labels.mean())
        task_logloss = logloss(task_logits, task_labels)
        metrics[name] = {
            "logloss": task_logloss,
            "ne": normalized_entropy(task_logloss, base_rate),
            "auc": auc(task_logits, task_labels),
            "base_rate": base_rate,
        }
    return metrics


def train(
    config: ModelConfig,
    steps: int,
    model: nn.Module | None = None,
    train_table: pa.Table | None = None,
    eval_table: pa.Table | None = None,
) -> Metrics:
    """Train for steps batches and evaluate on held-out data.

    Deterministic on CPU: weights, data and shuffling all derive from config.seed.

    Args:
        config: the model's ModelConfig.
        steps: number of optimizer steps of config.batch_size examples.
        model: the model to train in place; a new one (build_model) if None.
        train_table, eval_table: data to use; synthetic_tables(config) if None.

    Returns:
        objective -> {"logloss", "ne", "auc", "base_rate"} on the eval table.
    """
    if model is None:
        model = build_model(config)
    if train_table is None or eval_table is None:
        train_table, eval_table = synthetic_tables(config)
    torch.manual_seed(config.seed)
    loss_fn = MultiTaskLoss(config)
    optimizer = build_optimizer([*model.parameters(), *loss_fn.parameters()], config)
    scheduler = build_lr_schedule(optimizer, config, steps)
    fit(model, loss_fn, optimizer, train_table, config, steps, scheduler)
    return evaluate(model, eval_table, config)


def format_metrics(metrics: Metrics) -> str:
    """A table with one row per objective: base rate, logloss, NE and AUC."""
    width = max(len("objective"), *(len(name) for name in metrics))
    lines = [f"{'objective':<{width}}  base_rate  logloss      NE     AUC"]
    for name, values in metrics.items():
        lines.append(
            f"{name:<{width}}  {values['base_rate']:>9.4f}  {values['logloss']:>7.4f}"
            f"  {values['ne']:>6.4f}  {values['auc']:>6.4f}"
        )
    return "\n".join(lines)
