"""NanoAOD conversion of real CMS files: counts against a direct uproot selection, MET, the Z peak."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepfm.io.nanoaod import NanoAODSelection, convert_nanoaod
from hepfm.io.store import EventStore, read_attrs

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
DY = "nano_dy.root"
GAP = (1.4442, 1.566)  # CMS ECAL barrel-endcap transition, in |eta| of the supercluster


def write_tree(path, name, data, **options):
    """Write a TTree (``f[name] = ...`` would write an RNTuple); records become NanoAOD-style nX/X_field."""
    data = {k: v if isinstance(v, ak.Array) else ak.Array(np.asarray(v)) for k, v in data.items()}
    with uproot.recreate(path) as f:
        f.mktree(name, {k: v.type.content for k, v in data.items()}, **options)
        f[name].extend(data)


def _dr(eta1, phi1, eta2, phi2):
    dphi = (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi
    return np.sqrt((eta1 - eta2) ** 2 + dphi**2)


def direct_counts(path, muon_id, btag_branch, btag_cut):
    """Objects per type with the default cuts, written independently with plain uproot/awkward."""
    a = uproot.open(path)["Events"].arrays()
    e_sc = abs(a.Electron_eta + a.Electron_deltaEtaSC)
    ele = ((a.Electron_pt >= 10) & (abs(a.Electron_eta) <= 2.47) & ~((e_sc > GAP[0]) & (e_sc < GAP[1]))
           & (a.Electron_cutBased >= 3))
    mu = (a.Muon_pt >= 10) & (abs(a.Muon_eta) <= 2.7) & (a.Muon_pfRelIso04_all <= 0.25)
    if muon_id == "tight-like":  # the ID flags of the 2015 file are unfilled: PF, global, stations, layers, IP
        mu = mu & (a.Muon_isPFcand & a.Muon_isGlobal & (a.Muon_nStations >= 2) & (a.Muon_nTrackerLayers > 5)
                   & (abs(a.Muon_dxy) < 0.2) & (abs(a.Muon_dz) < 0.5))
    else:
        mu = mu & a[muon_id]
    pho = ((a.Photon_pt >= 20) & (abs(a.Photon_eta) <= 2.37) & (a.Photon_isScEtaEB | a.Photon_isScEtaEE)
           & a.Photon_electronVeto)
    pho = pho & ((a.Photon_cutBased >= 2) if "Photon_cutBased" in a.fields else ((a.Photon_cutBasedBitmap & 2) > 0))
    jet = ((a.Jet_pt >= 25) & (abs(a.Jet_eta) <= 2.5) & ((a.Jet_jetId & 2) > 0)
           & ((a.Jet_pt >= 50) | ((a.Jet_puId & 4) > 0)))  # loose pileup ID below 50 GeV (Run-2 CHS jets)
    counts = {"electron": 0, "muon": 0, "photon": 0, "jet": 0, "btag": 0, "dropped": 0}
    for i in range(len(a)):
        leps = [(a.Electron_eta[i][ele[i]], a.Electron_phi[i][ele[i]]), (a.Muon_eta[i][mu[i]], a.Muon_phi[i][mu[i]]),
                (a.Photon_eta[i][pho[i]], a.Photon_phi[i][pho[i]])]
        l_eta = np.concatenate([ak.to_numpy(x) for x, _ in leps])
        l_phi = np.concatenate([ak.to_numpy(y) for _, y in leps])
        n_jet = n_btag = 0
        for eta, phi, disc, ok in zip(a.Jet_eta[i], a.Jet_phi[i], a[btag_branch][i], jet[i], strict=True):
            if ok and not np.any(_dr(eta, phi, l_eta, l_phi) < 0.4):
                n_jet += 1
                n_btag += disc > btag_cut
        n_other = int(ak.sum(ele[i]) + ak.sum(mu[i]) + ak.sum(pho[i])) + 1
        kept_jets = min(n_jet, 20 - n_other)  # the softest jets go beyond 20 objects
        counts["dropped"] += n_jet - kept_jets
        counts["electron"] += int(ak.sum(ele[i]))
        counts["muon"] += int(ak.sum(mu[i]))
        counts["photon"] += int(ak.sum(pho[i]))
        counts["jet"] += kept_jets
        counts["btag"] += int(n_btag) if kept_jets == n_jet else -1  # never happens in these files
    return len(a), counts


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("nano") / "store"
    reports = {label: convert_nanoaod([shared_data / name], out, label, progress=False)
               for label, name in (("ttbar", TTBAR), ("dy", DY))}
    return out, reports


@pytest.mark.parametrize("label, name, muon_id, btag, cut", [
    # 2015 Open Data: DeepJet/DeepCSV and the muon ID flags are placeholders; CSVv2 medium of 2015 (BTV)
    ("ttbar", TTBAR, "tight-like", "Jet_btagCSVV2", 0.800),
    ("dy", DY, "Muon_tightId", "Jet_btagDeepFlavB", 0.2770),  # Run-2 simulation, 2018 DeepJet medium
])
def test_counts_match_a_direct_uproot_selection(converted, shared_data, label, name, muon_id, btag, cut):
    out, reports = converted
    n_events, want = direct_counts(shared_data / name, muon_id, btag, cut)
    data = EventStore(out).arrays([label])
    obj = data["objects"]
    kind = obj[:, :, 6]
    assert len(obj) == n_events == reports[label].n_written == reports[label].n_read
    assert reports[label].n_nonfinite == 0
    got = {"electron": int((kind == 2).sum()), "muon": int((kind == 3).sum()), "photon": int((kind == 4).sum()),
           "jet": int((kind == 1).sum()), "btag": int(obj[:, :, 4].sum()), "dropped": int(data["n_dropped"].sum())}
    assert got == want
    assert got["jet"] > 0 and got["electron"] + got["muon"] > 0
    assert (kind == 5).sum() == 0  # tau tagging is off by default, as in the simulated chain
    assert ((kind == 6).sum(axis=1) == 1).all()  # MET in every event
    attrs = read_attrs(sorted((out / label).glob("shard-*.h5"))[0])
    assert attrs["btag_branch"] == btag and attrs["truth"] == "none" and attrs["data_kind"] == "real"
    assert attrs["source_files"] == [str(shared_data / name)] and attrs["tree"] == "Events"


def test_store_layout_matches_the_schema(converted, shared_data):
    out, _ = converted
    store = EventStore(out)
    assert store.counts() == {"ttbar": 200, "dy": 40}
    data = store.arrays(["dy"])
    assert "truth" not in data
    obj, n = data["objects"], data["n_objects"]
    for i in range(len(obj)):
        rows = obj[i, : n[i]]
        assert (obj[i, n[i]:] == 0).all()
        np.testing.assert_allclose(rows[:, 3], rows[:, 0] * np.cosh(rows[:, 1]), rtol=1e-5)
        types = rows[:, 6]
        assert (np.diff(types) >= 0).all()  # ordered by type ...
        for t in np.unique(types):
            assert (np.diff(rows[types == t, 0]) <= 0).all()  # ... then by descending pT
    met = obj[obj[:, :, 6] == 6]
    assert (met[:, 1] == 0).all() and (met[:, 0] > 0).all()
    events = uproot.open(shared_data / DY)["Events"].arrays(["event", "MET_pt"])
    np.testing.assert_array_equal(data["event_id"], ak.to_numpy(events.event).astype(np.int64))
    np.testing.assert_allclose(met[:, 0], ak.to_numpy(events.MET_pt), rtol=1e-6)


def test_drell_yan_dilepton_mass_peaks_at_the_z(converted):
    out, _ = converted
    obj = EventStore(out).arrays(["dy"])["objects"]
    masses = []
    for ev in obj:
        for kind in (2, 3):
            lep = ev[ev[:, 6] == kind]
            if len(lep) >= 2 and lep[0, 5] * lep[1, 5] < 0:
                (pt1, eta1, phi1), (pt2, eta2, phi2) = lep[0, :3], lep[1, :3]
                masses.append(np.sqrt(2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))))
    masses = np.array(masses)
    assert len(masses) >= 4
    assert 80 < np.median(masses) < 100
    assert np.mean((masses > 80) & (masses < 100)) >= 0.75


def test_chunks_and_shards_do_not_change_the_result(shared_data, tmp_path):
    one = convert_nanoaod([shared_data / TTBAR], tmp_path / "a", "t", progress=False)
    many = convert_nanoaod([shared_data / TTBAR], tmp_path / "b", "t", progress=False, shard_size=64, step_size=30)
    assert len(one.shards) == 1 and len(many.shards) == 4
    a, b = EventStore(tmp_path / "a").arrays(), EventStore(tmp_path / "b").arrays()
    for key in ("objects", "n_objects", "n_dropped", "event_id", "weight"):
        np.testing.assert_array_equal(a[key], b[key])


def test_older_nanoaod_without_deepjet_falls_back(shared_data, tmp_path):
    """A NanoAOD-like file with only CSVv2, no Photon/Tau collections and PuppiMET instead of MET."""
    a = uproot.open(shared_data / DY)["Events"].arrays()
    keep = {k: a[k] for k in a.fields if k.split("_")[0] in ("Jet", "Electron", "Muon")
            and not k.startswith(("Jet_btagDeepFlav", "Jet_btagDeepB"))}
    keep.update(PuppiMET_pt=a.PuppiMET_pt, PuppiMET_phi=a.PuppiMET_phi, event=a.event)
    tree = {name: ak.zip({k[len(name) + 1:]: keep[k] for k in keep if k.startswith(name + "_")})
            for name in ("Jet", "Electron", "Muon")}
    write_tree(tmp_path / "old.root", "Events", {**tree, "PuppiMET_pt": a.PuppiMET_pt,
                                                 "PuppiMET_phi": a.PuppiMET_phi, "event": a.event})
    report = convert_nanoaod([tmp_path / "old.root"], tmp_path / "out", "old", progress=False)
    assert report.btag == ["Jet_btagCSVV2 > 0.8 (2015 medium)"] and report.n_written == 40
    info = EventStore(tmp_path / "out").attrs()["source_info"][str(tmp_path / "old.root")]
    assert info["met"] == "PuppiMET" and info["photons"] is False
    obj = EventStore(tmp_path / "out").arrays()["objects"]
    assert (obj[:, :, 6] == 4).sum() == 0 and ((obj[:, :, 6] == 6).sum(axis=1) == 1).all()


def test_nonfinite_events_are_dropped_and_counted(shared_data, tmp_path):
    a = uproot.open(shared_data / DY)["Events"].arrays(["Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepFlavB",
                                                         "Electron_pt", "Electron_eta", "Electron_phi",
                                                         "Electron_charge", "Muon_pt", "Muon_eta", "Muon_phi",
                                                         "Muon_charge", "MET_pt", "MET_phi"])
    met = ak.to_numpy(a.MET_pt).copy()
    met[3] = np.nan
    jet_pt = ak.to_numpy(ak.flatten(a.Jet_pt)).copy()
    jet_pt[0] = np.inf  # the first jet of the first event with jets
    first = int(np.argmax(ak.to_numpy(ak.num(a.Jet_pt)) > 0))
    jets = ak.zip({"pt": ak.unflatten(jet_pt, ak.num(a.Jet_pt)), "eta": a.Jet_eta, "phi": a.Jet_phi,
                   "btagDeepFlavB": a.Jet_btagDeepFlavB})
    write_tree(tmp_path / "bad.root", "Events", {
        "Jet": jets, "MET_pt": met, "MET_phi": a.MET_phi,
        "Electron": ak.zip({k: a["Electron_" + k] for k in ("pt", "eta", "phi", "charge")}),
        "Muon": ak.zip({k: a["Muon_" + k] for k in ("pt", "eta", "phi", "charge")})})
    report = convert_nanoaod([tmp_path / "bad.root"], tmp_path / "out", "bad", progress=False,
                             selection=NanoAODSelection(require_ids=False))  # kinematics only in this file
    assert report.n_read == 40 and report.n_nonfinite == 2 and report.n_written == 38
    data = EventStore(tmp_path / "out").arrays()
    assert np.isfinite(data["objects"]).all()
    assert 3 not in data["event_id"] and first not in data["event_id"]  # no `event` branch: entry numbers
