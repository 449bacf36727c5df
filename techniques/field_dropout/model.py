"""Field dropout. Patch for model.py: replaces EmbeddingPostprocessor, the last step of SparseArch.

In training each field of each example is zeroed with probability rate, the kept ones scaled by
1 / (1 - rate) (inverted dropout: eval and serving need no correction), so the model learns to
predict when a feature is missing or unseen (a cold id), as in DropoutNet's input dropout.
"""

import torch
from torch import nn

from .config import ModelConfig


class EmbeddingPostprocessor(nn.Module):
    """In training, zeroes each field of each example of fields (B X F X D) with probability
    config.field_dropout.rate and scales the kept ones by 1 / (1 - rate); identity in eval."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.rate = config.field_dropout.rate

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return fields
        batch, num_fields = fields.shape[:2]
        keep = torch.rand(batch, num_fields, 1, device=fields.device) >= self.rate
        return fields * keep / (1.0 - self.rate)
