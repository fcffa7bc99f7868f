"""Jet backbones: models of one jet's constituents, x [B, K, 6] (see ``CONSTITUENT_FEATURES``) and mask [B, K].

Both expose ``encode(x, mask) -> [B, 64]`` like the event backbones, so a jet embedding can stand in for
a jet in an event model.

* :class:`JetTransformer` ("jet_transformer"), in the style of Particle Transformer (arXiv:2202.03772):
  particle embeddings go through self-attention blocks whose attention logits get a per-head bias from
  the pairwise features ln kT, ln z, ln Delta R and ln m^2 of each constituent pair (an MLP on the four
  values); a class token then attends to the particles (one class-attention block), and a decoder MLP
  on it gives the latent. Size "small": dim 64, 4 heads, 4 particle blocks.
* :class:`DeepSets` ("deepsets"), the particle-flow-network baseline (arXiv:1810.05165): an MLP per
  constituent, summed over the jet, then an MLP. It packs the real constituents into [N, F] (as
  GraphNet packs its edges), so padding costs nothing.

Per-constituent inputs (13): log pT, log E, log(pT / jet pT), log(E / jet E), Delta eta, Delta phi, Delta
R, charge and the one-hot particle class; the first seven are standardised with statistics fitted on
the training jets (buffers saved with the weights). The jet's pT and E are the scalar sums over its
stored constituents. Pair masses are taken massless, m^2 = 2 pT_a pT_b (cosh Delta eta - cos Delta phi).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hepfm.errors import ConfigurationError
from hepfm.io.schema import CONSTITUENT_CLASSES, CONSTITUENT_INDEX
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM, MLP
from hepfm.models.registry import register_model
from hepfm.models.transformer import AttentionBlock

N_CLASSES = len(CONSTITUENT_CLASSES)  # including padding (0)
N_SCALED = 7
PARTICLE_INPUTS = N_SCALED + 1 + N_CLASSES
PAIR_INPUTS = 4
_EPS = 1e-8
_PT, _DETA, _DPHI, _E, _CHARGE, _CLASS = (CONSTITUENT_INDEX[k] for k in
                                          ("pt", "deta", "dphi", "energy", "charge", "class"))


def _raw_scaled(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 7 continuous per-constituent inputs before standardisation; padding rows give finite values."""
    m = mask.to(x.dtype)
    pt, e = x[..., _PT].clamp_min(1e-3), x[..., _E].clamp_min(1e-3)
    jet_pt = (x[..., _PT] * m).sum(dim=-1, keepdim=True).clamp_min(1e-3)
    jet_e = (x[..., _E] * m).sum(dim=-1, keepdim=True).clamp_min(1e-3)
    deta, dphi = x[..., _DETA], x[..., _DPHI]
    # clamped under the root: sqrt has an infinite slope at 0 (padding rows, a jet's only constituent)
    return torch.stack([pt.log(), e.log(), (pt / jet_pt).log(), (e / jet_e).log(), deta, dphi,
                        torch.sqrt((deta * deta + dphi * dphi).clamp_min(_EPS**2))], dim=-1)


def fit_constituent_scaling(x: np.ndarray, n: np.ndarray, max_rows: int = 2_000_000,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the 7 continuous inputs over real constituents (a seeded subsample)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    mask = torch.arange(xt.shape[1])[None, :] < torch.as_tensor(np.asarray(n))[:, None]
    rows = _raw_scaled(xt, mask)[mask].double().numpy()
    if len(rows) == 0:
        raise ValueError("cannot fit constituent scaling on jets without constituents")
    if len(rows) > max_rows:
        rows = rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]
    std = rows.std(axis=0)
    return rows.mean(axis=0).astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def _no_hidden(hidden) -> None:
    if hidden is not None:
        raise ConfigurationError("jet models read constituents; the masked-object task hides event objects")


class ConstituentScaling(nn.Module):
    """Fitted (mean, std) of the continuous constituent inputs, and the [.., 13] particle features."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_SCALED))
        self.register_buffer("std", torch.ones(N_SCALED))

    def set(self, mean, std) -> None:
        """Replace the statistics (e.g. with ones fitted on the training jets)."""
        self.mean.copy_(torch.as_tensor(mean))
        self.std.copy_(torch.as_tensor(std))

    def particle_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, K, 6] stored constituents -> [B, K, 13] model inputs."""
        scaled = (_raw_scaled(x, mask) - self.mean) / self.std
        one_hot = nn.functional.one_hot(x[..., _CLASS].long().clamp(0, N_CLASSES - 1), N_CLASSES).to(x.dtype)
        return torch.cat([scaled, x[..., _CHARGE:_CHARGE + 1], one_hot], dim=-1)


