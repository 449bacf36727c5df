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


# SMT technique finalmlp 1.0.0: adds FeatureGate.
class FeatureGate(nn.Module):
    """FinalMLP feature selection: x * 2 sigmoid(Linear(MLP(context))).

    The context is the flattened embeddings of context_fields (D per field), or,
    when context_fields is empty, a learned 1 X D vector shared by all examples
    (zeros at start, so every gate starts near 1), which makes the gate one
    learned weight per feature. Gate values lie in (0, 2): a feature can be
    damped or amplified.

    Args:
        in_dim: width of x, the features to gate.
        num_fields: F, number of sparse fields.
        embedding_dim: D.
        context_fields: indices (config order) of the sparse fields that form
            the context; empty for a learned context.
        gate_layers: hidden layer sizes of the gate MLP.
        dropout: dropout probability inside the gate MLP.

    Call Args:
        x: tensor of shape B X in_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X in_dim.
    """

    def __init__(
        self,
        in_dim: int,
        num_fields: int,
        embedding_dim: int,
        context_fields: Sequence[int],
        gate_layers: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        if any(not 0 <= field < num_fields for field in context_fields):
            raise ValueError(
                f"context fields {list(context_fields)} must lie in [0, {num_fields})"
            )
        self.register_buffer(
            "context_fields",
            torch.tensor(context_fields, dtype=torch.long),
            persistent=False,
        )
        self.learned_context = (
            None if context_fields else nn.Parameter(torch.zeros(1, embedding_dim))
        )
        mlp = MLP(embedding_dim * max(1, len(context_fields)), gate_layers, dropout)
        self.gate = nn.Sequential(mlp, nn.Linear(mlp.output_dim, in_dim))

    def gate_values(self, sparse: torch.Tensor) -> torch.Tensor:
        """2 sigmoid(gate(context)), values in (0, 2): tensor of shape B X in_dim, or
        1 X in_dim (the same for every example) with the learned context."""
        if self.learned_context is None:
            context = sparse[:, self.context_fields].flatten(1)
        else:
            context = self.learned_context
        return 2 * torch.sigmoid(self.gate(context))

    def forward(self, x: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return x * self.gate_values(sparse)


# SMT technique finalmlp 1.0.0: adds BilinearFusion.
class BilinearFusion(nn.Module):
    """FinalMLP multi-head bilinear fusion of two stream outputs x and y.

    K = num_heads; x_k and y_k are the k-th of K equal chunks of x and y. Every
    output unit o is

        b_o + w1_o . x + w2_o . y + sum_k x_k^T W_{k,o} y_k

    with W_{k,o} of shape (x_dim / K) X (y_dim / K). Heads cut the bilinear
    term's parameters from x_dim y_dim to x_dim y_dim / K per output.

    Args:
        x_dim: width of x.
        y_dim: width of y.
        num_heads: K; must divide x_dim and y_dim.
        output_dim: number of outputs O.

    Call Args:
        x: tensor of shape B X x_dim.
        y: tensor of shape B X y_dim.

    Returns:
        tensor of shape B X O.
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(
                f"num_heads {num_heads} must divide both stream widths {x_dim} and {y_dim}"
            )
        self.num_heads = num_heads
        self.linear_x = nn.Linear(x_dim, output_dim)  # w1 and the bias b
        self.linear_y = nn.Linear(y_dim, output_dim, bias=False)  # w2
        shape = (num_heads, x_dim // num_heads, y_dim // num_heads, output_dim)
        # Glorot normal of W seen as a (K x_dim/K y_dim/K) X O matrix.
        fan = shape[0] * shape[1] * shape[2] + output_dim
        self.bilinear = nn.Parameter(torch.randn(shape) * (2.0 / fan) ** 0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_heads = x.unflatten(1, (self.num_heads, -1))  # B X K X x_dim / K
        y_heads = y.unflatten(1, (self.num_heads, -1))  # B X K X y_dim / K
        bilinear = torch.einsum("bki,kijo,bkj->bo", x_heads, self.bilinear, y_heads)
        return self.linear_x(x) + self.linear_y(y) + bilinear


# SMT technique finalmlp 1.0.0: replaces extension point InteractionArch.
class InteractionArch(nn.Module):
    """FinalMLP: two feature-gated MLP streams over [dense, sparse], fused bilinearly.

    e = [dense, sparse.flatten(1)] of width dense_dim + F * D;
    o_1 = MLP(e * gate_1, config.finalmlp.stream1_layers),
    o_2 = MLP(e * gate_2, config.finalmlp.stream2_layers), each gate a
    FeatureGate with its own context; output = BilinearFusion(o_1, o_2).

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim, config.dropout and config.finalmlp
            (stream1_layers, stream2_layers, stream1_context, stream2_context,
            gate_layers, num_heads, fusion_dim).
        dense_dim: width of the dense arch output.

    Call Args:
        dense: tensor of shape B X dense_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X output_dim, where output_dim = config.finalmlp.fusion_dim.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        params = config.finalmlp
        num_fields, dim = config.num_sparse_features, config.embedding_dim
        in_dim = dense_dim + num_fields * dim
        self.gate1 = FeatureGate(
            in_dim,
            num_fields,
            dim,
            params.stream1_context,
            params.gate_layers,
            config.dropout,
        )
        self.gate2 = FeatureGate(
            in_dim,
            num_fields,
            dim,
            params.stream2_context,
            params.gate_layers,
            config.dropout,
        )
        self.stream1 = MLP(in_dim, params.stream1_layers, config.dropout)
        self.stream2 = MLP(in_dim, params.stream2_layers, config.dropout)
        self.fusion = BilinearFusion(
            self.stream1.output_dim,
            self.stream2.output_dim,
            params.num_heads,
            params.fusion_dim,
        )
        self.output_dim = params.fusion_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        features = torch.cat([dense, sparse.flatten(1)], dim=1)
        stream1 = self.stream1(self.gate1(features, sparse))
        stream2 = self.stream2(self.gate2(features, sparse))
        return self.fusion(stream1, stream2)


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


class TaskTowers(nn.Module):
    """One tower per objective: MLP(in_dim, config.tower_layers), then Linear(.., 1).

    Args:
        config: the model's ModelConfig; reads config.objectives,
            config.tower_layers and config.dropout.
        in_dim: width of the over arch output.

    Call Args:
        shared: tensor of shape B X in_dim.

    Returns:
        logits, tensor of shape B X T (objective order of config).
    """

    def __init__(self, config: ModelConfig, in_dim: int) -> None:
        super().__init__()
        self.towers = nn.ModuleDict()
        for objective in config.objectives:
            mlp = MLP(in_dim, config.tower_layers, config.dropout, config.batch_norm)
            self.towers[objective.name] = nn.Sequential(
                mlp, nn.Linear(mlp.output_dim, 1)
            )

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        logits = [tower(shared) for tower in self.towers.values()]
        # One objective: its B X 1 logit is the output, which cat would only copy.
        return logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)


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
