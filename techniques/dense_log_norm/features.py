"""Signed log1p of the dense features, then a learned per-feature affine.

Patch for features.py: replaces DensePreprocessor. Every dense feature n becomes

    y_n = a_n * sign(x_n) * log(1 + |x_n|) + b_n

with a_n = 1 and b_n = 0 at initialisation, learned with the model. Counters, prices and
durations are heavy-tailed: raw values span orders of magnitude, so a few examples dominate
the dense MLP's first layer and its gradients; the log brings them to a range of a few units
and the sign keeps negative values apart from positive ones (log1p(|x|) is 0 at 0 and
continuous).

Why an affine and not BatchNorm after the log: the affine is stateless (no running
statistics), so training and serving compute the same function, any batch size works
(including 1), and results do not depend on how examples are batched. It starts as the
plain signed log1p and lets each feature learn its own scale and offset (2 N parameters).
"""

import torch
from torch import nn

from .config import ModelConfig


class DensePreprocessor(nn.Module):
    """Signed log1p, then a learned per-feature affine: a * sign(x) log(1 + |x|) + b.

    Args:
        config: the model's ModelConfig; reads config.num_dense_features (N).

    Call Args:
        dense: tensor of shape B X N.

    Returns:
        tensor of shape B X N.

    Attributes:
        scale: parameter a of shape N, initialised to 1.
        shift: parameter b of shape N, initialised to 0.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(config.num_dense_features))
        self.shift = nn.Parameter(torch.zeros(config.num_dense_features))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.scale * (torch.sign(dense) * torch.log1p(dense.abs())) + self.shift
