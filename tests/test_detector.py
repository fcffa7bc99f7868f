"""Detector response on hand-made generator records (no Pythia needed)."""

import sys

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("fastjet")

from hepfm.errors import HepfmError
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.physics import kinematics as kin
from hepfm.physics.detector import DetectorConfig, reconstruct

PT, ETA, PHI, TYPE, BTAG = (FEATURE_INDEX[k] for k in ("pt", "eta", "phi", "type", "btag"))


def ideal() -> DetectorConfig:
    """Perfect efficiencies and resolutions, so that expectations are exact."""
    cfg = DetectorConfig()
    cfg.photon_efficiency = cfg.electron_efficiency = [(2.5, 1.0)]
    cfg.muon_efficiency = cfg.muon_tracking_efficiency = [(2.7, 1.0)]
    cfg.ecal_resolution = [(4.9, 0.0, 0.0, 0.0)]
    cfg.jet_resolution = [(4.9, 0.0, 0.0, 0.0)]
    cfg.electron_resolution = [(2.5, 0.0, 0.0)]
    cfg.muon_resolution = [(2.7, 0.0, 0.0)]
    cfg.btag_efficiency_b, cfg.btag_efficiency_c, cfg.btag_efficiency_light = 1.0, 0.0, 0.0
    return cfg


def record(particles):
    """Generator record from (pdg id, status, pt, eta, phi, mass) tuples; row 0 is the system entry."""
    rows = [{"id": 90, "status": -11, "daughter1": 0, "daughter2": 0,
             "p": {"px": 0.0, "py": 0.0, "pz": 0.0, "e": 0.0}}]
    for pid, status, pt, eta, phi, m in particles:
        px, py, pz, _ = kin.to_cartesian(pt, eta, phi)
        e = float(np.sqrt(px * px + py * py + pz * pz + m * m))
        rows.append({"id": pid, "status": status, "daughter1": 0, "daughter2": 0,
                     "p": {"px": float(px), "py": float(py), "pz": float(pz), "e": e}})
    return rows


def spray(eta, phi, total_pt, n=10, width=0.05, pid=211):
    """A collimated bunch of final-state hadrons (a 'jet')."""
    rng = np.random.default_rng(abs(hash((eta, phi))) % 2**32)
    return [(pid * (1 if i % 2 else -1), 1, total_pt / n, eta + rng.normal(0, width), phi + rng.normal(0, width),
             0.14) for i in range(n)]


def minus_pt_sum(particles) -> tuple[float, float]:
    """(-sum px, -sum py) of generator particles given as (id, status, pt, eta, phi, mass) tuples."""
    return (-sum(pt * np.cos(phi) for _, _, pt, _, phi, _ in particles),
            -sum(pt * np.sin(phi) for _, _, pt, _, phi, _ in particles))


def run(events, cfg=None, seed=0):
    return reconstruct(ak.Array([record(e) for e in events]), cfg or ideal(), np.random.default_rng(seed))


def objects_of(reco, i, kind):
    obj = reco.objects[i, : reco.n_objects[i]]
    return obj[obj[:, TYPE] == TYPE_CODES[kind]]


def test_isolated_electron_jet_and_met():
    event = [(11, 1, 50.0, 0.5, 1.0, 0.0005)] + spray(-1.0, -2.0, 80.0) + [(12, 1, 30.0, 0.0, 2.5, 0.0)]
    reco = run([event])
    visible = [p for p in event if p[0] != 12]
    mx, my = minus_pt_sum(visible)
    (ele,) = objects_of(reco, 0, "electron")
    assert ele[PT] == pytest.approx(50.0, rel=1e-5) and ele[FEATURE_INDEX["charge"]] == -1
    (jet,) = objects_of(reco, 0, "jet")
    assert jet[PT] == pytest.approx(80.0, rel=0.02)
    (met,) = objects_of(reco, 0, "met")
    # ideal detector: MET is minus the visible transverse momentum, whatever the neutrino carried
    assert met[PT] == pytest.approx(np.hypot(mx, my), rel=1e-4)
    assert met[PHI] == pytest.approx(np.arctan2(my, mx), abs=1e-4)
    assert met[ETA] == 0.0


def test_electron_inside_a_jet_is_not_isolated():
    reco = run([[(11, 1, 30.0, -1.0, -2.0, 0.0005)] + spray(-1.0, -2.0, 80.0)])
    assert len(objects_of(reco, 0, "electron")) == 0
    (jet,) = objects_of(reco, 0, "jet")
    assert jet[PT] == pytest.approx(110.0, rel=0.02)  # the electron is a jet constituent