def pair_features(x: torch.Tensor) -> torch.Tensor:
    """[B, K, K, 4] (ln kT, ln z, ln Delta R, ln m^2) of every constituent pair, as in Particle Transformer."""
    pt, eta, phi = x[..., _PT], x[..., _DETA], x[..., _DPHI]
    deta = eta[:, :, None] - eta[:, None, :]
    dphi = torch.remainder(phi[:, :, None] - phi[:, None, :] + torch.pi, 2 * torch.pi) - torch.pi
    dr = torch.sqrt((deta * deta + dphi * dphi).clamp_min(_EPS**2))  # self-pairs: 0, with a finite slope
    pt_a, pt_b = pt[:, :, None], pt[:, None, :]
    softer = torch.minimum(pt_a, pt_b)
    kt = softer * dr
    z = softer / (pt_a + pt_b).clamp_min(_EPS)
    m2 = 2 * pt_a * pt_b * (torch.cosh(deta) - torch.cos(dphi))
    return torch.stack([kt.clamp_min(_EPS).log(), z.clamp_min(_EPS).log(), dr.clamp_min(_EPS).log(),
                        m2.clamp_min(_EPS).log()], dim=-1)


class JetBackbone(Backbone):
    """What the jet backbones share: constituent inputs and their scaling."""

    inputs = "constituents"

    def fit_scaling(self, train) -> None:
        """Fit the constituent scaling on training jets (``x`` [N, K, 6], ``n_constituents`` [N])."""
        self.scaling.set(*fit_constituent_scaling(train.x.numpy(), train.n_constituents.numpy()))


@register_model
class JetTransformer(JetBackbone):
    """Particle-Transformer-style jet backbone; the default ("small") has dim 64, 4 heads, 4 blocks."""

    name = "jet_transformer"

    def __init__(self, n_outputs: int = 1, dim: int = 64, heads: int = 4, layers: int = 4, ff_mult: int = 4,
                 pair_bias: bool = True, dropout: float = 0.0):
        super().__init__(n_outputs, dict(dim=dim, heads=heads, layers=layers, ff_mult=ff_mult, pair_bias=pair_bias,
                                         dropout=dropout))
        if dim % heads:
            raise ConfigurationError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.scaling = ConstituentScaling()
        self.embed = MLP(PARTICLE_INPUTS, dim, depth=2)
        self.pair_mlp = (nn.Sequential(nn.Linear(PAIR_INPUTS, 32), nn.GELU(), nn.Linear(32, heads))
                         if pair_bias else None)
        self.blocks = nn.ModuleList([AttentionBlock(dim, heads, ff_mult, dropout) for _ in range(layers)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_norm = nn.LayerNorm(dim)
        self.cls_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cls_ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(),
                                    nn.Linear(ff_mult * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.decoder = MLP(dim, LATENT_DIM, depth=2)
        self.heads = heads

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The jet latent; ``hidden`` (the masked-object task's) does not apply to constituents."""
        _no_hidden(hidden)
        mask = mask.bool()
        b, k = mask.shape
        h = self.embed(self.scaling.particle_features(x, mask))
        bias = torch.zeros((b, 1, 1, k), device=x.device, dtype=torch.float32)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
        if self.pair_mlp is not None:
            bias = bias + self.pair_mlp(pair_features(x.float()).to(h.dtype)).permute(0, 3, 1, 2).float()
        else:
            bias = bias.expand(b, self.heads, k, k)
        for block in self.blocks:
            h = block(h, bias)
        h = self.norm(h)
        cls = self.cls_token.expand(b, 1, -1)
        att, _ = self.cls_attention(self.cls_norm(cls), h, h, key_padding_mask=~mask, need_weights=False)
        cls = cls + att
        cls = cls + self.cls_ff(cls)
        return self.decoder(cls[:, 0])


@register_model
class DeepSets(JetBackbone):
    """Particle-flow network: per-constituent MLP (``width``, ``depth``), sum over the jet, then an MLP."""

    name = "deepsets"

    def __init__(self, n_outputs: int = 1, width: int = 128, depth: int = 3):
        super().__init__(n_outputs, dict(width=width, depth=depth))
        self.scaling = ConstituentScaling()
        self.phi = MLP(PARTICLE_INPUTS, width, depth)
        self.decoder = MLP(width, LATENT_DIM, depth)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The jet latent; ``hidden`` (the masked-object task's) does not apply to constituents."""
        _no_hidden(hidden)
        mask = mask.bool()
        jet, _ = mask.nonzero(as_tuple=True)
        # the jet-level sums need the whole jet, so the features are built on the padded tensor (cheap,
        # 13 numbers per slot), and the MLP, which carries the cost, runs on real constituents only
        particles = self.scaling.particle_features(x, mask)[mask]
        h = self.phi(particles)
        summed = h.new_zeros((mask.shape[0], h.shape[1])).index_add_(0, jet, h)
        return self.decoder(summed / 10.0)  # ~10-30 constituents per jet: keeps the sum O(1)-O(10)
