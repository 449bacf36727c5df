"""Feature modules: embedding tables for sparse features, preprocessing for dense ones.

Shapes: B = batch size, N = number of dense features, d_i = embedding_dim of sparse
feature i (before SparseArch projects it to the model's common width D).
"""

import torch
from smt_runtime.sparse import table_configs
from smt_runtime.unknown_ids import UnknownIds
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from .config import ModelConfig


class EmbeddingTables(nn.Module):
    """One embedding table per sparse feature, in config order, as one TorchRec
    EmbeddingBagCollection: in one process it looks the ids up itself; under torchrun,
    DistributedModelParallel shards its tables across the processes (smt_runtime.sparse).

    A single-valued feature's bag holds one id (sum pooling: the id's row); a
    multi-valued feature's bag is mean-pooled (an empty bag gives zeros). Rows start
    normal with standard deviation config.embedding_init_std (uniform in
    [-1/sqrt(cardinality), 1/sqrt(cardinality)] when it is None), drawn the same way
    however the tables are sharded (smt_runtime.sparse.init_tables).
    Before the lookup, UnknownIds sends ids rarer than config.min_count in the training
    split (and ids outside the cardinality) to their feature's unknown row, a learned
    row: the spec's unknown id, or one more row at the end of the table.

    Args:
        config: the model's ModelConfig; reads config.sparse_features.
        device: where the tables are created; "meta" leaves them unallocated, for
            DistributedModelParallel to allocate each process's shards.

    Call Args:
        features: KeyedJaggedTensor with one key per sparse feature (config order).

    Returns:
        list of F tensors, the i-th of shape B X d_i.
    """

    def __init__(
        self, config: ModelConfig, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.names = [feature.name for feature in config.sparse_features]
        self.unknown_ids = UnknownIds(config)
        self.collection = EmbeddingBagCollection(
            table_configs(config), device=torch.device(device or "cpu")
        )

    def forward(self, features: KeyedJaggedTensor) -> list[torch.Tensor]:
        pooled = self.collection(self.unknown_ids(features)).to_dict()
        return [pooled[name] for name in self.names]


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
