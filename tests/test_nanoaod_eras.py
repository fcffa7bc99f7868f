"""NanoAOD selections per CMS era: tagger and working point, explicit ID rules (no silent loosening),
event quality of collision data, the ECAL gap, truncated input and the weight."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from test_nanoaod import write_tree

from hepfm.errors import HepfmError
from hepfm.io.cms_eras import ERAS, detect_era
from hepfm.io.lumimask import LumiMask
from hepfm.io.nanoaod import NanoAODSelection, convert_nanoaod
from hepfm.io.store import EventStore

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
DY = "nano_dy.root"
DIMUON = "nano_dimuon.root"


def _jagged(rows, dtype):
    return ak.values_astype(ak.Array(rows), dtype)


def write_nano(path, n_events=4, jets=None, electrons=None, muons=None, photons=None, flat=None):
    """A NanoAOD-shaped file: each collection is {field: per-event lists}; ``flat`` one value per event."""
    data = {}
    for name, coll in (("Jet", jets), ("Electron", electrons), ("Muon", muons), ("Photon", photons)):
        if coll:
            data[name] = ak.zip({k: _jagged(v, np.bool_ if isinstance(v[0][0], bool) else
                                            np.int32 if isinstance(v[0][0], int) else np.float32)
                                 for k, v in coll.items()})
    for k, v in (flat or {}).items():
        data[k] = ak.Array(np.asarray(v))
    write_tree(path, "Events", data)
    return path


def _leptons(n):
    """One good electron and one good muon per event, away from the jets (phi near +-3)."""
    ele = {"pt": [[30.0]] * n, "eta": [[-2.0]] * n, "phi": [[3.0]] * n, "charge": [[-1]] * n,
           "cutBased": [[4]] * n, "deltaEtaSC": [[0.0]] * n, "pfRelIso03_all": [[0.01]] * n}
    muo = {"pt": [[25.0]] * n, "eta": [[1.8]] * n, "phi": [[-3.0]] * n, "charge": [[1]] * n,
           "tightId": [[True]] * n, "mediumId": [[True]] * n, "looseId": [[True]] * n,
           "isPFcand": [[True]] * n, "isGlobal": [[True]] * n, "isTracker": [[True]] * n,
           "pfRelIso04_all": [[0.05]] * n}
    return ele, muo


def run3_jets(tagger):
    """Eight jets; two fail the Run-3 tight ID (neutral hadron fraction, no charged constituent)."""
    return {"pt": [[60.0, 40.0], [70.0, 30.0], [80.0, 45.0], [55.0, 35.0]],
            "eta": [[0.5, -1.0], [1.0, 0.2], [0.1, -0.3], [2.0, 1.1]],
            "phi": [[0.0, 1.0], [0.5, -1.0], [1.5, -0.5], [0.2, 1.2]],
            tagger: [[0.28, 0.05], [0.5, 0.01], [0.13, 0.9], [0.02, 0.3]],
            "btagDeepFlavB": [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],
            "neHEF": [[0.1, 0.995], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],
            "neEmEF": [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],
            "chHEF": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
            "chMultiplicity": [[5, 5], [5, 5], [0, 5], [5, 5]],
            "neMultiplicity": [[3, 3], [3, 3], [3, 3], [3, 3]]}


def _one(out):
    store = EventStore(out)
    return store.arrays(), next(iter(store.attrs()["source_info"].values()))


@pytest.mark.parametrize("run, pre_ul, era", [
    (260000, True, "2015"), (275000, False, "2016preVFP-UL"), (280000, False, "2016postVFP-UL"),
    (275000, True, "2016"), (300000, False, "2017-UL"), (315267, True, "2018"), (315267, False, "2018-UL"),
    (356000, False, "2022"), (360000, False, "2022EE"), (367000, False, "2023"), (370000, False, "2023BPix"),
    (380000, False, "2024"),
])
def test_collision_data_era_from_the_run_number(tmp_path, run, pre_ul, era):
    branches = {"Jet_btagDeepFlavB"} | ({"Electron_mvaFall17V1Iso"} if pre_ul else set())
    assert detect_era(tmp_path / "f.root", branches, run, True, {"Jet_btagDeepFlavB"}).era.name == era


@pytest.mark.parametrize("run", [200000, 390000])
def test_a_run_outside_the_known_eras_asks_for_the_era(tmp_path, run):
    with pytest.raises(HepfmError, match=f"f.root: run {run} is in no CMS era known here .*; name the era"):
        detect_era(tmp_path / "f.root", set(), run, True, set())


@pytest.mark.parametrize("branches, filled, era", [
    ({"Jet_btagUParTAK4B", "Jet_btagDeepFlavB"}, {"Jet_btagUParTAK4B", "Jet_btagDeepFlavB"}, "2024"),
    ({"Jet_btagPNetB", "Jet_btagDeepFlavB"}, {"Jet_btagPNetB", "Jet_btagDeepFlavB"}, "2022"),
    ({"Jet_btagDeepFlavB", "Electron_mvaFall17V1Iso"}, {"Jet_btagDeepFlavB"}, "2018"),
    ({"Jet_btagDeepFlavB"}, {"Jet_btagDeepFlavB"}, "2018-UL"),
    ({"Jet_btagDeepFlavB", "Jet_btagCSVV2"}, {"Jet_btagCSVV2"}, "2015"),  # DeepJet holds only defaults
])
def test_simulation_era_from_the_branch_set(tmp_path, branches, filled, era):
    assert detect_era(tmp_path / "f.root", branches, 1, False, filled).era.name == era


def test_the_2015_file_is_cut_at_the_2015_csvv2_medium_working_point(shared_data, tmp_path):
    report = convert_nanoaod([shared_data / TTBAR], tmp_path / "s", "t", progress=False)
    data, info = _one(tmp_path / "s")
    assert report.btag == ["Jet_btagCSVV2 > 0.8 (2015 medium)"]
    assert (info["era"], info["btag_tagger"], info["btag_level"], info["btag_working_point"]) == \
        ("2015", "CSVv2", "medium", 0.8)
    assert info["placeholder_branches"] == ["Jet_btagDeepB", "Jet_btagDeepFlavB"]  # -1 and -3000 everywhere
    # the user's choice still wins
    convert_nanoaod([shared_data / TTBAR], tmp_path / "g", "t", btag_cut=0.935, progress=False)
    assert _one(tmp_path / "g")[0]["objects"][:, :, 4].sum() < data["objects"][:, :, 4].sum()


@pytest.mark.parametrize("tagger, era, cut, tagged", [("btagUParTAK4B", "2024", 0.4648, 2),
                                                      ("btagPNetB", "2022", 0.6734, 1)])
def test_run3_tagger_computed_jet_id_and_puppi_met(tmp_path, tagger, era, cut, tagged):
    """NanoAOD v12/v15 layout: no Jet_jetId (v15), Run-3 taggers next to DeepJet, PuppiMET next to PFMET."""
    ele, muo = _leptons(4)
    write_nano(tmp_path / "r3.root", jets=run3_jets(tagger), electrons=ele, muons=muo,
               flat={"PFMET_pt": np.full(4, 80.0, np.float32), "PFMET_phi": np.zeros(4, np.float32),
                     "PuppiMET_pt": np.full(4, 50.0, np.float32), "PuppiMET_phi": np.zeros(4, np.float32),
                     "genWeight": np.array([1, -1, 2, -2], np.float32), "run": np.ones(4, np.uint32),
                     "event": np.arange(4, dtype=np.uint64)})
    report = convert_nanoaod([tmp_path / "r3.root"], tmp_path / "s", "x", progress=False)
    data, info = _one(tmp_path / "s")
    obj = data["objects"]
    jets = obj[obj[:, :, 6] == 1]
    assert info["era"] == era and report.btag == [f"Jet_{tagger} > {cut:g} ({era} tight)"]
    assert info["jet_id"].startswith("tight, computed") and info["pileup_jet_id"] == "none (PUPPI jets)"
    assert len(jets) == 6  # the two jets failing the tight ID are gone
    assert sorted(jets[:, 0]) == [30, 35, 45, 55, 60, 70]
    # tight point (the default for Run-3 taggers): 0.9 passes, and 0.5 for UParTAK4 (DeepJet, 0.1 everywhere,
    # would tag none)
    assert jets[:, 4].sum() == tagged
    assert info["met"] == "PuppiMET" and np.allclose(obj[obj[:, :, 6] == 6][:, 0], 50.0)


def test_constant_id_branches_are_applied_not_dropped(shared_data, tmp_path):
    """Electron_cutBased = 0 for every electron of the dimuon file: they all fail, none is stored."""
    a = uproot.open(shared_data / DIMUON)["Events"].arrays(["Electron_cutBased"])
    assert set(ak.flatten(a.Electron_cutBased).tolist()) == {0}
    convert_nanoaod([shared_data / DIMUON], tmp_path / "s", "d", progress=False)
    data, info = _one(tmp_path / "s")
    assert (data["objects"][:, :, 6] == 2).sum() == 0 and info["electron_id"] == "Electron_cutBased >= 3"


def test_unfilled_muon_id_flags_get_a_computed_id(shared_data, tmp_path):
    """The 2015 file's Muon_*Id are false everywhere, its PF/global flags are filled: a tight-like ID is used."""
    convert_nanoaod([shared_data / TTBAR], tmp_path / "s", "t", progress=False)
    data, info = _one(tmp_path / "s")
    assert info["muon_id"].startswith("tight-like") and "placeholders" in info["muon_id_flags"]
    a = uproot.open(shared_data / TTBAR)["Events"].arrays()
    kin = (a.Muon_pt >= 10) & (abs(a.Muon_eta) <= 2.7) & (a.Muon_pfRelIso04_all <= 0.25)
    pf_global = kin & a.Muon_isPFcand & a.Muon_isGlobal
    stored = int((data["objects"][:, :, 6] == 3).sum())
    assert 0 < stored <= ak.sum(pf_global) < ak.sum(kin)


