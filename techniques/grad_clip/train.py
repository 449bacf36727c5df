"""Global gradient-norm clipping (Pascanu et al., ICML 2013, arXiv:1211.5063).

Patch for train.py: inserts into the hook after_backward, which the runtime's training step
calls after loss.backward() and before the optimizers step. When the L2 norm of all the
gradients the model holds, ||g||, exceeds config.grad_clip.max_norm, every one is multiplied
by max_norm / ||g||: the update keeps its direction and its norm is capped. Tables trained by
a fused embedding optimizer (the default) hold no gradient: FBGEMM updated them inside
backward, and their optimizer (Adagrad) already scales every row's step by that row's
gradient history. With the "dense" embedding optimizer the tables are dense parameters with
gradients, and are clipped with the rest, as FuxiCTR clips every parameter. The hook sees the model
only, so parameters of the loss (e.g. the log-variances of uncertainty_weighting) are not
clipped. The default max_norm, 10, caps outliers only: the median dense gradient norm of
the example fleet is about 10 (1.0.0 clipped at 1, which shrank almost every step).
"""

import torch
from torch import nn

from .config import ModelConfig


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Scale the model's gradients down to a global L2 norm of at most max_norm."""
    with_gradients = [p for p in model.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(with_gradients, max_norm=config.grad_clip.max_norm)
