"""From stored object rows to model inputs: node, edge and global features (torch, on the device).

Stored rows are ``x`` [B, M, 7] = (pT, eta, phi, E, btag, charge, type) with a boolean ``mask`` [B, M].
Models see, per object, six continuous values — log pT, eta, phi, log E standardised with statistics
fitted on the training set, plus btag and charge — and the one-hot object type; per object pair
(Delta eta, Delta phi, Delta R); and per event the object count. The fitted statistics live in a
:class:`FeatureScaling` module inside each model, so they are saved and restored with its weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hepfm.io.schema import BTAG, CHARGE, ENERGY, ETA, FEATURES, PHI, PT, TYPE, TYPE_CODES
from hepfm.physics import kinematics as kin

N_FEATURES = len(FEATURES)
N_TYPES = len(TYPE_CODES)  # including padding (0), so one-hot width 7
N_SCALED = 4  # log pT, eta, phi, log E
NODE_INPUTS = N_SCALED + 2 + N_TYPES  # + btag, charge + one-hot type
EDGE_INPUTS = 3  # d_eta, d_phi, dR
GLOBAL_INPUTS = 1  # number of objects
_MIN_LOG = 1e-3  # GeV; keeps log finite on padding rows (which are zeroed afterwards anyway)
_COUNT_SCALE = 10.0


def _raw_scaled(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[..., PT].clamp_min(_MIN_LOG).log(), x[..., ETA], x[..., PHI],
                        x[..., ENERGY].clamp_min(_MIN_LOG).log()], dim=-1)


def fit_scaling(objects: np.ndarray, n_objects: np.ndarray, max_rows: int = 2_000_000,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of (log pT, eta, phi, log E) over real objects (a seeded subsample)."""
    mask = np.arange(objects.shape[1])[None, :] < np.asarray(n_objects)[:, None]
    rows = objects[mask]
    if len(rows) == 0:
        raise ValueError("cannot fit feature scaling on an empty dataset")
    if len(rows) > max_rows:
        rows = rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]
    scaled = _raw_scaled(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).double().numpy()
    std = scaled.std(axis=0)
    return scaled.mean(axis=0).astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


class FeatureScaling(nn.Module):
    """Holds the fitted (mean, std) of the scaled features as buffers and builds node features."""

    def __init__(self, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_SCALED) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(N_SCALED) if std is None else torch.as_tensor(std).float())

    def set(self, mean, std) -> None:
        """Replace the statistics (e.g. with ones fitted on a training set)."""
        self.mean.copy_(torch.as_tensor(mean))
        self.std.copy_(torch.as_tensor(std))

    def node_features(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 7] stored rows -> [..., 13] model inputs; padding rows are not special-cased here."""
        scaled = (_raw_scaled(x) - self.mean) / self.std
        one_hot = nn.functional.one_hot(x[..., TYPE].long().clamp(0, N_TYPES - 1), N_TYPES).to(x.dtype)
        return torch.cat([scaled, x[..., BTAG:BTAG + 1], x[..., CHARGE:CHARGE + 1], one_hot], dim=-1)


def edge_features(eta_i: torch.Tensor, phi_i: torch.Tensor, eta_j: torch.Tensor, phi_j: torch.Tensor) -> torch.Tensor:
    """(Delta eta, Delta phi, Delta R) of ordered object pairs, stacked on the last axis."""
    return torch.stack(kin.pair_separation(eta_i, phi_i, eta_j, phi_j), dim=-1)


def global_features(n_objects: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B] object counts -> [B, 1] global input."""
    return (n_objects.to(dtype) / _COUNT_SCALE).unsqueeze(-1)


def mask_from_counts(n_objects: torch.Tensor, max_objects: int) -> torch.Tensor:
    """Boolean [B, M] mask with the first n_objects rows of each event set (the store's layout)."""
    return torch.arange(max_objects, device=n_objects.device)[None, :] < n_objects[:, None]
