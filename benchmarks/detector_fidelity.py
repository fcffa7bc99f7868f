"""Detector fidelity figures: Z -> ee vs Z -> mumu widths, muons that come back as jets, MET without muon ID.

Generates Z/gamma* + jet events with Pythia (Z forced to ee or mumu), runs the detector and prints, side
by side:

* the interquartile range of the dilepton mass within 71-111 GeV for ee and mumu, and their ratio;
* per generator-level muon (pT > 20 GeV, |eta| < 2.5, from the Z): the fraction reconstructed as a muon,
  the fraction with a reconstructed jet within Delta R < 0.2 (a fake jet) and the fraction with neither;
* with muon identification switched off: the fraction of events with a dijet mass in 71-111 GeV and the
  mean MET, against the default detector.

    python benchmarks/detector_fidelity.py [--events 3000] [--seed 11]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.physics import kinematics as kin
from hepfm.physics import validation as val
from hepfm.physics.detector import DetectorConfig, reconstruct
from hepfm.physics.generation import make_pythia
from hepfm.physics.processes import get_process
from hepfm.physics.record import FlatRecord

PT, ETA, PHI, TYPE = (FEATURE_INDEX[k] for k in ("pt", "eta", "phi", "type"))


def z_records(lepton: int, n_events: int, seed: int) -> list[FlatRecord]:
    """Generator records of Z/gamma* + jet with the Z forced to a lepton pair of the given PDG id."""
    settings = get_process("zjets").pythia_settings() + [
        "23:onMode = off", f"23:onIfAny = {lepton}", "Random:setSeed = on", f"Random:seed = {seed}"]
    pythia = make_pythia(settings, f"Z -> {lepton}{lepton}")
    out, done = [], 0
    while done < n_events:
        batch = pythia.nextBatch(min(250, n_events - done))
        out.append(FlatRecord.from_batch(batch.prt))
        done += len(batch)
    return out


def run_detector(records, cfg: DetectorConfig, seed: int) -> np.ndarray:
    """Reconstructed objects [n, M, F] of all records with one seeded generator."""
    rng = np.random.default_rng(seed)
    return np.concatenate([reconstruct(r, cfg, rng).objects for r in records])


def iqr_in_window(mass: np.ndarray, lo: float = 71.0, hi: float = 111.0) -> float:
    """Interquartile range of the masses inside [lo, hi]."""
    m = mass[np.isfinite(mass) & (mass >= lo) & (mass <= hi)]
    q1, q3 = np.percentile(m, [25, 75])
    return float(q3 - q1)


def muon_fates(records, objects: np.ndarray) -> dict[str, float]:
    """Fractions of true final-state muons (pT > 20, |eta| < 2.5) found as muons, as jets, or not at all."""
    found_mu = found_jet = total = 0
    offset = 0
    for rec in records:
        sel = (rec.status > 0) & (np.abs(rec.pid) == 13)
        pt_ = kin.pt(rec.px[sel], rec.py[sel])
        eta_ = kin.eta(rec.px[sel], rec.py[sel], rec.pz[sel])
        phi_ = kin.phi(rec.px[sel], rec.py[sel])
        ev = rec.ev[sel] + offset
        good = (pt_ > 20) & (np.abs(eta_) < 2.5)
        for e, h, p in zip(ev[good], eta_[good], phi_[good], strict=True):
            obj = objects[e]
            dr = kin.delta_r(obj[:, ETA], obj[:, PHI], h, p)
            is_mu = (obj[:, TYPE] == TYPE_CODES["muon"]) & (dr < 0.1)
            is_jet = (obj[:, TYPE] == TYPE_CODES["jet"]) & (dr < 0.2)
            total += 1
            found_mu += bool(is_mu.any())
            found_jet += bool(is_jet.any()) and not bool(is_mu.any())
        offset += rec.n_events
    return {"muons": total, "as_muon": found_mu / total, "as_jet": found_jet / total,
            "lost": (total - found_mu - found_jet) / total}


def dijet_z_fraction(objects: np.ndarray) -> float:
    """Fraction of events whose two leading jets have a mass in 71-111 GeV."""
    m = val.pair_mass(objects, "jet")
    return float(np.mean((m >= 71) & (m <= 111)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    cfg = DetectorConfig()
    ee_rec = z_records(11, args.events, args.seed)
    mm_rec = z_records(13, args.events, args.seed + 1)
    ee = run_detector(ee_rec, cfg, args.seed)
    mm = run_detector(mm_rec, cfg, args.seed)
    m_ee = val.pair_mass(ee, "electron", opposite_charge=True)
    m_mm = val.pair_mass(mm, "muon", opposite_charge=True)
    iqr_ee, iqr_mm = iqr_in_window(m_ee), iqr_in_window(m_mm)
    # Bootstrap errors (events resampled) of the two widths and their ratio.
    boot = np.random.default_rng(0)
    draws = np.array([(iqr_in_window(boot.choice(m_ee, len(m_ee))), iqr_in_window(boot.choice(m_mm, len(m_mm))))
                      for _ in range(200)])
    err_ee, err_mm = draws.std(axis=0)
    err_ratio = (draws[:, 0] / draws[:, 1]).std()
    print(f"Z mass IQR in 71-111 GeV: ee {iqr_ee:.2f} ± {err_ee:.2f} GeV, mumu {iqr_mm:.2f} ± {err_mm:.2f} GeV, "
          f"ratio ee/mumu {iqr_ee / iqr_mm:.2f} ± {err_ratio:.2f}")

    fates = muon_fates(mm_rec, mm)
    binom = np.sqrt(fates["as_jet"] * (1 - fates["as_jet"]) / fates["muons"])
    print(f"Z -> mumu, {fates['muons']} true muons: reconstructed as muon {fates['as_muon']:.3f}, "
          f"as a jet {fates['as_jet']:.3f} ± {binom:.3f}, lost {fates['lost']:.3f}")

    no_id = dataclasses.replace(cfg, muon_efficiency=[(cfg.muon_eta_max, 0.0)])
    mm_noid = run_detector(mm_rec, no_id, args.seed)
    print(f"Z -> mumu, default detector: dijet mass in 71-111 GeV {dijet_z_fraction(mm):.3f}, "
          f"mean MET {val.met(mm).mean():.1f} GeV")
    print(f"Z -> mumu, muon ID off:      dijet mass in 71-111 GeV {dijet_z_fraction(mm_noid):.3f}, "
          f"mean MET {val.met(mm_noid).mean():.1f} GeV, mean jets {val.multiplicity(mm_noid, 'jet').mean():.2f} "
          f"(default {val.multiplicity(mm, 'jet').mean():.2f})")


if __name__ == "__main__":
    main()