def test_jet_overlapping_a_selected_photon_is_removed():
    reco = run([[(22, 1, 60.0, 0.3, 0.3, 0.0)]])
    assert len(objects_of(reco, 0, "photon")) == 1
    assert len(objects_of(reco, 0, "jet")) == 0


def test_acceptance_and_crack():
    reco = run([[(22, 1, 60.0, 1.45, 0.0, 0.0)], [(13, 1, 60.0, 1.45, 0.0, 0.1)], [(11, 1, 60.0, 2.6, 0.0, 0.0)],
                [(11, 1, 9.0, 0.0, 0.0, 0.0)]])
    assert len(objects_of(reco, 0, "photon")) == 0  # crack
    assert len(objects_of(reco, 1, "muon")) == 1    # muons have no crack
    assert len(objects_of(reco, 2, "electron")) == 0
    assert len(objects_of(reco, 3, "electron")) == 0  # below 10 GeV


def test_btag_matches_b_quarks_within_delta_r():
    reco = run([spray(0.0, 0.0, 60.0) + spray(1.5, 2.5, 60.0) + [(5, -71, 40.0, 0.05, 0.05, 4.8)]])
    jets = objects_of(reco, 0, "jet")
    assert len(jets) == 2
    tagged = jets[jets[:, BTAG] == 1]
    assert len(tagged) == 1 and abs(tagged[0][ETA]) < 0.3


def test_objects_ordered_by_type_then_pt_and_softest_jets_dropped():
    cfg = ideal()
    cfg.max_objects = 8
    phis = np.linspace(-2.8, 2.8, 10)
    jets = [p for i, phi in enumerate(phis) for p in spray(0.0, phi, 30.0 + 10 * i)]
    reco = run([jets + [(13, 1, 40.0, 2.0, 0.2, 0.1)]], cfg)
    obj = reco.objects[0]
    assert reco.n_objects[0] == 8 and reco.n_dropped[0] == 10 + 1 + 1 - 8
    types = obj[:, TYPE]
    assert list(types) == [1] * 6 + [3, 6]
    assert np.all(np.diff(obj[:6, PT]) <= 0)
    assert obj[0, PT] == pytest.approx(120.0, rel=0.05)  # the hardest jets are kept


def test_padding_rows_are_zero_and_energy_is_massless():
    reco = run([spray(0.0, 0.0, 60.0)])
    n = reco.n_objects[0]
    np.testing.assert_array_equal(reco.objects[0, n:], 0.0)
    real = reco.objects[0, :n]
    np.testing.assert_allclose(real[:, FEATURE_INDEX["energy"]], real[:, PT] * np.cosh(real[:, ETA]), rtol=1e-5)


def test_global_phi_rotation_rotates_every_object():
    base = [(11, 1, 50.0, 0.5, 1.0, 0.0005)] + spray(-1.0, -2.0, 80.0) + [(14, 1, 30.0, 0.0, 2.5, 0.0)]
    shift = 0.7
    rotated = [(p, s, pt, eta, float(kin.wrap_phi(phi + shift)), m) for p, s, pt, eta, phi, m in base]
    a, b = run([base]), run([rotated])
    n = a.n_objects[0]
    assert n == b.n_objects[0]
    np.testing.assert_allclose(b.objects[0, :n, PT], a.objects[0, :n, PT], rtol=1e-4)
    np.testing.assert_allclose(kin.wrap_phi(b.objects[0, :n, PHI] - a.objects[0, :n, PHI] - shift), 0.0, atol=1e-4)


def test_same_seed_same_smearing_different_seed_different():
    events = [[(11, 1, 50.0, 0.5, 1.0, 0.0005)] + spray(-1.0, -2.0, 80.0)] * 20
    cfg = DetectorConfig()
    a, b, c = run(events, cfg, 7), run(events, cfg, 7), run(events, cfg, 8)
    np.testing.assert_array_equal(a.objects, b.objects)
    assert not np.array_equal(a.objects, c.objects)


def test_config_roundtrip_and_unknown_key(tmp_path):

    cfg = DetectorConfig(jet_pt_min=30.0)
    assert DetectorConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    bad = tmp_path / "det.json"
    bad.write_text('{"jet_pt_minimum": 30}')
    with pytest.raises(HepfmError, match=r"det\.json: unknown detector parameter"):
        DetectorConfig.from_file(bad)


