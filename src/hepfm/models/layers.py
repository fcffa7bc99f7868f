"""Building blocks shared by the backbones: the paper's MLP and the classification head."""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 64


class MLP(nn.Module):
    """``depth`` Linear layers of width ``width`` with ReLU between them, then LayerNorm (arXiv:2412.10665).

    :meth:`first_layer_parts` applies the first Linear to the pieces of a concatenated input separately,
    W [a; b; c] = W_a a + W_b b + W_c c, so that a piece shared by many rows (a node's features, shared by
    all its edges) is multiplied once and gathered afterwards.
    """

    def __init__(self, n_in: int, width: int = LATENT_DIM, depth: int = 4, layer_norm: bool = True):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(n_in if k == 0 else width, width) for k in range(depth)])
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.linears[0](x))

    def rest(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the first Linear's output."""
        for lin in self.linears[1:]:
            h = lin(torch.relu(h))
        return self.norm(h)

    def first_layer_parts(self, parts: list[torch.Tensor], bias_on: int) -> list[torch.Tensor]:
        """The first Linear applied to each piece of the concatenated input; the bias goes to piece ``bias_on``."""
        lin = self.linears[0]
        out, start = [], 0
        for k, part in enumerate(parts):
            w = lin.weight[:, start:start + part.shape[-1]]
            start += part.shape[-1]
            out.append(nn.functional.linear(part, w, lin.bias if k == bias_on else None))
        if start != lin.in_features:
            raise ValueError(f"parts have {start} features in all, the layer takes {lin.in_features}")
        return out
