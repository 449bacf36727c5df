"""Feature modules: embedding tables for sparse features, preprocessing for dense ones.

Shapes: B = batch size, N = number of dense features, d_i = embedding_dim of sparse
feature i (before SparseArch projects it to the model's common width D).
"""

import math

import torch
from torch import nn

from .config import ModelConfig


class EmbeddingTables(nn.Module):
    """One nn.EmbeddingBag per sparse feature, in config order.

    Single-valued features use sum pooling (a bag of one id is that id's row),
    multi-valued features mean pooling. Rows start uniform in
    [-1/sqrt(cardinality), 1/sqrt(cardinality)], like TorchRec's default. Gradients
    are sparse: a training step touches only the rows its batch used.

    Args:
        config: the model's ModelConfig; reads config.sparse_features.

    Call Args:
        sparse_values: feature name -> 1-D int64 ids, concatenated over the batch.
        sparse_offsets: feature name -> 1-D int64 of length B, bag start offsets.

    Returns:
        list of F tensors, the i-th of shape B X d_i.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.bags = nn.ModuleDict()
        for feature in config.sparse_features:
            bag = nn.EmbeddingBag(
                feature.cardinality,
                feature.embedding_dim,
                mode="mean" if feature.multi_valued else "sum",
                sparse=True,
            )
            bound = 1.0 / math.sqrt(feature.cardinality)
            nn.init.uniform_(bag.weight, -bound, bound)
            self.bags[feature.name] = bag

    def forward(
        self,
        sparse_values: dict[str, torch.Tensor],
        sparse_offsets: dict[str, torch.Tensor],
    ) -> list[torch.Tensor]:
        return [
            bag(sparse_values[name], sparse_offsets[name])
            for name, bag in self.bags.items()
        ]


class DensePreprocessor(nn.Module):
    """Dense features as they arrive: the identity.

    The template does no dense preprocessing, so every transform of the raw
    values is a technique that can be compared against this baseline: heavy-tailed
    counters and durations usually train better compressed, which the
    dense_log_norm technique does (signed log1p and a learned per-feature affine).

    Args:
        config: the model's ModelConfig (unused by this default).

    Call Args:
        dense: tensor of shape B X N.

    Returns:
        dense itself, shape B X N.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense
