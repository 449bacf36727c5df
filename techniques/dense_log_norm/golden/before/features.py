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


class DensePreprocessor(nn.Module):
    """Dense features standardized on a log scale: (sign(x) log(1 + |x|) - center) / scale.

    Counters, prices and durations are heavy-tailed: raw values span orders of
    magnitude (one synthetic seed of feed_ctr has a feature whose 99th percentile is
    11,000 and maximum 126,000), so a few examples dominate the first layer and its
    gradients, and training diverged. The signed log brings them to a few units and
    keeps negative values apart from positive ones; center and scale then make each
    feature mean 0 and standard deviation 1 on the train split. They are buffers, not
    parameters: a training run sets them once from its first train batches (fit, called
    by train.init_dense_statistics) and they are saved with the model, so training and
    serving compute the same function for any batch. Techniques may replace this class
    (dense_log_norm learns a per-feature affine instead).

    Args:
        config: the model's ModelConfig; reads config.num_dense_features (N).

    Call Args:
        dense: tensor of shape B X N.

    Returns:
        tensor of shape B X N.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(config.num_dense_features))
        self.register_buffer("scale", torch.ones(config.num_dense_features))

    @staticmethod
    def compress(dense: torch.Tensor) -> torch.Tensor:
        """sign(x) log(1 + |x|), elementwise."""
        return torch.sign(dense) * torch.log1p(dense.abs())

    @torch.no_grad()
    def fit(self, dense: torch.Tensor) -> None:
        """Set center and scale to the mean and standard deviation of each compressed
        feature of dense (B X N); a constant feature keeps scale 1."""
        logged = self.compress(dense.double())
        spread = logged.std(dim=0, unbiased=False)
        self.center.copy_(logged.mean(dim=0))
        self.scale.copy_(torch.where(spread > 1e-6, spread, torch.ones_like(spread)))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return (self.compress(dense) - self.center) / self.scale
