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
