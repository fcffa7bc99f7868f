"""Physics summaries of reconstructed events: multiplicities, leading objects, pair masses, MET.

Operates on the store's padded ``objects`` arrays [n, M, F] (objects ordered by type, then by pT), so
it serves ``hepfm inspect``, the physics tests and any notebook alike.
"""

from __future__ import annotations

import numpy as np

from hepfm.physics import kinematics as kin
from hepfm.physics.objects import CHARGE, ETA, PHI, PT, b_tagged, is_type

MULTIPLICITY_KINDS = ("jet", "electron", "muon", "photon", "tau")


def multiplicity(objects: np.ndarray, kind: str) -> np.ndarray:
    """Number of objects of a type per event."""
    return is_type(objects, kind).sum(axis=1)


def n_btags(objects: np.ndarray) -> np.ndarray:
    """Number of b-tagged jets per event."""
    return (is_type(objects, "jet") & b_tagged(objects)).sum(axis=1)


def nth_object(objects: np.ndarray, kind: str, n: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows [N, F] of the n-th hardest object of a type, and a mask of events that have it."""
    is_kind = is_type(objects, kind)
    rank = np.cumsum(is_kind, axis=1) - 1
    sel = is_kind & (rank == n)
    has = sel.any(axis=1)
    rows = objects[np.arange(len(objects)), sel.argmax(axis=1)]
    return rows, has


def met(objects: np.ndarray) -> np.ndarray:
    """Missing transverse energy per event (0 where the MET object is absent)."""
    rows, has = nth_object(objects, "met")
    return np.where(has, rows[:, PT], 0.0)


def pair_mass(objects: np.ndarray, kind: str, opposite_charge: bool = False) -> np.ndarray:
    """Mass of the two leading objects of a type, NaN for events without such a pair."""
    a, has_a = nth_object(objects, kind, 0)
    b, has_b = nth_object(objects, kind, 1)
    ok = has_a & has_b
    if opposite_charge:
        ok &= a[:, CHARGE] * b[:, CHARGE] < 0
    m = kin.pair_mass(a[:, PT], a[:, ETA], a[:, PHI], b[:, PT], b[:, ETA], b[:, PHI])
    return np.where(ok, m, np.nan)


def dilepton_mass(objects: np.ndarray) -> np.ndarray:
    """Mass of the leading opposite-charge same-flavour lepton pair (ee, else mumu), NaN if none."""
    ee = pair_mass(objects, "electron", opposite_charge=True)
    mm = pair_mass(objects, "muon", opposite_charge=True)
    return np.where(np.isnan(ee), mm, ee)


def diphoton_mass(objects: np.ndarray) -> np.ndarray:
    """Mass of the two leading photons, NaN if fewer than two."""
    return pair_mass(objects, "photon")


def n_leptons(objects: np.ndarray) -> np.ndarray:
    """Number of electrons plus muons per event."""
    return multiplicity(objects, "electron") + multiplicity(objects, "muon")


def summarize(objects: np.ndarray) -> dict[str, float]:
    """Per-sample summary: events, mean multiplicity of each type, mean b-tags and mean MET."""
    out = {"events": float(len(objects))}
    for kind in MULTIPLICITY_KINDS:
        out[f"mean_n_{kind}"] = float(multiplicity(objects, kind).mean()) if len(objects) else 0.0
    out["mean_n_btag"] = float(n_btags(objects).mean()) if len(objects) else 0.0
    out["mean_met"] = float(met(objects).mean()) if len(objects) else 0.0
    return out


COMPARISON_QUANTITIES = {  # key -> column heading; the keys of ``summary_with_errors``
    "n_jet": "jets", "n_electron": "e", "n_muon": "μ", "n_photon": "γ", "n_tau": "τ",
    "lead_jet_pt": "lead jet pT", "lead_lepton_pt": "lead ℓ pT", "btag_per_jet": "b-tags/jet", "met": "MET",
}


def _mean_err(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    err = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), err


def leading_lepton_pt(objects: np.ndarray) -> np.ndarray:
    """pT of the hardest electron or muon per event, NaN for events without one."""
    e, has_e = nth_object(objects, "electron")
    m, has_m = nth_object(objects, "muon")
    pt = np.maximum(np.where(has_e, e[:, PT], -np.inf), np.where(has_m, m[:, PT], -np.inf))
    return np.where(has_e | has_m, pt, np.nan)


def summary_with_errors(objects: np.ndarray) -> dict[str, tuple[float, float]]:
    """Mean and error on the mean of each ``COMPARISON_QUANTITIES`` entry, plus ``events`` (count, 0).

    Leading pTs average over the events that have such an object. b-tags per jet is the ratio of all b-tags to all
    jets; its error treats events (not jets) as independent, so jets of one event may be correlated.
    """
    out = {"events": (float(len(objects)), 0.0)}
    for kind in MULTIPLICITY_KINDS:
        out[f"n_{kind}"] = _mean_err(multiplicity(objects, kind))
    lead_jet, has_jet = nth_object(objects, "jet")
    out["lead_jet_pt"] = _mean_err(lead_jet[has_jet, PT])
    lep = leading_lepton_pt(objects)
    out["lead_lepton_pt"] = _mean_err(lep[np.isfinite(lep)])
    jets, tags = multiplicity(objects, "jet").astype(float), n_btags(objects).astype(float)
    n = len(objects)
    if jets.sum() > 0:
        ratio = tags.sum() / jets.sum()
        # ratio estimator: variance of the per-event residual b - r*j, scaled by the mean jet count
        err = float(np.sqrt(((tags - ratio * jets) ** 2).sum() / (n * (n - 1))) / jets.mean()) if n > 1 else np.nan
        out["btag_per_jet"] = (float(ratio), err)
    else:
        out["btag_per_jet"] = (float("nan"), float("nan"))
    out["met"] = _mean_err(met(objects))
    return out


def ratio_with_error(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """a/b with the uncorrelated propagated error of two (mean, error) pairs; NaN where b is 0 or undefined."""
    (va, ea), (vb, eb) = a, b
    if not np.isfinite(vb) or vb == 0 or not np.isfinite(va):
        return float("nan"), float("nan")
    r = va / vb
    rel_a = ea / va if va != 0 else np.nan
    err = abs(r) * float(np.hypot(rel_a, eb / vb)) if va != 0 else abs(ea / vb)
    return float(r), float(err)
