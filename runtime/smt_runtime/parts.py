"""What a model package hands the runtime: its ModelParts (config class, model, and the
extension points of its train.py), and the optimizers a run builds from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .sparse import EmbeddingOptimizer

LRSchedule = torch.optim.lr_scheduler.LRScheduler


@dataclass(frozen=True)
class ModelParts:
    """One model package's pieces, as its train.py binds them (``PARTS``).

    Attributes:
        config: the package's ModelConfig class; ``config()`` is the spec's config.
        model: ``RankingModel(config, table_device)``.
        loss: ``MultiTaskLoss(config)``, called with (logits B X T, labels B X T) and
            returning (total, per-objective loss of shape T).
        build_optimizer: ``(parameters, config) -> optimizer`` of every parameter but the
            embedding tables (the model's and the loss's).
        build_embedding_optimizer: ``config -> EmbeddingOptimizer`` of the tables.
        build_lr_schedule: ``(optimizer, config, planned steps) -> schedule or None`` of
            the dense optimizer, stepped after every optimizer step.
        after_backward: hook ``(model, config)`` run after backward, before the step.
    """

    config: Callable[[], Any]
    model: Callable[..., nn.Module]
    loss: Callable[[Any], nn.Module]
    build_optimizer: Callable[[list[nn.Parameter], Any], torch.optim.Optimizer]
    build_embedding_optimizer: Callable[[Any], EmbeddingOptimizer]
    build_lr_schedule: Callable[[torch.optim.Optimizer, Any, int], LRSchedule | None]
    after_backward: Callable[[nn.Module, Any], None]


class Optimizers:
    """Every optimizer of a run, used as one.

    Args:
        dense: the optimizer of every parameter but the embedding tables.
        fused: the tables' optimizer that TorchRec runs inside backward, or None; its
            zero_grad and step only hand its learning rate to the kernels, which
            update the tables during backward.
        replicated: the optimizer of data_parallel tables (their gradients are dense
            and averaged over ranks), or None.
    """

    def __init__(
        self,
        dense: torch.optim.Optimizer,
        fused: Any | None = None,
        replicated: torch.optim.Optimizer | None = None,
    ) -> None:
        self.dense, self.fused, self.replicated = dense, fused, replicated
        self.all = [part for part in (dense, fused, replicated) if part is not None]

    def zero_grad(self) -> None:
        for optimizer in self.all:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.all:
            optimizer.step()

    def learning_rates(self) -> list[float]:
        """The dense learning rate, then the embedding tables'."""
        return [part.param_groups[0]["lr"] for part in self.all if part.param_groups]

    def group_learning_rates(self) -> list[list[float]]:
        """Every parameter group's learning rate, per optimizer (checkpoints keep them: a
        fused optimizer's state does not carry its groups' rates)."""
        return [[group["lr"] for group in part.param_groups] for part in self.all]

    def set_group_learning_rates(self, rates: list[list[float]]) -> None:
        for part, part_rates in zip(self.all, rates, strict=True):
            for group, rate in zip(part.param_groups, part_rates, strict=True):
                group["lr"] = rate

    def scale_learning_rates(self, factor: float) -> None:
        for part in self.all:
            for group in part.param_groups:
                group["lr"] *= factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "dense": self.dense.state_dict(),
            "fused": self.fused.state_dict() if self.fused is not None else None,
            "replicated": self.replicated.state_dict() if self.replicated is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dense.load_state_dict(state["dense"])
        if self.fused is not None:
            self.fused.load_state_dict(state["fused"])
        if self.replicated is not None:
            self.replicated.load_state_dict(state["replicated"])