def tau_event(decay):
    """A tau (row 1) decaying to the given (id, pt) products along eta = 0.3, phi = 1.0."""
    rows = record([(15, -2, 60.0, 0.3, 1.0, 1.777)] + [(pid, 1, pt, 0.3, 1.0 + 0.01 * i, 0.14)
                                                       for i, (pid, pt) in enumerate(decay)])
    rows[1]["daughter1"], rows[1]["daughter2"] = 2, 1 + len(decay)
    return rows


def test_hadronic_tau_is_tagged_leptonic_and_qcd_jets_are_not():
    cfg = ideal()
    cfg.tau_tagging = True
    cfg.tau_efficiency_1prong = cfg.tau_efficiency_3prong = 1.0
    cfg.tau_mistag_1prong = cfg.tau_mistag_3prong = 0.0
    events = [
        tau_event([(-211, 45.0), (16, 15.0)]),                    # tau -> pi nu: one-prong, charge -1
        tau_event([(-211, 20.0), (211, 15.0), (-211, 10.0), (16, 15.0)]),  # three-prong
        tau_event([(13, 40.0), (-14, 10.0), (16, 10.0)]),          # leptonic: a muon, no tau object
        record(spray(0.3, 1.0, 60.0)),                             # QCD-like jet: 10 tracks
    ]
    reco = reconstruct(ak.Array(events), cfg, np.random.default_rng(0))
    (t1,) = objects_of(reco, 0, "tau")
    assert t1[FEATURE_INDEX["charge"]] == -1 and t1[PT] == pytest.approx(45.0, rel=0.01)
    (t3,) = objects_of(reco, 1, "tau")
    assert t3[FEATURE_INDEX["charge"]] == -1
    assert len(objects_of(reco, 2, "tau")) == 0 and len(objects_of(reco, 2, "muon")) == 1
    assert len(objects_of(reco, 3, "tau")) == 0 and len(objects_of(reco, 3, "jet")) == 1
    # off by default: the same events give no tau objects
    default = reconstruct(ak.Array(events), ideal(), np.random.default_rng(0))
    assert not np.any(default.objects[..., TYPE] == TYPE_CODES["tau"])


def test_muon_is_never_a_jet_input_and_an_unidentified_muon_escapes():
    cfg = ideal()
    cfg.muon_efficiency = [(2.7, 0.0)]  # muon identification off
    # A hard muon recoiling against a jet: the muon comes back as nothing, so the event's missing momentum
    # is the muon's (minus the jet's momentum), as for a neutrino.
    jet_particles = spray(-1.0, -2.0, 80.0)
    reco = run([[(13, 1, 60.0, 0.5, 1.0, 0.106)] + jet_particles], cfg)
    assert len(objects_of(reco, 0, "muon")) == 0
    (jet,) = objects_of(reco, 0, "jet")
    assert jet[PT] == pytest.approx(80.0, rel=0.02)
    mx, my = minus_pt_sum(jet_particles)
    (met,) = objects_of(reco, 0, "met")
    assert met[PT] == pytest.approx(np.hypot(mx, my), rel=1e-4)
    # A muon inside a jet does not add to the jet.
    reco = run([[(13, 1, 30.0, -1.0, -2.0, 0.106)] + spray(-1.0, -2.0, 80.0)], cfg)
    (jet,) = objects_of(reco, 0, "jet")
    assert jet[PT] == pytest.approx(80.0, rel=0.02)


def test_reconstructed_muon_enters_met_with_its_measured_momentum():
    cfg = ideal()
    cfg.muon_resolution = [(2.7, 0.10, 0.0)]  # 10% smearing, so measured and true momenta differ
    event = [(13, 1, 50.0, 0.3, 0.5, 0.106), (14, 1, 40.0, 0.0, 2.5, 0.0)] + spray(-1.0, -2.0, 80.0)
    reco = run([event], cfg, seed=3)
    (mu,) = objects_of(reco, 0, "muon")
    assert abs(mu[PT] - 50.0) > 0.05  # smeared
    assert len(objects_of(reco, 0, "jet")) == 1
    calo = spray(-1.0, -2.0, 80.0)
    mx, my = minus_pt_sum(calo)
    mx, my = mx - mu[PT] * np.cos(mu[PHI]), my - mu[PT] * np.sin(mu[PHI])
    (met,) = objects_of(reco, 0, "met")
    assert met[PT] == pytest.approx(np.hypot(mx, my), rel=1e-4)


