"""Field dropout: whole sparse fields dropped at random while training.

Patch for model.py: replaces SparseArch and adds FieldDropout just before it. The
sparse arch is the template's (embedding lookups, each projected to width D),
followed by FieldDropout: in training, every field of every example is zeroed
with probability `config.field_dropout.rate` and the kept ones are scaled by
1 / (1 - rate), so the expected input of the next arch is unchanged and
evaluation and serving need no correction (inverted dropout). The model learns
not to lean on any single feature and to predict when a feature is missing or
unseen (a cold id), as in DropoutNet's input dropout.
"""

import torch
from torch import nn

from .config import ModelConfig
from .features import EmbeddingTables


class FieldDropout(nn.Module):
    """Drops whole fields: each field of each example is zeroed with probability rate.

    A field's D values are dropped or kept together; kept fields are scaled by
    1 / (1 - rate) so that every field keeps its expected value. Identity in
    eval mode.

    Args:
        rate: probability p of dropping a field, in [0, 1).

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return fields
        batch, num_fields = fields.shape[:2]
        keep = torch.rand(batch, num_fields, 1, device=fields.device) >= self.rate
        return fields * keep / (1.0 - self.rate)


class SparseArch(nn.Module):
    """Embedding lookups of all sparse features, each brought to width D, then FieldDropout.

    A feature whose embedding_dim differs from D is projected to D by a
    bias-free Linear; the others pass through unchanged. In training, each
    field of each example is then dropped with probability
    config.field_dropout.rate (kept fields scaled by 1 / (1 - rate)).

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim and config.field_dropout.rate.

    Call Args:
        sparse_values: feature name -> 1-D int64 ids, concatenated over the batch.
        sparse_offsets: feature name -> 1-D int64 of length B, bag start offsets.

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding_tables = EmbeddingTables(config)
        self.projections = nn.ModuleList(
            (
                nn.Identity()
                if feature.embedding_dim == config.embedding_dim
                else nn.Linear(feature.embedding_dim, config.embedding_dim, bias=False)
            )
            for feature in config.sparse_features
        )
        self.field_dropout = FieldDropout(config.field_dropout.rate)

    def forward(
        self,
        sparse_values: dict[str, torch.Tensor],
        sparse_offsets: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        pooled = self.embedding_tables(sparse_values, sparse_offsets)
        # An Identity is skipped rather than called: at serving batch sizes a module
        # call costs about as much as a small op.
        projected = [
            x if isinstance(project, nn.Identity) else project(x)
            for project, x in zip(self.projections, pooled)
        ]
        return self.field_dropout(torch.stack(projected, dim=1))
