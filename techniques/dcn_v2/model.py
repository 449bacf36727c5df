"""DCNv2 cross network (Wang et al., WWW 2021, arXiv:2008.13535) as the interaction arch.

Patch for model.py: replaces InteractionArch and adds CrossLayer just before it.
The cross network is the paper's stacked structure: x0 = [dense, flattened sparse]
goes through `config.dcn_v2.num_cross_layers` cross layers, and the template's
OverArch, which already follows the interaction arch, is the deep network on top.
`config.dcn_v2.low_rank` = r > 0 switches every layer to the paper's low-rank
W = U V^T (2 d r + d parameters per layer instead of d^2 + d).
"""

import torch
from torch import nn

from .config import ModelConfig


class CrossLayer(nn.Module):
    """One DCNv2 cross layer: x_{l+1} = x0 * (W x_l + b) + x_l.

    Args:
        dim: width d of x0 and x_l.
        low_rank: 0 for a full d X d matrix W; r > 0 for W = U V^T with U and V
            of shape d X r.

    Call Args:
        x0: tensor of shape B X d, the input of the cross network.
        x: tensor of shape B X d, the output x_l of the previous layer.

    Returns:
        tensor of shape B X d.
    """

    def __init__(self, dim: int, low_rank: int) -> None:
        super().__init__()
        self.projection: nn.Module
        if low_rank > 0:
            # V^T (no bias), then U with the bias b: W x + b = U (V^T x) + b.
            self.projection = nn.Sequential(nn.Linear(dim, low_rank, bias=False), nn.Linear(low_rank, dim))
        else:
            self.projection = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # x + x0 * (W x + b) in one fused op: a product and a sum without a B X d temporary.
        return torch.addcmul(x, x0, self.projection(x))


class InteractionArch(nn.Module):
    """DCNv2 cross network over the concatenated dense and sparse features.

    x0 = [dense, sparse.flatten(1)] of width d = dense_dim + F * D, then
    `config.dcn_v2.num_cross_layers` stacked CrossLayers, each d -> d.

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim and config.dcn_v2 (num_cross_layers, low_rank).
        dense_dim: width of the dense arch output.

    Call: (dense B X dense_dim, sparse B X F X D) -> B X d; output_dim = d.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        self.dense_dim = dense_dim
        self.output_dim = dense_dim + config.num_sparse_features * config.embedding_dim
        self.cross_layers = nn.ModuleList(
            CrossLayer(self.output_dim, config.dcn_v2.low_rank) for _ in range(config.dcn_v2.num_cross_layers)
        )

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = sparse.flatten(1)
        if self.dense_dim:  # without dense features the concatenation would only copy x0
            x0 = torch.cat([dense, x0], dim=1)
        x = x0
        for cross_layer in self.cross_layers:
            x = cross_layer(x0, x)
        return x
