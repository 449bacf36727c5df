"""Evaluation metrics of a ranking model, per objective, on held-out data.

    logloss      mean binary cross-entropy
    ne           normalized entropy = logloss / entropy of the observed base rate;
                 below 1 means better than always predicting the base rate
    auc          area under the ROC curve (rank based, ties count one half)
    calibration  mean predicted probability / observed base rate; 1 is calibrated,
                 above 1 over-predicts
    base_rate    fraction of positive labels

Shapes: B = batch size, T = number of objectives.
"""

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from .config import ModelConfigBase
from .batch import Batch
from .distributed import Runtime, gather_rows

Metrics = dict[str, dict[str, float]]  # objective -> metric name -> value
METRIC_NAMES = ("logloss", "ne", "auc", "calibration", "base_rate")


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[Batch], runtime: Runtime = Runtime()
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every example of batches, each of shape rows X T; with
    several ranks, the rows of every rank's batches."""
    model.eval()
    logits, labels = [], []
    for batch in batches:
        batch = batch.to(runtime.device)
        logits.append(model(batch.dense, batch.sparse).cpu())
        labels.append(batch.labels.cpu())
    local_logits = torch.cat(logits).double().numpy()
    local_labels = torch.cat(labels).double().numpy()
    return gather_rows(local_logits, runtime), gather_rows(local_labels, runtime)


def logloss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of 1-D logits against 0/1 labels."""
    # -log sigmoid(x) = log(1 + exp(-x)), written to stay finite for large |x|.
    losses = np.logaddexp(0.0, logits) - labels * logits
    return float(losses.mean())


def normalized_entropy(logloss_value: float, base_rate: float) -> float:
    """logloss divided by the entropy of a constant prediction at base_rate."""
    if base_rate <= 0.0 or base_rate >= 1.0:
        return math.nan
    entropy = -(base_rate * math.log(base_rate) + (1 - base_rate) * math.log(1 - base_rate))
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
    return float((positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def calibration(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean predicted probability divided by the observed rate of positive labels."""
    base_rate = float(labels.mean())
    if base_rate == 0.0:
        return math.nan
    probabilities = np.exp(-np.logaddexp(0.0, -logits))  # sigmoid, without overflow
    return float(probabilities.mean() / base_rate)


def objective_metrics(logits: np.ndarray, labels: np.ndarray, config: ModelConfigBase) -> Metrics:
    """Every metric of METRIC_NAMES for every objective, from logits and labels of
    shape rows X T."""
    metrics: Metrics = {}
    for index, name in enumerate(config.objective_names):
        task_logits, task_labels = logits[:, index], labels[:, index]
        base_rate = float(task_labels.mean())
        task_logloss = logloss(task_logits, task_labels)
        metrics[name] = {
            "logloss": task_logloss,
            "ne": normalized_entropy(task_logloss, base_rate),
            "auc": auc(task_logits, task_labels),
            "calibration": calibration(task_logits, task_labels),
            "base_rate": base_rate,
        }
    return metrics


def weighted_logloss(metrics: Metrics, config: ModelConfigBase) -> float:
    """sum_t weight_t * logloss_t: the template's training loss, on held-out data."""
    return sum(objective.weight * metrics[objective.name]["logloss"] for objective in config.objectives)


def format_metrics(metrics: Metrics) -> str:
    """A table with one row per objective: base rate, logloss, NE, AUC and calibration."""
    width = max(len("objective"), *(len(name) for name in metrics))
    lines = [f"{'objective':<{width}}  base_rate  logloss      NE     AUC  calib"]
    for name, values in metrics.items():
        lines.append(
            f"{name:<{width}}  {values['base_rate']:>9.4f}  {values['logloss']:>7.4f}"
            f"  {values['ne']:>6.4f}  {values['auc']:>6.4f}  {values['calibration']:>5.3f}"
        )
    return "\n".join(lines)


def format_by_split(title: str, values: dict[str, dict[str, float]], cell: str) -> str:
    """A table of one value per split and name (e.g. an objective's label rate): one row per
    name, one column per split, each value formatted with cell (e.g. ">9.4f")."""
    splits = list(values)
    names = list(next(iter(values.values()), {}))
    width = max(len(title), *(len(name) for name in names))
    lines = [f"{title:<{width}}" + "".join(f"{split:>9}" for split in splits)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(format(values[split][name], cell) for split in splits))
    return "\n".join(lines)
