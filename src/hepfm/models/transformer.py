"""ObjectTransformer: a transformer encoder over the objects of an event, with pairwise attention bias.

Objects are embedded from the same 13 node inputs as GraphNet (scaled kinematics, btag, charge, one-hot
type). Each pair (i, j) contributes (Delta eta, Delta phi, Delta R, log m_ij) through a small MLP that
gives one additive attention bias per head (as in ParT); padded objects are masked as keys and left out
of the pooling. Pre-LayerNorm blocks; a masked mean over objects, then a decoder MLP, gives the latent.
"""

from __future__ import annotations

import torch
from torch import nn

from hepfm.data.features import NODE_INPUTS, edge_features
from hepfm.errors import ConfigurationError
from hepfm.io.schema import ETA, PHI, PT
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM, MLP
from hepfm.models.registry import register_model
from hepfm.physics import kinematics as kin

PAIR_INPUTS = 4


class AttentionBlock(nn.Module):
    """Pre-LayerNorm self-attention with an additive bias [B, H, M, M], then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.heads = heads
        self.dropout = dropout

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, m, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, m, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                                         dropout_p=self.dropout if self.training else 0.0)
        h = h + self.proj(att.transpose(1, 2).reshape(b, m, d))
        return h + self.ff(self.norm2(h))


@register_model
class ObjectTransformer(Backbone):
    """Transformer backbone; ``dim``, ``heads``, ``layers`` set its size (defaults ~0.2M parameters)."""

    name = "transformer"

    def __init__(self, n_outputs: int = 1, dim: int = 64, heads: int = 4, layers: int = 4, ff_mult: int = 4,
                 pair_bias: bool = True, dropout: float = 0.0, mask_token: bool = False):
        config = dict(dim=dim, heads=heads, layers=layers, ff_mult=ff_mult, pair_bias=pair_bias, dropout=dropout)
        super().__init__(n_outputs, {**config, "mask_token": True} if mask_token else config)
        if dim % heads:
            raise ConfigurationError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.embed = MLP(NODE_INPUTS, dim, depth=2)
        self.pair_mlp = (nn.Sequential(nn.Linear(PAIR_INPUTS, 32), nn.GELU(), nn.Linear(32, heads))
                         if pair_bias else None)
        self.blocks = nn.ModuleList([AttentionBlock(dim, heads, ff_mult, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.decoder = MLP(dim, LATENT_DIM, depth=2)
        self.heads = heads
        self.object_width = dim
        self._init_mask_token(mask_token, dim)

    def _attention_bias(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, m = mask.shape
        key_block = torch.zeros((b, 1, 1, m), device=x.device, dtype=torch.float32)
        key_block = key_block.masked_fill(~mask[:, None, None, :], float("-inf"))
        if self.pair_mlp is None:
            return key_block.expand(b, self.heads, m, m)
        eta, phi, pt = x[..., ETA], x[..., PHI], x[..., PT]
        sep = edge_features(eta[:, :, None], phi[:, :, None], eta[:, None, :], phi[:, None, :])
        mass = kin.pair_mass(pt[:, :, None], eta[:, :, None], phi[:, :, None], pt[:, None, :], eta[:, None, :],
                             phi[:, None, :])
        pair = torch.cat([sep, (1.0 + mass).log().unsqueeze(-1)], dim=-1)
        bias = self.pair_mlp(pair).permute(0, 3, 1, 2).float()  # [B, H, M, M]
        return bias + key_block

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None,
               extra: torch.Tensor | None = None) -> torch.Tensor:
        """The latent; ``hidden`` [B, M] marks objects replaced by the mask token (masked-object task);
        ``extra`` [B, M, dim], if given, is added to the object embeddings (jet embeddings of a hierarchical
        model)."""
        return self.encode_objects(x, mask, hidden, extra)[0]

    def encode_objects(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None,
                       extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latent, each object's normalised embedding after the last block [B, M, dim], zeros on padding)."""
        mask = mask.bool()
        h = self._hide(self.embed(self.scaling.node_features(x)), hidden)
        if extra is not None:
            h = h + extra
        bias = self._attention_bias(x, mask)
        for block in self.blocks:
            h = block(h, bias)
        h = self.norm(h) * mask.unsqueeze(-1)
        pooled = h.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1)
        return self.decoder(pooled), h
