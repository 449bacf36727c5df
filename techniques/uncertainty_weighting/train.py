"""Uncertainty weighting of the objectives (Kendall, Gal and Cipolla, CVPR 2018, arXiv:1705.07115).

Patch for train.py: replaces MultiTaskLoss. Every objective t gets a learned log-variance
s_t = log sigma_t^2 (initialised to 0, trained with the model's dense parameters:
build_optimizer gives the loss's parameters to the dense optimizer), and

    total = sum_t exp(-s_t) * w_t * bce_t + s_t / 2

with w_t the objective's weight from the spec and bce_t its mean binary cross-entropy.
This is the paper's classification form: a classifier with logits scaled by 1 / sigma^2
has, in the paper's approximation (eq. 10), the loss (1 / sigma^2) * CE + log sigma =
exp(-s) * CE + s / 2. The common simplification "+ s_t" doubles the regulariser; both give
the same ratios between objectives and differ only in the optimum of s_t
(exp(s_t) = 2 w_t bce_t here, w_t bce_t there). Because s_t is learned, w_t only sets
where the weighting starts (at s = 0 the loss is the template's sum_t w_t bce_t): at the
optimum every objective contributes exp(-s_t) w_t bce_t = 1/2, whatever w_t.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class MultiTaskLoss(nn.Module):
    """Per-objective BCEs weighted by learned uncertainty (Kendall et al. 2018).

    total = sum_t exp(-s_t) * w_t * bce_t + s_t / 2, with w_t from config.objectives
    and s_t = log sigma_t^2 the parameter log_variances (shape T, initialised to 0).

    Reads config.objectives. Call: (logits B X T, labels B X T of 0/1) -> (total,
    per_task): a scalar and the unweighted mean cross-entropy of every objective (T).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        weights = [objective.weight for objective in config.objectives]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.log_variances = nn.Parameter(torch.zeros(len(weights)))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)
        precision = torch.exp(-self.log_variances)
        total = (precision * self.weights * per_task + 0.5 * self.log_variances).sum()
        return total, per_task
