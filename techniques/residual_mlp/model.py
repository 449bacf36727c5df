"""LayerNorm + residual MLP blocks.

Patch for model.py: replaces MLP and adds ResidualBlock just before it. Every
MLP of the model (dense arch, over arch, task towers, and any technique that
builds on MLP) becomes a stack of pre-LayerNorm residual blocks with the same
constructor, output_dim and shapes as the template's MLP.
"""

from typing import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """One pre-norm residual layer: Dropout(ReLU(Linear(LayerNorm(x)))) + skip(x).

    skip(x) is x when in_dim == out_dim, otherwise a bias-free Linear(in_dim,
    out_dim). The skip path sees x before LayerNorm, so nothing is lost when
    LayerNorm is degenerate (e.g. a single dense feature normalizes to 0).

    Args:
        in_dim: width of the input.
        out_dim: width of the output.
        dropout: dropout probability after the ReLU.

    Call Args:
        x: tensor of shape B X in_dim.

    Returns:
        tensor of shape B X out_dim.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.linear = nn.Linear(in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.skip: nn.Module = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.relu(self.linear(self.norm(x)))) + self.skip(x)


class MLP(nn.Module):
    """Stack of ResidualBlocks, one per entry of layer_sizes.

    Args:
        in_dim: width of the input.
        layer_sizes: output width of each block; empty makes the MLP the identity.
        dropout: dropout probability inside every block.
        batch_norm: accepted for the template's MLP contract and ignored: every
            block already normalizes its input with LayerNorm.

    Call: x B X in_dim -> B X output_dim, output_dim = layer_sizes[-1] (in_dim
    when layer_sizes is empty).
    """

    def __init__(
        self, in_dim: int, layer_sizes: Sequence[int], dropout: float, batch_norm: bool = False
    ) -> None:
        super().__init__()
        widths = (in_dim, *layer_sizes)
        self.blocks = nn.Sequential(*(ResidualBlock(i, o, dropout) for i, o in zip(widths, widths[1:])))
        self.output_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
