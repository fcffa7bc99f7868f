"""Collider kinematics on numpy (and awkward, through numpy ufuncs) arrays and torch tensors.

This is the only module that implements pT/eta/phi/Delta R/mass maths; everything else calls it.
Conventions: energies and momenta in GeV, phi in (-pi, pi], eta is pseudorapidity.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-12


def pt(px, py):
    """Transverse momentum."""
    return np.hypot(px, py)


def eta(px, py, pz):
    """Pseudorapidity; finite (|eta| ~ 30) for particles along the beam."""
    return np.arcsinh(pz / np.maximum(np.hypot(px, py), _TINY))


def phi(px, py):
    """Azimuthal angle in (-pi, pi]."""
    return np.arctan2(py, px)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_sqrt(v):
    # sqrt with a zero (not infinite) derivative at 0: the diagonal or padding pairs of a batch have
    # Delta R = 0 or m = 0, and an infinite derivative there would turn input gradients into NaN.
    positive = v > 0
    return v.where(positive, 1.0).sqrt() * positive


def wrap_phi(dphi):
    """Wrap an angle difference to [-pi, pi) (numpy arrays or torch tensors)."""
    return (dphi + np.pi) % (2.0 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    """Angular distance sqrt(d_eta^2 + d_phi^2) with d_phi wrapped (numpy arrays or torch tensors)."""
    d_eta, d_phi = eta1 - eta2, wrap_phi(phi1 - phi2)
    if _is_torch(d_eta):
        return _torch_sqrt(d_eta * d_eta + d_phi * d_phi)
    return np.hypot(d_eta, d_phi)


def pair_separation(eta1, phi1, eta2, phi2):
    """(d_eta, d_phi wrapped to [-pi, pi), Delta R) of object pairs (numpy arrays or torch tensors)."""
    d_eta, d_phi = eta1 - eta2, wrap_phi(phi1 - phi2)
    if _is_torch(d_eta):
        return d_eta, d_phi, _torch_sqrt(d_eta * d_eta + d_phi * d_phi)
    return d_eta, d_phi, np.hypot(d_eta, d_phi)


def massless_energy(pt_, eta_):
    """Energy of a massless object, E = pT cosh(eta) (numpy arrays or torch tensors)."""
    return pt_ * (eta_.cosh() if _is_torch(eta_) else np.cosh(eta_))


def to_cartesian(pt_, eta_, phi_, energy=None):
    """(px, py, pz, E) from (pT, eta, phi[, E]); massless when E is not given."""
    px = pt_ * np.cos(phi_)
    py = pt_ * np.sin(phi_)
    pz = pt_ * np.sinh(eta_)
    e = massless_energy(pt_, eta_) if energy is None else energy
    return px, py, pz, e


def invariant_mass(px, py, pz, e):
    """Invariant mass of a four-vector (or of a sum of four-vectors); negative m^2 clipped to 0."""
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(np.maximum(m2, 0.0))


def pair_mass(pt1, eta1, phi1, pt2, eta2, phi2):
    """Invariant mass of two massless objects: sqrt(2 pT1 pT2 (cosh d_eta - cos d_phi)) (numpy or torch)."""
    if _is_torch(pt1):
        m2 = 2.0 * pt1 * pt2 * ((eta1 - eta2).cosh() - (phi1 - phi2).cos())
        return _torch_sqrt(m2)
    m2 = 2.0 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    return np.sqrt(np.maximum(m2, 0.0))


def boost_eta(eta_, rapidity):
    """Pseudorapidity after a longitudinal boost by ``rapidity`` (exact for massless objects: eta + y)."""
    return eta_ + rapidity
