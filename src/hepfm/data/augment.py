"""Symmetry augmentations on batches of stored rows (torch, on the device).

* ``phi``: a random global rotation in phi (every object, MET included).
* ``eta_flip``: eta -> -eta for a random half of the events (z -> -z reflection).
* ``boost``: a longitudinal boost by a common rapidity, exact for massless objects: eta -> eta + y and
  E = pT cosh(eta) recomputed; MET (transverse) is unchanged.

Padding rows stay all zero. Random numbers come from the caller's generator, so augmented training is
reproducible and resumable. Under torchrun each process holds a slice ``[rank::world]`` of a global
batch: the numbers are drawn for the whole global batch and sliced, so every event gets the same
transformation as in a single-process run and the generators of all processes stay equal.

The multilabel task's truth labels depend on object directions (phi and eta bins), which these
transformations change without changing the labels: :func:`check_augment` refuses that combination.
"""

from __future__ import annotations

import math

import torch

from hepfm.errors import HepfmError
from hepfm.io.schema import ENERGY, ETA, PHI, PT, TYPE, TYPE_CODES
from hepfm.physics import kinematics as kin

AUGMENTATIONS = ("phi", "eta_flip", "boost")
DEFAULT_MAX_RAPIDITY = 1.0


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=gen.device) * (high - low) + low).to(device)


def check_augment(task: str, names) -> None:
    """Refuse unknown augmentations and augmentations that would make ``task``'s targets wrong."""
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise HepfmError(f"unknown augmentation(s) {sorted(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    if task == "multilabel" and names:
        raise HepfmError(f"augmentation {' '.join(names)} with the multilabel task: the augmentation moves the objects "
                         "but not the phi- and eta-binned truth labels, so the targets would be wrong; train "
                         "multilabel without augmentation")


def augment(x: torch.Tensor, mask: torch.Tensor, names, gen: torch.Generator,
            max_rapidity: float = DEFAULT_MAX_RAPIDITY, rank: int = 0, world: int = 1,
            global_size: int | None = None) -> torch.Tensor:
    """Return an augmented copy of ``x`` [B, M, 7] applying each named augmentation in ``names``.

    ``x`` is slice ``[rank::world]`` of a global batch of ``global_size`` events (default: ``x`` is all of it).
    """
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {AUGMENTATIONS}")
    if not names:
        return x
    x = x.clone()
    n = global_size if global_size is not None else x.shape[0]
    if len(range(rank, n, world)) != x.shape[0]:
        raise ValueError(f"slice {rank}::{world} of a batch of {n} events has {len(range(rank, n, world))}, "
                         f"not {x.shape[0]}")

    def draw(low, high):
        return _uniform(n, low, high, gen, x.device)[rank::world]

    real = mask.to(x.dtype)
    if "phi" in names:
        angle = draw(-math.pi, math.pi)[:, None]
        x[..., PHI] = kin.wrap_phi(x[..., PHI] + angle) * real
    longitudinal = mask & (x[..., TYPE] != TYPE_CODES["met"])
    if "eta_flip" in names:
        sign = torch.where(draw(0.0, 1.0) < 0.5, -1.0, 1.0)[:, None]
        x[..., ETA] = x[..., ETA] * torch.where(longitudinal, sign, 1.0)
    if "boost" in names:
        y = draw(-max_rapidity, max_rapidity)[:, None]
        eta = torch.where(longitudinal, kin.boost_eta(x[..., ETA], y), x[..., ETA])
        x[..., ETA] = eta
        x[..., ENERGY] = torch.where(longitudinal, kin.massless_energy(x[..., PT], eta), x[..., ENERGY])
    return x