def test_electron_energy_is_measured_by_the_calorimeter():
    # sigma/pT of a 200 GeV electron at |eta| = 2: the track alone gives ~26%, the ECal ~0.5%.
    events = [[(11, 1, 200.0, 2.0, 0.1 * i, 0.0005)] for i in range(400)]
    reco = run(events, DetectorConfig(), seed=1)
    ratio = reco.objects[:, 0, PT][reco.objects[:, 0, TYPE] == TYPE_CODES["electron"]] / 200.0
    assert len(ratio) > 250
    assert np.std(ratio) < 0.02 and abs(np.median(ratio) - 1.0) < 0.01
    # At low pT in the barrel the track is the better measurement and the combination beats both.
    low = run([[(11, 1, 12.0, 0.2, 0.1 * i, 0.0005)] for i in range(400)], DetectorConfig(), seed=2)
    r = low.objects[:, 0, PT][low.objects[:, 0, TYPE] == TYPE_CODES["electron"]] / 12.0
    assert np.std(r) < 0.03


def test_tau_track_counting_uses_the_tracking_efficiency():
    cfg = ideal()
    cfg.tau_tagging = True
    cfg.tau_efficiency_1prong = cfg.tau_efficiency_3prong = 1.0
    cfg.track_efficiency = [(2.5, 0.0)]  # no track is found: no tau candidate
    events = [tau_event([(-211, 45.0), (16, 15.0)])]
    reco = reconstruct(ak.Array(events), cfg, np.random.default_rng(0))
    assert len(objects_of(reco, 0, "tau")) == 0 and len(objects_of(reco, 0, "jet")) == 1
    cfg.track_efficiency = [(2.5, 1.0)]
    reco = reconstruct(ak.Array(events), cfg, np.random.default_rng(0))
    assert len(objects_of(reco, 0, "tau")) == 1


