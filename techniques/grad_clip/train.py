"""Global gradient-norm clipping (Pascanu et al., ICML 2013, arXiv:1211.5063).

Patch for train.py: inserts into the hook after_backward, which fit calls after
loss.backward() and before optimizer.step(). When the L2 norm of all the model's
gradients together, ||g||, exceeds config.grad_clip.max_norm, every gradient is
multiplied by max_norm / ||g||: the update keeps its direction and its norm is capped.
The hook sees the model only, so parameters of the loss (e.g. the log-variances of
uncertainty_weighting) are not clipped.

With Adam (the template's optimizer) clipping does not cap the step size, which Adam
normalises by the running RMS of the gradients; it keeps a gradient spike from entering
Adam's moment estimates at full size. It helps when it clips spikes only: a max_norm
below the typical norm rescales every step and, on the example models, trains worse.
"""

import torch
from torch import nn

from .config import ModelConfig


def after_backward(model: nn.Module, config: ModelConfig) -> None:
    """Scale the model's gradients down to a global L2 norm of at most max_norm."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=config.grad_clip.max_norm)
