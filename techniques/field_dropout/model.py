"""Field dropout: whole sparse fields dropped at random while training.

Patch for model.py: replaces EmbeddingPostprocessor, the last step of SparseArch. In
training, every field of every example is zeroed with probability
`config.field_dropout.rate` and the kept ones are scaled by 1 / (1 - rate), so the
expected input of the next arch is unchanged and evaluation and serving need no
correction (inverted dropout). The model learns not to lean on any single feature and
to predict when a feature is missing or unseen (a cold id), as in DropoutNet's input
dropout.
"""

import torch
from torch import nn

from .config import ModelConfig


class EmbeddingPostprocessor(nn.Module):
    """Field dropout: each field of each example is zeroed with probability rate.

    A field's D values are dropped or kept together; kept fields are scaled by
    1 / (1 - rate), rate = config.field_dropout.rate. Identity in eval mode.
    Call: fields B X F X D -> B X F X D.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.rate = config.field_dropout.rate

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return fields
        batch, num_fields = fields.shape[:2]
        keep = torch.rand(batch, num_fields, 1, device=fields.device) >= self.rate
        return fields * keep / (1.0 - self.rate)