@pytest.mark.parametrize("drop, fragment", [
    ({"Electron": ("cutBased", "pfRelIso03_all")}, "no electron ID"),
    ({"Jet": ("neHEF",)}, "no jet ID"),
    ({"Muon": ("tightId", "mediumId", "looseId", "isPFcand")}, "no usable muon ID"),
])
def test_missing_id_branches_are_refused_or_recorded(tmp_path, drop, fragment):
    ele, muo = _leptons(4)
    jets = run3_jets("btagUParTAK4B")
    colls = {"Electron": ele, "Muon": muo, "Jet": jets}
    for coll, fields in drop.items():
        for f in fields:
            colls[coll].pop(f)
    path = write_nano(tmp_path / "f.root", jets=jets, electrons=ele, muons=muo,
                      flat={"PuppiMET_pt": np.ones(4, np.float32), "PuppiMET_phi": np.zeros(4, np.float32),
                            "genWeight": np.ones(4, np.float32)})
    with pytest.raises(HepfmError, match=f"f.root: {fragment}"):
        convert_nanoaod([path], tmp_path / "s", "x", progress=False)
    assert not (tmp_path / "s").exists()
    convert_nanoaod([path], tmp_path / "s", "x", progress=False, selection=NanoAODSelection(require_ids=False))
    info = _one(tmp_path / "s")[1]
    assert any(str(v).startswith(f"not applied ({fragment}") for v in info.values())


