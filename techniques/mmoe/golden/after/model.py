"""The ranking model: a few named arches composed by RankingModel.

    sparse ids -> SparseArch -----------.
                                         InteractionArch -> OverArch -> TaskTowers -> logits
    dense      -> DenseArch ------------'

Shapes (used in every docstring below):
    B = batch size
    F = number of sparse features
    D = config.embedding_dim, the common width of every sparse field
    N = number of dense features
    T = number of objectives
"""

from typing import Sequence

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from .config import ModelConfig
from .features import DensePreprocessor, EmbeddingTables


class MLP(nn.Module):
    """Linear -> (BatchNorm) -> ReLU -> Dropout for every entry of layer_sizes.

    Args:
        in_dim: width of the input.
        layer_sizes: output width of each layer; empty makes the MLP the identity.
        dropout: dropout probability after every ReLU.
        batch_norm: add BatchNorm1d after every Linear (config.batch_norm).

    Call Args:
        x: tensor of shape B X in_dim.

    Returns:
        tensor of shape B X output_dim, where output_dim = layer_sizes[-1]
        (in_dim when layer_sizes is empty).
    """

    def __init__(
        self,
        in_dim: int,
        layer_sizes: Sequence[int],
        dropout: float,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for size in layer_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            # A Dropout that drops nothing (in eval, or at rate 0) is skipped rather
            # than called: at serving batch sizes a module call costs about as much
            # as a small op.
            if isinstance(layer, nn.Dropout) and (layer.p == 0.0 or not self.training):
                continue
            x = layer(x)
        return x


class EmbeddingPostprocessor(nn.Module):
    """Transform of the embedded fields, the last step of SparseArch (default: identity).

    Args:
        config: the model's ModelConfig.

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields


class SparseArch(nn.Module):
    """Embedding lookups of all sparse features, each brought to width D, then
    EmbeddingPostprocessor.

    A feature whose embedding_dim differs from D is projected to D by a
    bias-free Linear; the others pass through unchanged.

    Args:
        config: the model's ModelConfig; reads config.sparse_features and
            config.embedding_dim.
        table_device: where EmbeddingTables creates its tables ("meta": unallocated,
            for DistributedModelParallel to shard).

    Call Args:
        sparse: KeyedJaggedTensor with one key per sparse feature (config order).

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(
        self, config: ModelConfig, table_device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.embedding_tables = EmbeddingTables(config, table_device)
        self.projections = nn.ModuleList(
            (
                nn.Identity()
                if feature.embedding_dim == config.embedding_dim
                else nn.Linear(feature.embedding_dim, config.embedding_dim, bias=False)
            )
            for feature in config.sparse_features
        )
        self.postprocessor = EmbeddingPostprocessor(config)

    def forward(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embedding_tables(sparse)
        # An Identity is skipped rather than called: at serving batch sizes a module
        # call costs about as much as a small op.
        projected = [
            x if isinstance(project, nn.Identity) else project(x)
            for project, x in zip(self.projections, pooled)
        ]
        return self.postprocessor(torch.stack(projected, dim=1))


class DenseArch(nn.Module):
    """DensePreprocessor, then MLP(N, config.dense_arch_layers + (D,)).

    Without dense features (N == 0) the MLP has no layers: output_dim is 0 and
    the output is the empty B X 0 input.

    Args:
        config: the model's ModelConfig; reads config.dense_features,
            config.dense_arch_layers, config.embedding_dim and config.dropout.

    Call Args:
        dense: tensor of shape B X N.

    Returns:
        tensor of shape B X output_dim, where output_dim = D (0 when N == 0).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.preprocessor = DensePreprocessor(config)
        layer_sizes = (*config.dense_arch_layers, config.embedding_dim)
        if config.num_dense_features == 0:
            layer_sizes = ()
        self.mlp = MLP(
            config.num_dense_features, layer_sizes, config.dropout, config.batch_norm
        )
        self.output_dim = self.mlp.output_dim

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        if self.output_dim == 0:  # no dense features: nothing to compute
            return dense
        return self.mlp(self.preprocessor(dense))


class InteractionArch(nn.Module):
    """How dense and sparse features meet. Default: plain concatenation (a DNN).

    Args:
        config: the model's ModelConfig; reads config.sparse_features and
            config.embedding_dim.
        dense_dim: width of the dense arch output.

    Call Args:
        dense: tensor of shape B X dense_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X output_dim, where output_dim = dense_dim + F * D.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        self.dense_dim = dense_dim
        self.output_dim = dense_dim + config.num_sparse_features * config.embedding_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        flat = sparse.flatten(1)
        # Without dense features the concatenation would only copy the sparse fields.
        return torch.cat([dense, flat], dim=1) if self.dense_dim else flat


class OverArch(nn.Module):
    """MLP(in_dim, config.over_arch_layers) shared by all objectives.

    Args:
        config: the model's ModelConfig; reads config.over_arch_layers and
            config.dropout.
        in_dim: width of the interaction arch output.

    Call Args:
        x: tensor of shape B X in_dim.

    Returns:
        tensor of shape B X output_dim, where output_dim = over_arch_layers[-1]
        (in_dim when over_arch_layers is empty).
    """

    def __init__(self, config: ModelConfig, in_dim: int) -> None:
        super().__init__()
        self.mlp = MLP(
            in_dim, config.over_arch_layers, config.dropout, config.batch_norm
        )
        self.output_dim = self.mlp.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


# SMT technique mmoe 1.0.1: replaces extension point TaskTowers.
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
            MLP(in_dim, expert_sizes, config.dropout)
            for _ in range(config.mmoe.num_experts)
        )
        self.gates = nn.ModuleDict(
            {
                objective.name: nn.Linear(in_dim, config.mmoe.num_experts)
                for objective in config.objectives
            }
        )
        self.towers = nn.ModuleDict()
        for objective in config.objectives:
            mlp = MLP(config.mmoe.expert_dim, config.tower_layers, config.dropout)
            self.towers[objective.name] = nn.Sequential(
                mlp, nn.Linear(mlp.output_dim, 1)
            )

    def gate_weights(self, shared: torch.Tensor) -> torch.Tensor:
        """Mixture weights of every objective's gate.

        Args:
            shared: tensor of shape B X in_dim.

        Returns:
            tensor of shape B X T X E; each row sums to 1 over the experts.
        """
        return torch.stack(
            [gate(shared).softmax(dim=-1) for gate in self.gates.values()], dim=1
        )

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([expert(shared) for expert in self.experts], dim=1)
        mixtures = self.gate_weights(shared) @ experts  # B X T X H
        return torch.cat(
            [tower(mixtures[:, t]) for t, tower in enumerate(self.towers.values())],
            dim=1,
        )


class RankingModel(nn.Module):
    """Multi-objective ranking model: SparseArch and DenseArch, InteractionArch,
    OverArch, TaskTowers, plus one output bias per objective.

    The output bias is 0 here; a training run starts it where the model's mean
    prediction over the first training batches equals the train split's label rate
    (smt_runtime.training.init_output_bias), so the model predicts each objective's base
    rate from step 0, whatever TaskTowers is.

    Args:
        config: the model's ModelConfig.
        table_device: where the embedding tables are created (see SparseArch).

    Call Args:
        dense: tensor of shape B X N.
        sparse: KeyedJaggedTensor with one key per sparse feature (config order).

    Returns:
        logits, tensor of shape B X T (objective order of config).
    """

    def __init__(
        self, config: ModelConfig, table_device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.sparse_arch = SparseArch(config, table_device)
        self.dense_arch = DenseArch(config)
        self.interaction_arch = InteractionArch(config, self.dense_arch.output_dim)
        self.over_arch = OverArch(config, self.interaction_arch.output_dim)
        self.task_towers = TaskTowers(config, self.over_arch.output_dim)
        self.output_bias = nn.Parameter(torch.zeros(config.num_objectives))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        embedded = self.sparse_arch(sparse)
        dense_out = self.dense_arch(dense)
        interacted = self.interaction_arch(dense_out, embedded)
        shared = self.over_arch(interacted)
        return self.task_towers(shared) + self.output_bias