def test_toml_configuration_on_python_without_tomllib(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the reader falls back to tomli, or says what to install."""
    path = tmp_path / "det.toml"
    path.write_text("jet_pt_min = 30.0\n")
    assert DetectorConfig.from_file(path).jet_pt_min == 30.0
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10: import tomllib fails
    import tomli  # noqa: F401  (the [test] extra installs it on every Python)
    assert DetectorConfig.from_file(path).jet_pt_min == 30.0
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(HepfmError, match="needs tomli"):
        DetectorConfig.from_file(path)


def test_non_isolated_muon_is_not_an_object_but_enters_met():
    """A muon inside a jet is reconstructed (it enters MET with its momentum, as Delphes' EFlow tracks do) but
    not selected (not isolated); it adds nothing to the jet."""
    jet_particles = spray(-1.0, -2.0, 80.0)
    event = [(13, 1, 30.0, -1.0, -2.0, 0.106)] + jet_particles
    reco = run([event])
    assert len(objects_of(reco, 0, "muon")) == 0
    (jet,) = objects_of(reco, 0, "jet")
    assert jet[PT] == pytest.approx(80.0, rel=0.02)
    mx, my = minus_pt_sum(event)
    (met,) = objects_of(reco, 0, "met")
    assert met[PT] == pytest.approx(np.hypot(mx, my), rel=1e-4)


# ------------------------------------------------------------------------------------ jet constituents

C_PT, C_DETA, C_DPHI, C_E, C_CHARGE, C_CLASS = range(6)


def test_constituents_are_the_clustered_particles_of_each_stored_jet_in_slot_order():
    # three jets of different pT; the one on the photon is removed; the electron inside jet B is a constituent
    jet_a = [(211 if i % 2 else -211, 1, 5.0 + i, 0.0 + 0.02 * i, 0.0, 0.14) for i in range(8)]  # 92 GeV
    jet_b = [(130, 1, 12.0, 1.5, 2.0, 0.5), (22, 1, 9.0, 1.52, 2.03, 0.0), (11, 1, 30.0, 1.48, 1.98, 0.0005)]
    photon = [(22, 1, 60.0, -1.0, -2.0, 0.0)]
    cfg = ideal()
    reco = reconstruct(ak.Array([record(jet_a + jet_b + photon), record([])]), cfg, np.random.default_rng(0),
                       constituents=6)
    obj, con, nc = reco.objects[0], reco.constituents[0], reco.n_constituents[0]
    assert con.shape == (cfg.max_objects, 6, 6) and reco.constituents.dtype == np.float32
    assert list(obj[:3, TYPE]) == [1, 1, 4]  # jet A, jet B, the photon (its jet removed)
    assert list(nc[:3]) == [6, 3, 0] and nc[3:].sum() == 0 and reco.n_constituents[1].sum() == 0
    # jet A: its 6 hardest particles, pT-ordered, charged hadrons with their charge
    np.testing.assert_allclose(con[0, :, C_PT], [12.0, 11.0, 10.0, 9.0, 8.0, 7.0], rtol=1e-5)
    assert set(con[0, :, C_CLASS]) == {1} and set(con[0, :, C_CHARGE]) == {-1.0, 1.0}
    np.testing.assert_allclose(con[0, :, C_DETA], 0.02 * np.arange(7, 1, -1) - obj[0, ETA], atol=1e-5)
    # jet B: electron, neutral hadron (K_L), photon; ideal detector, so the sum is the jet itself
    assert list(con[1, :3, C_CLASS]) == [4, 2, 3] and list(con[1, :3, C_CHARGE]) == [-1.0, 0.0, 0.0]
    np.testing.assert_array_equal(con[1, 3:], 0.0)
    eta = con[1, :3, C_DETA] + obj[1, ETA]
    phi = con[1, :3, C_DPHI] + obj[1, PHI]
    px, py, pz = (np.sum(con[1, :3, C_PT] * f) for f in (np.cos(phi), np.sin(phi), np.sinh(eta)))
    assert np.hypot(px, py) == pytest.approx(obj[1, PT], rel=1e-5)
    assert kin.eta(px, py, pz) == pytest.approx(obj[1, ETA], abs=1e-5)


def test_objects_and_draws_are_the_same_with_and_without_constituents():
    events = [spray(0.0, 1.0, 80.0) + spray(-1.0, -2.0, 50.0) + [(11, 1, 40.0, 2.0, 0.0, 0.0005)]] * 3
    cfg = DetectorConfig()
    cfg.tau_tagging = True
    plain = run(events, cfg, seed=4)
    withc = reconstruct(ak.Array([record(e) for e in events]), cfg, np.random.default_rng(4), constituents=8)
    np.testing.assert_array_equal(plain.objects, withc.objects)
    assert plain.constituents is None
    is_jet = withc.objects[..., TYPE] == TYPE_CODES["jet"]
    assert (withc.n_constituents[is_jet] > 0).all() and (withc.n_constituents[~is_jet] == 0).all()


def test_a_tau_tagged_jet_keeps_no_constituents():
    cfg = ideal()
    cfg.tau_tagging = True
    cfg.tau_mistag_1prong = 1.0  # a one-track jet is always tagged
    one_prong = [(211, 1, 40.0, 0.0, 0.0, 0.14), (22, 1, 20.0, 0.05, 0.0, 0.0)]
    reco = reconstruct(ak.Array([record(one_prong)]), cfg, np.random.default_rng(0), constituents=4)
    assert reco.objects[0, 0, TYPE] == TYPE_CODES["tau"]
    assert reco.n_constituents.sum() == 0 and not reco.constituents.any()


def test_constituents_follow_their_jets_when_the_softest_are_dropped():
    cfg = ideal()
    cfg.max_objects = 8
    phis = np.linspace(-2.8, 2.8, 10)
    jets = [p for i, phi in enumerate(phis) for p in spray(0.0, phi, 30.0 + 10 * i)]
    reco = reconstruct(ak.Array([record(jets + [(13, 1, 40.0, 2.0, 0.2, 0.1)])]), cfg, np.random.default_rng(0),
                       constituents=16)
    obj, con, n = reco.objects[0], reco.constituents[0].astype(np.float64), reco.n_constituents[0]
    assert list(n) == [10] * 6 + [0, 0]  # six jets kept, the muon and MET have none
    phi = con[:6, :, C_DPHI] + obj[:6, None, PHI]
    px, py = (np.sum(con[:6, :, C_PT] * f, axis=1) for f in (np.cos(phi), np.sin(phi)))
    np.testing.assert_allclose(np.hypot(px, py), obj[:6, PT], rtol=1e-5)
    np.testing.assert_allclose(np.arctan2(py, px), obj[:6, PHI], atol=1e-5)