def test_collision_data_event_quality(shared_data, tmp_path):
    a = uproot.open(shared_data / DIMUON)["Events"].arrays(["Flag_METFilters", "PV_npvsGood", "event"])
    good = ak.to_numpy(a.Flag_METFilters & (a.PV_npvsGood > 0))
    report = convert_nanoaod([shared_data / DIMUON], tmp_path / "s", "d", progress=False)
    assert report.n_read == 40 and report.n_written == 37
    assert report.n_removed == {"met_filters": 3, "good_vertex": 1}
    data, info = _one(tmp_path / "s")
    np.testing.assert_array_equal(data["event_id"], ak.to_numpy(a.event)[good].astype(np.int64))
    assert info["event_quality"] == "Flag_METFilters, PV_npvsGood" and info["data"] == "collision"
    assert (data["weight"] == 1).all()
    # switched off: every event is written
    off = convert_nanoaod([shared_data / DIMUON], tmp_path / "o", "d", progress=False,
                          selection=NanoAODSelection(met_filters=False, good_vertex=False))
    assert off.n_written == 40 and off.n_removed == {}


def test_golden_json(shared_data, tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({"315267": [[1, 10], [200, 210]], "1": [[1, 5]]}))
    (tmp_path / "out.json").write_text(json.dumps({"315267": [[1, 204], [206, 300]]}))
    report = convert_nanoaod([shared_data / DIMUON, shared_data / DY], tmp_path / "s", "d", progress=False,
                             lumi_json=tmp_path / "in.json")
    assert report.n_removed == {"met_filters": 3, "good_vertex": 1, "lumi_mask": 0} and report.n_written == 77
    info = EventStore(tmp_path / "s").attrs()["source_info"]
    assert info[str(shared_data / DY)]["lumi_mask"] == "not applied (simulation)"
    with pytest.raises(HepfmError, match=r"no event left to write .*lumi_mask removed 40"):
        convert_nanoaod([shared_data / DIMUON], tmp_path / "t", "d", progress=False, lumi_json=tmp_path / "out.json")
    ele, muo = _leptons(4)
    norun = write_nano(tmp_path / "norun.root", jets=run3_jets("btagUParTAK4B"), electrons=ele, muons=muo,
                       flat={"PuppiMET_pt": np.ones(4, np.float32), "PuppiMET_phi": np.zeros(4, np.float32)})
    with pytest.raises(HepfmError, match=r"norun\.root: no run or luminosityBlock branch"):
        convert_nanoaod([norun], tmp_path / "u", "d", progress=False, lumi_json=tmp_path / "in.json")
    mask = LumiMask.from_file(tmp_path / "in.json")
    np.testing.assert_array_equal(mask.contains([315267, 315267, 315267, 315267, 2], [0, 1, 11, 210, 1]),
                                  [False, True, False, True, False])
    for text in ("[1, 2]", '{"abc": [[1, 2]]}', '{"1": [[5, 2]]}', '{"1": [3]}', "{"):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(HepfmError, match=r"bad\.json"):
            LumiMask.from_file(tmp_path / "bad.json")


