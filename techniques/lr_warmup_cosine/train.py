"""Linear warmup, then cosine decay of the learning rate to min_lr_ratio x learning_rate.

Patch for train.py: replaces build_lr_schedule and adds warmup_cosine_factor just before
it. S is the run's planned length, smt_runtime.training.plan_steps: config.epochs epochs of
steps_per_epoch steps, capped by the run's steps (1.0.0 was sized by --steps alone, so a
default run, which early stopping ends after a few epochs, decayed on a schedule it never
followed). For S optimizer steps with W warmup steps (config.lr_warmup_cosine.warmup_steps,
or round(warmup_fraction * S) when that is 0), optimizer step k (0-based) runs at
config.learning_rate times

    (k + 1) / W                                              for k < W
    m + (1 - m) * (1 + cos(pi * (k - W) / (S - 1 - W))) / 2  for W <= k < S

with m = min_lr_ratio: warmup ends at the full rate, the first step after warmup runs at
the full rate and the last step (k = S - 1) at m x learning_rate. The warmup's first step
runs at learning_rate / W rather than 0, so no step is wasted. Steps past S stay at m.

On resume the checkpoint restores the schedule's step count and base rate, so the curve
continues at step k rather than restarting its warmup; a resume with a longer plan (more
epochs) stretches the rest of the cosine over the new length. A reduction on plateau
(config.lr_plateau_factor) scales the base rate, and the curve goes on from the reduced rate.
"""

import math

import torch

from .config import ModelConfig


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
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
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
        lambda step: warmup_cosine_factor(step, total_steps, warmup, params.min_lr_ratio),
    )
