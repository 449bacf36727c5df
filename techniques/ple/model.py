"""Progressive Layered Extraction (Tang et al., RecSys 2020) as the task towers.

Patch for model.py: replaces TaskTowers and adds ExtractionLayer just before it.
Every extraction layer holds `config.ple.experts_per_task` experts per objective
and `config.ple.shared_experts` shared experts. The gate of objective t mixes
only its own experts and the shared ones (Customized Gate Control, CGC); below
the last layer a shared gate mixes all experts into the input of the next
layer's shared experts, so objective-specific and shared knowledge are
separated progressively over `config.ple.num_levels` layers. Each objective's
tower reads its own gated output of the last layer. Experts are built with the
model's MLP class, so they follow whatever MLP the model uses.
"""

from typing import Sequence

import torch
from torch import nn

from .config import ModelConfig


class ExtractionLayer(nn.Module):
    """One PLE extraction layer: per-objective and shared experts, gated per objective.

    E = experts_per_task, S = shared_experts, H = expert_sizes[-1]. Row t < T of
    the input feeds the experts of objective t and its gate; row T feeds the
    shared experts and the shared gate. With x_t the input of objective t and
    x_s the shared input:

        out_t = softmax(Linear(x_t)) @ [experts of t (x_t), shared experts (x_s)]
        out_s = softmax(Linear(x_s)) @ [experts of every objective, shared experts]

    out_s, the input of the next layer's shared experts, is computed only when
    with_shared_output (every layer but the last).

    Args:
        num_tasks: T, number of objectives.
        in_dim: width of every input row.
        expert_sizes: layer sizes of every expert MLP; the last one is H.
        experts_per_task: E, experts of each objective.
        shared_experts: S, experts shared by all objectives.
        dropout: dropout probability inside the experts.
        with_shared_output: also compute out_s (False for the last layer).

    Call Args:
        inputs: tensor of shape B X (T + 1) X in_dim: x_1 .. x_T, then x_s.

    Returns:
        tensor of shape B X (T + 1) X H (out_1 .. out_T, out_s) when
        with_shared_output, else B X T X H.
    """

    def __init__(
        self,
        num_tasks: int,
        in_dim: int,
        expert_sizes: Sequence[int],
        experts_per_task: int,
        shared_experts: int,
        dropout: float,
        with_shared_output: bool,
    ) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLP(in_dim, expert_sizes, dropout) for _ in range(experts_per_task))
            for _ in range(num_tasks)
        )
        self.shared_experts = nn.ModuleList(MLP(in_dim, expert_sizes, dropout) for _ in range(shared_experts))
        self.task_gates = nn.ModuleList(
            nn.Linear(in_dim, experts_per_task + shared_experts) for _ in range(num_tasks)
        )
        self.shared_gate = (
            nn.Linear(in_dim, num_tasks * experts_per_task + shared_experts) if with_shared_output else None
        )
        self.output_dim = expert_sizes[-1]

    @staticmethod
    def mix(gate: nn.Linear, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Gated mixture softmax(gate(x)) @ experts.

        Args:
            gate: Linear(width of x, K).
            x: tensor of shape B X width, the gate's input.
            experts: tensor of shape B X K X H, the K expert outputs to mix.

        Returns:
            tensor of shape B X H.
        """
        weights = gate(x).softmax(dim=-1).unsqueeze(1)
        return (weights @ experts).squeeze(1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x_s = inputs[:, -1]
        shared = torch.stack([expert(x_s) for expert in self.shared_experts], dim=1)
        outputs, own_experts = [], []
        for t, (experts, gate) in enumerate(zip(self.task_experts, self.task_gates)):
            x_t = inputs[:, t]
            own = torch.stack([expert(x_t) for expert in experts], dim=1)
            outputs.append(self.mix(gate, x_t, torch.cat([own, shared], dim=1)))
            own_experts.append(own)
        if self.shared_gate is not None:
            every_expert = torch.cat([*own_experts, shared], dim=1)
            outputs.append(self.mix(self.shared_gate, x_s, every_expert))
        return torch.stack(outputs, dim=1)


class TaskTowers(nn.Module):
    """PLE: `config.ple.num_levels` extraction layers, then one tower per objective.

    H = config.ple.expert_dim. Every expert is MLP(.., config.ple.expert_layers
    + (H,)). The first layer reads the over arch output in every row (each
    objective's and the shared input); each following layer reads the previous
    layer's outputs. Tower t is MLP(H, config.tower_layers) then Linear(.., 1)
    applied to objective t's output of the last layer.

    Args:
        config: the model's ModelConfig; reads config.objectives,
            config.tower_layers, config.dropout and config.ple (num_levels,
            experts_per_task, shared_experts, expert_dim, expert_layers).
        in_dim: width of the over arch output.

    Call: shared B X in_dim -> logits B X T (objective order of config).
    """

    def __init__(self, config: ModelConfig, in_dim: int) -> None:
        super().__init__()
        params = config.ple
        expert_sizes = (*params.expert_layers, params.expert_dim)
        self.levels = nn.ModuleList(
            ExtractionLayer(
                num_tasks=config.num_objectives,
                in_dim=in_dim if level == 0 else params.expert_dim,
                expert_sizes=expert_sizes,
                experts_per_task=params.experts_per_task,
                shared_experts=params.shared_experts,
                dropout=config.dropout,
                with_shared_output=level < params.num_levels - 1,
            )
            for level in range(params.num_levels)
        )
        self.towers = nn.ModuleDict()
        for objective in config.objectives:
            mlp = MLP(params.expert_dim, config.tower_layers, config.dropout)
            self.towers[objective.name] = nn.Sequential(mlp, nn.Linear(mlp.output_dim, 1))

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        # Every objective's input and the shared input start as the over arch output.
        x = shared.unsqueeze(1).expand(-1, len(self.towers) + 1, -1)
        for level in self.levels:
            x = level(x)
        return torch.cat([tower(x[:, t]) for t, tower in enumerate(self.towers.values())], dim=1)