def test_pileup_jet_id_removes_soft_jets_failing_it(shared_data, tmp_path):
    convert_nanoaod([shared_data / DY], tmp_path / "on", "d", progress=False)
    convert_nanoaod([shared_data / DY], tmp_path / "off", "d", progress=False,
                    selection=NanoAODSelection(pileup_jet_id=False))
    on, info = _one(tmp_path / "on")
    off = _one(tmp_path / "off")[0]
    soft = lambda o: ((o[:, :, 6] == 1) & (o[:, :, 0] < 50)).sum()  # noqa: E731
    hard = lambda o: ((o[:, :, 6] == 1) & (o[:, :, 0] >= 50)).sum()  # noqa: E731
    assert info["pileup_jet_id"] == "loose (Jet_puId bit 4) below 50 GeV"
    assert soft(on["objects"]) < soft(off["objects"]) and hard(on["objects"]) == hard(off["objects"])


def test_cms_ecal_gap_replaces_the_simulated_crack(tmp_path):
    """Electrons cut on eta_SC = eta + deltaEtaSC; photons on the supercluster's barrel/endcap flags."""
    n = 2
    _, muo = _leptons(n)
    ele = {"pt": [[30.0, 31.0, 32.0]] * n, "eta": [[1.53, 1.45, 0.5]] * n, "phi": [[3.0, 2.0, 1.0]] * n,
           "charge": [[-1, 1, -1]] * n, "cutBased": [[4, 4, 4]] * n, "deltaEtaSC": [[0.0, -0.06, 0.0]] * n}
    pho = {"pt": [[40.0, 41.0]] * n, "eta": [[1.45, 1.55]] * n, "phi": [[-1.0, -2.0]] * n,
           "cutBased": [[3, 3]] * n, "electronVeto": [[True, True]] * n, "isScEtaEB": [[True, False]] * n,
           "isScEtaEE": [[False, False]] * n}
    jets = {k: [v[0][:1]] * n for k, v in run3_jets("btagDeepFlavB").items()}
    jets["jetId"] = [[6]] * n
    path = write_nano(tmp_path / "gap.root", n, jets=jets, electrons=ele, muons=muo, photons=pho,
                      flat={"MET_pt": np.ones(n, np.float32), "MET_phi": np.zeros(n, np.float32),
                            "genWeight": np.ones(n, np.float32)})
    convert_nanoaod([path], tmp_path / "s", "g", progress=False)
    obj = _one(tmp_path / "s")[0]["objects"]
    assert sorted(np.round(obj[obj[:, :, 6] == 2][:, 1], 2)) == [0.5, 0.5, 1.45, 1.45]
    assert sorted(np.round(obj[obj[:, :, 6] == 4][:, 1], 2)) == [1.45, 1.45]


