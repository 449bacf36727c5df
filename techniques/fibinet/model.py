"""FiBiNET (Huang et al., RecSys 2019, arXiv:1905.09433) as the interaction arch.

Patch for model.py: replaces InteractionArch and adds SenetLayer and
BilinearInteraction just before it. A SENET layer learns a weight per field and
example (squeeze, excitation, re-weight); a bilinear interaction crosses every
pair of fields through a learned matrix, p_ij = (v_i W) * v_j. It is applied
both to the original embeddings and to the SENET-weighted ones (with separate
weights), and the two sets of crosses are concatenated with the dense arch
output: the paper's combination layer. The template's OverArch, which follows,
is the paper's deep network.
"""

import torch
from torch import nn

from .config import ModelConfig


class SenetLayer(nn.Module):
    """SENET field gating: squeeze every field to its mean, excite, re-weight.

    R = max(1, F // reduction_ratio). With E the B X F X D embeddings:

        z = mean of E over D                          B X F      (squeeze)
        a = sigmoid(W_2 ReLU(W_1 z))                  B X F      (excitation)
        V = a_i * e_i for every field i               B X F X D  (re-weight)

    W_1 is R X F and W_2 is F X R, without biases. The paper leaves the two
    activations open; the output one is a sigmoid as in SENet (Hu et al.,
    CVPR 2018) because a ReLU there switches a field off for good whenever its
    row of W_2 turns negative, which is likely with the few fields (R = 1) of
    a ranking model.

    Args:
        num_fields: F.
        reduction_ratio: r, the bottleneck ratio of the excitation.

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X F X D.
    """

    def __init__(self, num_fields: int, reduction_ratio: int) -> None:
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.Sigmoid(),
        )

    def field_weights(self, fields: torch.Tensor) -> torch.Tensor:
        """a: tensor of shape B X F, the weight of every field of every example."""
        return self.excitation(fields.mean(dim=-1))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields * self.field_weights(fields).unsqueeze(-1)


class BilinearInteraction(nn.Module):
    """Bilinear crosses of every pair of fields: p_ij = (v_i W) * v_j for i < j.

    P = F (F - 1) / 2 pairs, in the order (0, 1), (0, 2), .., (F - 2, F - 1).
    bilinear_type says which D X D matrices W there are:

        field_all           one W shared by all pairs
        field_each          one W_i per field i, used for every pair (i, j); F - 1
                            of them, as the last field is never on the left
        field_interaction   one W_ij per pair, P of them

    Args:
        num_fields: F.
        dim: D, the width of every field.
        bilinear_type: "field_all", "field_each" or "field_interaction".

    Call Args:
        fields: tensor of shape B X F X D.

    Returns:
        tensor of shape B X P X D.
    """

    def __init__(self, num_fields: int, dim: int, bilinear_type: str) -> None:
        super().__init__()
        left, right = torch.triu_indices(num_fields, num_fields, offset=1).tolist()
        matrix_of_pair = {
            "field_all": [0] * len(left),
            "field_each": left,
            "field_interaction": list(range(len(left))),
        }[bilinear_type]
        self.register_buffer("left", torch.tensor(left), persistent=False)
        self.register_buffer("right", torch.tensor(right), persistent=False)
        self.register_buffer("matrix_of_pair", torch.tensor(matrix_of_pair), persistent=False)
        num_matrices = max(matrix_of_pair) + 1
        # Glorot normal init of every D X D matrix: std sqrt(2 / (D + D)).
        self.weight = nn.Parameter(torch.randn(num_matrices, dim, dim) * dim**-0.5)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        v_i, v_j = fields[:, self.left], fields[:, self.right]  # B X P X D
        crossed = torch.einsum("bpd,pde->bpe", v_i, self.weight[self.matrix_of_pair])
        return crossed * v_j


class InteractionArch(nn.Module):
    """FiBiNET: bilinear crosses of the embeddings and of their SENET re-weighting.

    P = F (F - 1) / 2 field pairs. p = bilinear crosses of the embeddings E,
    q = bilinear crosses (other weights) of V = SENET(E); the output is the
    concatenation [dense, p, q].

    Args:
        config: the model's ModelConfig; reads config.sparse_features,
            config.embedding_dim and config.fibinet (reduction_ratio,
            bilinear_type).
        dense_dim: width of the dense arch output.

    Call Args:
        dense: tensor of shape B X dense_dim.
        sparse: tensor of shape B X F X D.

    Returns:
        tensor of shape B X output_dim, where output_dim = dense_dim + 2 P D.
    """

    def __init__(self, config: ModelConfig, dense_dim: int) -> None:
        super().__init__()
        params = config.fibinet
        num_fields, dim = config.num_sparse_features, config.embedding_dim
        self.senet = SenetLayer(num_fields, params.reduction_ratio)
        self.bilinear = BilinearInteraction(num_fields, dim, params.bilinear_type)
        self.senet_bilinear = BilinearInteraction(num_fields, dim, params.bilinear_type)
        num_pairs = num_fields * (num_fields - 1) // 2
        self.output_dim = dense_dim + 2 * num_pairs * dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        p = self.bilinear(sparse)
        q = self.senet_bilinear(self.senet(sparse))
        return torch.cat([dense, p.flatten(1), q.flatten(1)], dim=1)
