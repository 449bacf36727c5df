"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) as the task towers.

Patch for model.py: replaces TaskTowers. `config.mmoe.num_experts` expert MLPs
read the shared representation; every objective has its own softmax gate over
the experts and its own tower on the gated mixture. Experts are built with the
model's MLP class, so they follow whatever MLP the model uses.
"""

import torch
from torch import nn

from .config import ModelConfig


class TaskTowers(nn.Module):
    """MMoE: experts shared by all objectives, one gate and one tower per objective.

    E = config.mmoe.num_experts, H = config.mmoe.expert_dim. Each expert is
    MLP(in_dim, config.mmoe.expert_layers + (H,)); the gate of objective t is
    softmax(Linear(in_dim, E)); tower t is MLP(H, config.tower_layers) then
    Linear(.., 1) applied to sum_e gate_t[e] * expert_e.

    Args:
        config: the model's ModelConfig; reads config.objectives,
            config.tower_layers, config.dropout and config.mmoe (num_experts,
            expert_dim, expert_layers).
        in_dim: width of the over arch output.

    Call: shared B X in_dim -> logits B X T (objective order of config).
    """

    def __init__(self, config: ModelConfig, in_dim: int) -> None:
        super().__init__()
        expert_sizes = (*config.mmoe.expert_layers, config.mmoe.expert_dim)
        self.experts = nn.ModuleList(
            MLP(in_dim, expert_sizes, config.dropout) for _ in range(config.mmoe.num_experts)
        )
        self.gates = nn.ModuleDict(
            {objective.name: nn.Linear(in_dim, config.mmoe.num_experts) for objective in config.objectives}
        )
        self.towers = nn.ModuleDict()
        for objective in config.objectives:
            mlp = MLP(config.mmoe.expert_dim, config.tower_layers, config.dropout)
            self.towers[objective.name] = nn.Sequential(mlp, nn.Linear(mlp.output_dim, 1))

    def gate_weights(self, shared: torch.Tensor) -> torch.Tensor:
        """Mixture weights of every objective's gate.

        Args:
            shared: tensor of shape B X in_dim.

        Returns:
            tensor of shape B X T X E; each row sums to 1 over the experts.
        """
        return torch.stack([gate(shared).softmax(dim=-1) for gate in self.gates.values()], dim=1)

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([expert(shared) for expert in self.experts], dim=1)
        mixtures = self.gate_weights(shared) @ experts  # B X T X H
        return torch.cat([tower(mixtures[:, t]) for t, tower in enumerate(self.towers.values())], dim=1)
