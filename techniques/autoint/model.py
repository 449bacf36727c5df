"""AutoInt (Song et al., CIKM 2019, arXiv:1810.11921) as the interaction arch.

Patch for model.py: replaces InteractionArch and adds InteractingLayer just before
it. The fields are the F sparse embeddings plus, when the model has dense
features, the dense arch output as one more field. `config.autoint.num_layers`
interacting layers let every field attend to every other one with multi-head
self-attention and a residual connection, so higher-order feature interactions
are built layer by layer. The final field representations are flattened and
concatenated with the dense arch output; the template's OverArch follows.
"""

import torch
from torch import nn

from .config import ModelConfig


class InteractingLayer(nn.Module):
    """One AutoInt interacting layer: multi-head self-attention across fields, plus a residual.

    M = number of fields, H = num_heads, A = attention_dim (d' in the paper).
    For head h and fields m, k (eq. 5-8 of the paper, no biases):

        alpha^h_{m,k} = softmax over k of <W_Q^h e_m, W_K^h e_k>
        e^h_m = sum_k alpha^h_{m,k} W_V^h e_k
        out_m = ReLU([e^1_m, ..., e^H_m] + W_Res e_m)

    Args:
        in_dim: width of every input field.
        num_heads: H.
        attention_dim: A, the width of every head.

    Call Args:
        fields: tensor of shape B X M X in_dim.

    Returns:
        tensor of shape B X M X output_dim, where output_dim = H * A.
    """

    def __init__(self, in_dim: int, num_heads: int, attention_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.output_dim = num_heads * attention_dim
        self.query = nn.Linear(in_dim, self.output_dim, bias=False)
        self.key = nn.Linear(in_dim, self.output_dim, bias=False)
        self.value = nn.Linear(in_dim, self.output_dim, bias=False)
        self.residual = nn.Linear(in_dim, self.output_dim, bias=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B X M X (H * A) -> B X H X M X A."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def attention_weights(self, fields: torch.Tensor) -> torch.Tensor:
        """alpha of every head: tensor of shape B X H X M X M; each row sums to 1 over k."""
        queries, keys = self.split_heads(self.query(fields)), self.split_heads(self.key(fields))
        return (queries @ keys.transpose(-1, -2)).softmax(dim=-1)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        heads = self.attention_weights(fields) @ self.split_heads(self.value(fields))
        return torch.relu(heads.transpose(1, 2).flatten(2) + self.residual(fields))


class InteractionArch(nn.Module):
    """AutoInt: stacked interacting layers over the fields, next to the dense arch output.

    The fields are the dense arch output as one field (only when dense_dim > 0;
    projected to width D by a bias-free Linear, the paper's embedding of a
    numerical field) followed by the F sparse embeddings: M = F + 1 fields with
    dense features, M = F without. Layer 1 reads width D, every layer outputs
    W = num_heads * attention_dim per field.

    The dense projection starts at zero: an MLP output dwarfs freshly
    initialised embeddings and would otherwise dominate every field's
    attention before training; the dense field joins as the projection learns,
    while the over arch reads the dense output directly from the start.

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim and config.autoint (num_layers, num_heads,
            attention_dim).
        dense_dim: width of the dense arch output.

    Call Args:
        dense: tensor of shape B X dense_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X output_dim, [dense, flattened fields of the last
        layer], where output_dim = dense_dim + M * W.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        params = config.autoint
        width = params.num_heads * params.attention_dim
        self.dense_field: nn.Linear | None = None
        if dense_dim > 0:
            self.dense_field = nn.Linear(dense_dim, config.embedding_dim, bias=False)
            nn.init.zeros_(self.dense_field.weight)
        self.layers = nn.ModuleList(
            InteractingLayer(
                config.embedding_dim if i == 0 else width, params.num_heads, params.attention_dim
            )
            for i in range(params.num_layers)
        )
        num_fields = config.num_sparse_features + int(dense_dim > 0)
        self.output_dim = dense_dim + num_fields * width

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = sparse
        if self.dense_field is not None:
            fields = torch.cat([self.dense_field(dense).unsqueeze(1), sparse], dim=1)
        for layer in self.layers:
            fields = layer(fields)
        return torch.cat([dense, fields.flatten(1)], dim=1)