def test_files_of_different_eras_are_recorded_per_file(shared_data, tmp_path):
    report = convert_nanoaod([shared_data / TTBAR, shared_data / DIMUON], tmp_path / "s", "m", progress=False)
    attrs = EventStore(tmp_path / "s").attrs()
    eras = {k.rsplit("/", 1)[-1]: v["era"] for k, v in attrs["source_info"].items()}
    assert eras == {TTBAR: "2015", DIMUON: "2018"} and attrs["eras"] == "2015, 2018"
    assert report.btag == ["Jet_btagCSVV2 > 0.8 (2015 medium)", "Jet_btagDeepFlavB > 0.277 (2018 medium)"]
    assert report.source_info[str(shared_data / DIMUON)]["data"] == "collision"


def test_weight_keeps_sign_and_magnitude_of_genweight(shared_data, tmp_path):
    convert_nanoaod([shared_data / TTBAR, shared_data / DY], tmp_path / "s", "w", progress=False)
    data = EventStore(tmp_path / "s").arrays()
    want = np.concatenate([uproot.open(shared_data / f)["Events"]["genWeight"].array(library="np")
                           for f in (TTBAR, DY)])
    assert data["weight"].dtype == np.float32
    np.testing.assert_array_equal(data["weight"], want)  # no normalisation, no absolute value
    assert (data["weight"] < 0).any() and (data["weight"] > 0).any()
    np.testing.assert_array_equal(np.unique(np.abs(data["weight"][:200])), [np.float32(225892.45)])


def test_an_unknown_era_name_is_refused(shared_data, tmp_path):
    with pytest.raises(HepfmError, match="unknown CMS era '2019'"):
        convert_nanoaod([shared_data / DY], tmp_path / "s", "x", era="2019", progress=False)
    convert_nanoaod([shared_data / DY], tmp_path / "s", "x", era="2017", progress=False)
    info = _one(tmp_path / "s")[1]
    assert info["btag"] == f"Jet_btagDeepFlavB > {ERAS['2017'].btag['Jet_btagDeepFlavB'][1]:g} (2017 medium)"
    assert info["era_rule"] == "named by the caller"
