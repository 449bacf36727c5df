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


# SMT technique fibinet 1.0.0: adds SenetLayer.
class SenetLayer(nn.Module):
    """SENET field gating: squeeze every field to its mean, excite, re-weight.

    R = max(1, F // reduction_ratio). With E the B X F X D embeddings:

        z = mean of E over D                          B X F      (squeeze)
        a = sigmoid(W_2 ReLU(W_1 z))                  B X F      (excitation)
        V = a_i * e_i for every field i               B X F X D  (re-weight)

    W_1 is R X F and W_2 is F X R, without biases. The paper leaves the two
    activations open; the output one is a sigmoid as in SENet (Hu et al.,
    CVPR 2018) because a ReLU there switches a field off for good whenever its
    row of W_2 turns negative, which is likely with the few fields (R = 1) of
    a ranking model.

    Args:
        num_fields: F.
        reduction_ratio: r, the bottleneck ratio of the excitation.

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(self, num_fields: int, reduction_ratio: int) -> None:
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.Sigmoid(),
        )

    def field_weights(self, fields: torch.Tensor) -> torch.Tensor:
        """a: tensor of shape B X F, the weight of every field of every example."""
        return self.excitation(fields.mean(dim=-1))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields * self.field_weights(fields).unsqueeze(-1)


# SMT technique fibinet 1.0.0: adds BilinearInteraction.
class BilinearInteraction(nn.Module):
    """Bilinear crosses of every pair of fields: p_ij = (v_i W) * v_j for i < j.

    P = F (F - 1) / 2 pairs, in the order (0, 1), (0, 2), .., (F - 2, F - 1).
    bilinear_type says which D X D matrices W there are:

        field_all           one W shared by all pairs
        field_each          one W_i per field i, used for every pair (i, j); F - 1
                            of them, as the last field is never on the left
        field_interaction   one W_ij per pair, P of them

    Args:
        num_fields: F.
        dim: D, the width of every field.
        bilinear_type: "field_all", "field_each" or "field_interaction".

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X P X D.
    """

    def __init__(self, num_fields: int, dim: int, bilinear_type: str) -> None:
        super().__init__()
        left, right = torch.triu_indices(num_fields, num_fields, offset=1).tolist()
        matrix_of_pair = {
            "field_all": [0] * len(left),
            "field_each": left,
            "field_interaction": list(range(len(left))),
        }[bilinear_type]
        self.register_buffer("left", torch.tensor(left), persistent=False)
        self.register_buffer("right", torch.tensor(right), persistent=False)
        self.register_buffer(
            "matrix_of_pair", torch.tensor(matrix_of_pair), persistent=False
        )
        num_matrices = max(matrix_of_pair) + 1
        # Glorot normal init of every D X D matrix: std sqrt(2 / (D + D)).
        self.weight = nn.Parameter(torch.randn(num_matrices, dim, dim) * dim**-0.5)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        v_i, v_j = fields[:, self.left], fields[:, self.right]  # B X P X D
        crossed = torch.einsum("bpd,pde->bpe", v_i, self.weight[self.matrix_of_pair])
        return crossed * v_j


# SMT technique fibinet 1.0.0: replaces extension point InteractionArch.
class InteractionArch(nn.Module):
    """FiBiNET: bilinear crosses of the embeddings and of their SENET re-weighting.

    P = F (F - 1) / 2 field pairs. p = bilinear crosses of the embeddings E,
    q = bilinear crosses (other weights) of V = SENET(E); the output is the
    concatenation [dense, p, q].

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim and config.fibinet (reduction_ratio,
            bilinear_type).
        dense_dim: width of the dense arch output.

    Call Args:
        dense: tensor of shape B X dense_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X output_dim, where output_dim = dense_dim + 2 P D.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        params = config.fibinet
        num_fields, dim = config.num_sparse_features, config.embedding_dim
        self.senet = SenetLayer(num_fields, params.reduction_ratio)
        self.bilinear = BilinearInteraction(num_fields, dim, params.bilinear_type)
        self.senet_bilinear = BilinearInteraction(num_fields, dim, params.bilinear_type)
        num_pairs = num_fields * (num_fields - 1) // 2
        self.output_dim = dense_dim + 2 * num_pairs * dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        p = self.bilinear(sparse)
        q = self.senet_bilinear(self.senet(sparse))
        return torch.cat([dense, p.flatten(1), q.flatten(1)], dim=1)


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
