"""Symmetry augmentations on batches of stored rows (torch, on the device).

* ``phi``: a random global rotation in phi (every object, MET included).
* ``eta_flip``: eta -> -eta for a random half of the events (z -> -z reflection).
* ``boost``: a longitudinal boost by a common rapidity, exact for massless objects: eta -> eta + y and
  E = pT cosh(eta) recomputed; MET (transverse) is unchanged.

Padding rows stay all zero. Random numbers come from the caller's generator, so augmented training is
reproducible and resumable.
"""

from __future__ import annotations

import math

import torch

from hepfm.data.features import ENERGY, ETA, PHI, PT, TYPE
from hepfm.io.schema import TYPE_CODES
from hepfm.physics import kinematics as kin

AUGMENTATIONS = ("phi", "eta_flip", "boost")
DEFAULT_MAX_RAPIDITY = 1.0


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=gen.device) * (high - low) + low).to(device)


def augment(x: torch.Tensor, mask: torch.Tensor, names, gen: torch.Generator,
            max_rapidity: float = DEFAULT_MAX_RAPIDITY) -> torch.Tensor:
    """Return an augmented copy of ``x`` [B, M, 7] applying each named augmentation in ``names``."""
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {AUGMENTATIONS}")
    if not names:
        return x
    x = x.clone()
    b = x.shape[0]
    real = mask.to(x.dtype)
    if "phi" in names:
        angle = _uniform(b, -math.pi, math.pi, gen, x.device)[:, None]
        x[..., PHI] = kin.wrap_phi(x[..., PHI] + angle) * real
    longitudinal = mask & (x[..., TYPE] != TYPE_CODES["met"])
    if "eta_flip" in names:
        sign = torch.where(_uniform(b, 0.0, 1.0, gen, x.device) < 0.5, -1.0, 1.0)[:, None]
        x[..., ETA] = x[..., ETA] * torch.where(longitudinal, sign, 1.0)
    if "boost" in names:
        y = _uniform(b, -max_rapidity, max_rapidity, gen, x.device)[:, None]
        eta = torch.where(longitudinal, kin.boost_eta(x[..., ETA], y), x[..., ETA])
        x[..., ETA] = eta
        x[..., ENERGY] = torch.where(longitudinal, kin.massless_energy(x[..., PT], eta), x[..., ENERGY])
    return x
