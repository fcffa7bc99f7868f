"""Object origins and heavy-particle kinematics of Pythia events (a few hundred events per process)."""

import numpy as np
import pytest

from hepfm.io.schema import TYPE
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.generation import EventSource, simulate
from hepfm.physics.processes import get_process
from hepfm.physics.truth import HEAVY_NAMES, ORIGIN_CODES

pytestmark = [pytest.mark.pythia, pytest.mark.slow]


def _events(process: str, n: int, *extra: str, seed: int = 11) -> dict:
    settings = get_process(process).pythia_settings() + list(extra) + ["Random:setSeed = on", f"Random:seed = {seed}"]
    return simulate(EventSource([settings], seed, process), n, 0, DetectorConfig(), np.random.default_rng(seed))


def _per_event(arrays, code, kinds=(1, 2, 3, 4, 5, 6)) -> np.ndarray:
    sel = np.isin(arrays["objects"][..., TYPE], kinds) & (arrays["origin"] == code)
    return sel.sum(1)


def _heavy(arrays, name):
    h = arrays["heavy"]
    exists = h[:, HEAVY_NAMES.index(name.split("_")[0] + "_exists")] > 0
    return h[exists, HEAVY_NAMES.index(name)]


def test_ttbar_lepton_plus_jets_b_jets_lepton_and_the_top_and_w_masses():
    # one W to e/mu, the other to quarks: W+ -> l nu and W- -> q q' (each event is l+jets)
    a = _events("ttbar", 300, "24:onMode = off", "24:onPosIfAny = 11 13", "24:onNegIfAny = 1 2 3 4")
    assert a["origin"].dtype == np.int8 and a["origin"].shape == a["objects"].shape[:2]
    assert (a["origin"][a["objects"][..., TYPE] == 0] == -1).all()
    b_jets = _per_event(a, ORIGIN_CODES["top_b"], kinds=(1,))
    assert 1.4 < b_jets.mean() < 2.1  # two b quarks, some outside the acceptance
    assert 1.0 < _per_event(a, ORIGIN_CODES["top_w_qq"], kinds=(1,)).mean() < 2.2  # soft or merged quarks
    leptons = np.isin(a["objects"][..., TYPE], (2, 3))
    assert leptons.sum() > 100
    assert (a["origin"][leptons] == ORIGIN_CODES["top_w_lv"]).mean() > 0.95
    met = a["objects"][..., TYPE] == 6
    assert (a["origin"][met] == ORIGIN_CODES["top_w_lv"]).mean() > 0.9
    top_m, w_m = _heavy(a, "top1_m"), _heavy(a, "w1_m")
    assert len(top_m) == 300 and (a["heavy"][:, HEAVY_NAMES.index("top2_exists")] == 1).all()
    assert abs(np.median(top_m) - 172.5) < 1.0 and 0.5 < np.subtract(*np.percentile(top_m, [75, 25])) < 3.0
    assert abs(np.median(w_m) - 80.4) < 1.0 and 1.0 < np.subtract(*np.percentile(w_m, [75, 25])) < 4.0


def test_both_muons_of_z_to_mumu_come_from_the_z():
    a = _events("zjets", 200, "23:onMode = off", "23:onIfAny = 13")
    muons = a["objects"][..., TYPE] == 3
    two = muons.sum(1) == 2
    assert two.sum() > 50
    assert (a["origin"][two][muons[two]] == ORIGIN_CODES["z_ll"]).mean() > 0.98
    z_m = _heavy(a, "z1_m")
    assert abs(np.median(z_m[z_m > 80]) - 91.2) < 1.5


def test_the_photons_of_h_to_gamma_gamma_come_from_the_higgs():
    a = _events("ggf_h", 200, "25:onMode = off", "25:onIfMatch = 22 22")
    photons = a["objects"][..., TYPE] == 4
    assert photons.sum() > 150
    assert (a["origin"][photons] == ORIGIN_CODES["higgs"]).mean() > 0.95
    assert abs(np.median(_heavy(a, "h1_m")) - 125.0) < 0.5


def test_qcd_multijet_objects_have_no_heavy_origin():
    a = _events("qcd", 200)
    real = a["objects"][..., TYPE] > 0
    assert real.sum() > 400
    assert (a["origin"][real] == 0).mean() > 0.99
    assert (a["heavy"][:, [HEAVY_NAMES.index(k) for k in ("top1_exists", "h1_exists")]] == 0).mean() > 0.99
