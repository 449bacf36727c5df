"""Feature modules: embedding tables for sparse features, preprocessing for dense ones.

Shapes: B = batch size, N = number of dense features, d_i = embedding_dim of sparse
feature i (before SparseArch projects it to the model's common width D).
"""

import math

import torch
from torch import nn

from .config import ModelConfig


class EmbeddingTables(nn.Module):
    """One embedding table per sparse feature, in config order.

    A single-valued feature (exactly one id per example) is an nn.Embedding: its
    lookup is a plain row gather, the cheapest op for the common case, and its
    sparse_offsets entry (0, 1, ..., B - 1) is not read. A multi-valued feature is
    an nn.EmbeddingBag that mean-pools its bag of ids. Rows start uniform in
    [-1/sqrt(cardinality), 1/sqrt(cardinality)], like TorchRec's default. Both kinds
    have sparse gradients: a training step touches only the rows its batch used.

    Args:
        config: the model's ModelConfig; reads config.sparse_features.

    Call Args:
        sparse_values: feature name -> 1-D int64 ids, concatenated over the batch
            (B ids for a single-valued feature).
        sparse_offsets: feature name -> 1-D int64 of length B, bag start offsets.

    Returns:
        list of F tensors, the i-th of shape B X d_i.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.tables = nn.ModuleDict()
        for feature in config.sparse_features:
            table: nn.Embedding | nn.EmbeddingBag
            if feature.multi_valued:
                table = nn.EmbeddingBag(
                    feature.cardinality,
                    feature.embedding_dim,
                    mode="mean",
                    sparse=True,
                )
            else:
                table = nn.Embedding(
                    feature.cardinality, feature.embedding_dim, sparse=True
                )
            bound = 1.0 / math.sqrt(feature.cardinality)
            nn.init.uniform_(table.weight, -bound, bound)
            self.tables[feature.name] = table

    def forward(
        self,
        sparse_values: dict[str, torch.Tensor],
        sparse_offsets: dict[str, torch.Tensor],
    ) -> list[torch.Tensor]:
        pooled = []
        for name, table in self.tables.items():
            if isinstance(table, nn.EmbeddingBag):
                pooled.append(table(sparse_values[name], sparse_offsets[name]))
            else:
                pooled.append(table(sparse_values[name]))
        return pooled


# SMT technique dense_log_norm 1.0.0: replaces extension point DensePreprocessor.
class DensePreprocessor(nn.Module):
    """Signed log1p, then a learned per-feature affine: a * sign(x) log(1 + |x|) + b.

    Args:
        config: the model's ModelConfig; reads config.num_dense_features (N).

    Call Args:
        dense: tensor of shape B X N.

    Returns:
        tensor of shape B X N.

    Attributes:
        scale: parameter a of shape N, initialised to 1.
        shift: parameter b of shape N, initialised to 0.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(config.num_dense_features))
        self.shift = nn.Parameter(torch.zeros(config.num_dense_features))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.scale * (torch.sign(dense) * torch.log1p(dense.abs())) + self.shift
