"""Global gradient-norm clipping (Pascanu et al., ICML 2013, arXiv:1211.5063).

Patch for train.py: inserts into the hook after_backward, which fit calls after
loss.backward() and before optimizer.step(). When the L2 norm of all the model's
gradients together, ||g||, exceeds config.grad_clip.max_norm, every gradient is
multiplied by max_norm / ||g||: the update keeps its direction and its norm is capped.
The hook sees the model only, so parameters of the loss (e.g. the log-variances of
uncertainty_weighting) are not clipped.
"""

import torch
from torch import nn

from .config import ModelConfig


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Scale the model's gradients down to a global L2 norm of at most max_norm."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=config.grad_clip.max_norm)
