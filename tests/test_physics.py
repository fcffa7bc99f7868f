"""Physics of generated samples: peaks where they belong, multiplicities that make sense, symmetries."""

import numpy as np
import pytest
from scipy import stats

from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.physics import kinematics as kin
from hepfm.physics import validation as val

pytestmark = [pytest.mark.pythia, pytest.mark.slow]
PT, ETA, PHI, TYPE = (FEATURE_INDEX[k] for k in ("pt", "eta", "phi", "type"))


def peak(values, lo, hi, width):
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=np.arange(lo, hi + width, width))
    i = counts.argmax()
    return 0.5 * (edges[i] + edges[i + 1]), len(values)


def test_z_dilepton_mass_peak(physics_objects):
    m, n = peak(val.dilepton_mass(physics_objects["zjets"]), 40.0, 140.0, 2.0)
    assert n > 100
    assert abs(m - 91.0) <= 3.0


def test_tth_diphoton_mass_peak(physics_objects):
    m, n = peak(val.diphoton_mass(physics_objects["tth_yy"]), 100.0, 160.0, 1.0)
    assert n > 50
    assert abs(m - 125.0) <= 2.0


def test_tth_has_more_btags_than_ggf(physics_objects):
    assert val.n_btags(physics_objects["tth"]).mean() > 3 * val.n_btags(physics_objects["ggf_h"]).mean()
    assert val.n_btags(physics_objects["tth"]).mean() > 1.0


def test_w_has_more_met_than_z_to_leptons(physics_objects):
    assert val.met(physics_objects["wjets"]).mean() > 1.5 * val.met(physics_objects["zjets"]).mean()


def test_lepton_multiplicities_wh_vs_zh(physics_objects):
    wh, zh = (val.n_leptons(physics_objects[p]) for p in ("wh", "zh"))
    assert (wh == 1).mean() > (zh == 1).mean()
    assert (zh == 2).mean() > (wh == 2).mean()


def test_selected_objects_respect_the_cuts(physics_objects):
    obj = np.concatenate(list(physics_objects.values()))
    t, pt, aeta = obj[..., TYPE], obj[..., PT], np.abs(obj[..., ETA])
    crack = (aeta > 1.37) & (aeta < 1.52)
    jets, ele, mu, pho = (t == TYPE_CODES[k] for k in ("jet", "electron", "muon", "photon"))
    assert np.all(pt[jets] >= 25.0) and np.all(aeta[jets] <= 2.5)
    assert np.all(pt[ele] >= 10.0) and np.all(aeta[ele] <= 2.47) and not np.any(crack[ele])
    assert np.all(pt[mu] >= 10.0) and np.all(aeta[mu] <= 2.7)
    assert np.all(pt[pho] >= 20.0) and np.all(aeta[pho] <= 2.37) and not np.any(crack[pho])
    # exactly one MET object per event, at eta = 0, and zero-padded rows
    assert np.all((t == TYPE_CODES["met"]).sum(axis=1) == 1)
    assert np.all(obj[t == TYPE_CODES["met"]][:, ETA] == 0.0)
    assert np.all(obj[t == 0] == 0.0)


def test_no_jet_near_a_selected_lepton_or_photon(physics_objects):
    obj = np.concatenate(list(physics_objects.values()))
    t = obj[..., TYPE]
    jets = t == TYPE_CODES["jet"]
    others = (t == TYPE_CODES["electron"]) | (t == TYPE_CODES["muon"]) | (t == TYPE_CODES["photon"])
    dr = kin.delta_r(obj[:, :, None, ETA], obj[:, :, None, PHI], obj[:, None, :, ETA], obj[:, None, :, PHI])
    pairs = jets[:, :, None] & others[:, None, :]
    assert pairs.sum() > 100  # the check is not vacuous
    assert np.all(dr[pairs] >= 0.4)


def test_phi_is_uniform(physics_objects):
    obj = np.concatenate(list(physics_objects.values()))
    phi = obj[..., PHI][obj[..., TYPE] == TYPE_CODES["jet"]]
    counts, _ = np.histogram(phi, bins=16, range=(-np.pi, np.pi))
    assert stats.chisquare(counts).pvalue > 1e-3


def test_eta_is_forward_backward_symmetric(physics_objects):
    obj = np.concatenate(list(physics_objects.values()))
    eta = obj[..., ETA][obj[..., TYPE] == TYPE_CODES["jet"]]
    n_pos, n = (eta > 0).sum(), len(eta)
    assert stats.binomtest(int(n_pos), int(n), 0.5).pvalue > 1e-3


def test_truth_counts_match_the_processes(physics_store):
    from hepfm.io.store import EventStore
    from hepfm.physics.truth import LABEL_NAMES

    es = EventStore(physics_store)
    idx = {n: i for i, n in enumerate(LABEL_NAMES)}
    tth = es.arrays(processes=["tth"], fields=("truth",))["truth"]
    assert np.all(tth[:, idx["n_higgs"]] == 1) and np.all(tth[:, idx["n_tops"]] == 2)
    assert np.all(tth[:, idx["n_W"]] >= 2)  # the two W bosons from the top decays at least
    assert np.all(tth[:, idx["top2_exists"]] == 1)
    zj = es.arrays(processes=["zjets"], fields=("truth",))["truth"]
    assert np.all(zj[:, idx["n_Z"]] == 1) and np.all(zj[:, idx["n_higgs"]] == 0)
    assert np.all(zj[:, idx["higgs_exists"]] == 0)
    wh = es.arrays(processes=["wh"], fields=("truth",))["truth"]
    assert np.all(wh[:, idx["n_W"]] >= 1) and np.all(wh[:, idx["n_V"]] == wh[:, idx["n_W"]] + wh[:, idx["n_Z"]])


def _iqr_in_z_window(mass):
    m = mass[np.isfinite(mass) & (mass >= 71.0) & (mass <= 111.0)]
    q1, q3 = np.percentile(m, [25, 75])
    return q3 - q1, len(m)


def test_z_to_ee_is_about_as_narrow_as_z_to_mumu(physics_objects):
    """Electrons are measured by the calorimeter: the ee peak is no wider than ~1.3x the mumu peak."""
    z = physics_objects["zjets"]
    iqr_ee, n_ee = _iqr_in_z_window(val.pair_mass(z, "electron", opposite_charge=True))
    iqr_mm, n_mm = _iqr_in_z_window(val.pair_mass(z, "muon", opposite_charge=True))
    assert n_ee > 80 and n_mm > 80  # ~110 and ~190 pairs in the window: IQR errors ~12% and ~9%
    assert iqr_ee <= 1.3 * iqr_mm
    assert iqr_mm < 6.0  # the natural width (2.5 GeV) with a few GeV of resolution


def test_met_is_small_in_z_to_mumu_with_both_muons_found(physics_objects):
    z = physics_objects["zjets"]
    both = val.multiplicity(z, "muon") == 2
    assert both.sum() > 150  # ~200 events
    assert np.median(val.met(z)[both]) < 20.0
