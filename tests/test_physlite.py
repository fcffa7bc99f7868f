"""The ATLAS DAOD_PHYSLITE reader on 100 real Sherpa Z -> ee + jets events, as a TTree and as an RNTuple,
and its one-line errors on files it cannot convert."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import uproot
from cli_runner import hepfm, one_line_error

from hepfm.errors import HepfmError
from hepfm.io import physlite
from hepfm.io.physlite import BTAG, JETS, TAGGERS, convert_physlite, default_working_point, discriminant
from hepfm.io.readers import open_events
from hepfm.physics.detector import DetectorConfig

PHYSLITE = "physlite_example.root"


def store_arrays(out, label):
    shards = sorted((out / label).glob("shard-*.h5"))
    with h5py.File(shards[0]) as f:
        return {k: f[k][:] for k in f}


def read_branches(path, names):
    tree = uproot.open(path)[physlite.TREE]
    return tree.arrays(names, library="ak")


def write_physlite_rntuple(src, dst, drop=(), reverse_btagging=False):
    """The branches the reader uses, written as an RNTuple with ATLAS's field names (``Container:var``).

    ``reverse_btagging``: store every event's b-tagging container in reverse order and point the jets'
    links at the reversed entries (the same tagging, reached only through the links).
    """
    import awkward as ak

    tree = open_events(src, physlite.TREE)
    plan = physlite.plan_file(tree, src, DetectorConfig(), physlite.PhysliteSelection())
    names = [*plan.branches, f"{physlite.EVENT}.eventTypeBitmask"]
    arrays = tree.arrays(names, library="ak")
    fields = {}
    for name in names:
        if name in drop:
            continue
        values = arrays[name]
        if name == physlite.BTAG_LINK:
            index = values
            if reverse_btagging:
                index = ak.num(arrays[f"{BTAG}.GN2v00_pb"], axis=1) - 1 - index
            values = ak.zip({"m_persKey": ak.values_astype(index * 0 + 1, np.uint32),
                             "m_persIndex": ak.values_astype(index, np.uint32)})
            name = f"{JETS}.btaggingLink"
        elif reverse_btagging and name.startswith(BTAG):
            values = values[:, ::-1]
        fields[name.replace(".", ":", 1)] = values
    with uproot.recreate(dst) as f:
        f.mkrntuple(physlite.TREE, ak.Array(fields))
    return dst


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("physlite") / "store"
    report = convert_physlite([shared_data / PHYSLITE], out, "zee", progress=False)
    return report, store_arrays(out, "zee")


def test_zee_events(converted, shared_data):
    report, a = converted
    assert report.n_read == report.n_written == 100
    obj, kind = a["objects"], a["objects"][..., 6]
    n_ele = (kind == 2).sum(axis=1)
    # Z -> ee: most events keep an identified, isolated electron; about a quarter keep both
    assert (n_ele >= 1).mean() > 0.7 and (n_ele == 2).sum() >= 20
    pairs = obj[n_ele == 2][kind[n_ele == 2] == 2].reshape(-1, 2, 7)
    pt, eta, phi = pairs[..., 0], pairs[..., 1], pairs[..., 2]
    m_ee = np.sqrt(2 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1])))
    assert 86 < np.median(m_ee) < 96 and np.mean((m_ee > 66) & (m_ee < 116)) > 0.8
    assert np.mean(pairs[:, 0, 5] * pairs[:, 1, 5] < 0) > 0.9  # opposite charges
    assert (pt >= 10).all() and (np.abs(eta) <= 2.47).all()
    assert not ((np.abs(eta) > 1.37) & (np.abs(eta) < 1.52)).any()  # the simulated detector's crack
    jets = kind == 1
    assert 1.0 < jets.sum(axis=1).mean() < 4.0 and (obj[..., 0][jets] >= 25).all()
    # every jet of this file is a light jet (HadronConeExclTruthLabelID 0): b-tags are mistags, rare at 70%
    assert obj[..., 4][jets].mean() < 0.05
    met = obj[..., 0][kind == 6]
    assert len(met) == 100 and 5 < np.median(met) < 60 and met.max() < 500
    assert not (kind == 3).any() or (obj[..., 0][kind == 3] >= 10).all()


def test_units_weights_and_identity(converted, shared_data):
    _, a = converted
    raw = read_branches(shared_data / PHYSLITE, ["AnalysisElectronsAuxDyn.pt", "EventInfoAuxDyn.mcEventWeights",
                                                 "EventInfoAuxDyn.eventNumber", "EventInfoAuxDyn.runNumber"])
    np.testing.assert_array_equal(a["event_id"], raw["EventInfoAuxDyn.eventNumber"].to_numpy().astype(np.int64))
    np.testing.assert_array_equal(a["run"], raw["EventInfoAuxDyn.runNumber"].to_numpy())
    np.testing.assert_array_equal(a["weight"], raw["EventInfoAuxDyn.mcEventWeights"][:, 0].to_numpy())
    # MeV -> GeV: the leading electron of the first event (55.0 GeV in the file, 54975.9 MeV)
    first = a["objects"][0][a["objects"][0][:, 6] == 2]
    assert first[0, 0] == pytest.approx(float(raw["AnalysisElectronsAuxDyn.pt"][0][0]) / 1000, rel=1e-6)


def test_report_records_choices_and_cuts(converted, shared_data):
    report, _ = converted
    info = report.source_info[str(shared_data / PHYSLITE)]
    assert info["btag_tagger"] == "GN2v00" and info["btag_level"] == "FixedCutBEff_70"
    assert info["btag_working_point"] == TAGGERS["GN2v00"].working_points[0.70]
    assert info["electron_id"] == "LHMedium" and "Loose_VarRad" in info["muon_isolation"]
    counts = report.counts[str(shared_data / PHYSLITE)]
    assert counts["jets without a valid b-tagging link"] == 0
    assert counts["electrons kinematics"] > 0 and counts["jets overlap"] > 0  # each electron is also a jet
    assert report.n_removed == {"jet_cleaning": 0}


def test_working_point_and_discriminant():
    gn2 = TAGGERS["GN2v00"]
    assert default_working_point(gn2, DetectorConfig()) == 0.70
    assert default_working_point(gn2, DetectorConfig(btag_efficiency_b=0.8, btag_efficiency_c=0.12,
                                                     btag_efficiency_light=0.004)) == 0.77
    # D = ln(pb / (fc pc + (1 - fc) pu)): with pb = pc = pu the discriminant is 0 whatever fc
    assert discriminant(np.array([0.3]), np.array([0.3]), np.array([0.3]), 0.1)[0] == pytest.approx(0.0)
    assert discriminant(np.array([0.9]), np.array([0.05]), np.array([0.05]), 0.018)[0] == pytest.approx(np.log(18))


def test_tagger_and_electron_level_options(shared_data, tmp_path):
    r = hepfm("convert", "physlite", shared_data / PHYSLITE, "--out", tmp_path / "s", "--tagger", "DL1dv01",
              "--electron-id", "Tight", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "DL1dv01 D(fc=0.018) > 3.494 (70% fixed cut)" in r.stdout and "electrons LHTight" in r.stdout
    assert "objects removed by cut: electrons kinematics 24, electrons id" in r.stdout
    r = hepfm("convert", "physlite", shared_data / PHYSLITE, "--out", tmp_path / "t", "--tagger", "MV2c10")
    one_line_error(r, "unknown PHYSLITE b-tagger 'MV2c10'")
    assert not (tmp_path / "t").exists()


def test_rntuple_gives_the_same_events(converted, shared_data, tmp_path):
    """The same events as an RNTuple (``AnalysisJetsAuxDyn:pt`` field names), with the b-tagging container
    reversed and the links pointing into it: the same store, so the tag is reached through the links."""
    _, a = converted
    path = write_physlite_rntuple(shared_data / PHYSLITE, tmp_path / "physlite_rntuple.root", reverse_btagging=True)
    assert uproot.open(path).classnames()[f"{physlite.TREE};1"] == "ROOT::RNTuple"
    convert_physlite([path], tmp_path / "store", "zee", progress=False, step_size=30)  # chunks of 30 entries
    b = store_arrays(tmp_path / "store", "zee")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_tagged_jet_through_its_link(shared_data, tmp_path):
    """A looser cut tags some jets; reversing the b-tagging container keeps exactly those tags."""
    r1 = convert_physlite([shared_data / PHYSLITE], tmp_path / "a", "z", btag_cut=0.0, progress=False)
    path = write_physlite_rntuple(shared_data / PHYSLITE, tmp_path / "rev.root", reverse_btagging=True)
    convert_physlite([path], tmp_path / "b", "z", btag_cut=0.0, progress=False)
    a, b = store_arrays(tmp_path / "a", "z"), store_arrays(tmp_path / "b", "z")
    tagged = a["objects"][..., 4][a["objects"][..., 6] == 1]
    assert 0.02 < tagged.mean() < 0.6 and "(given)" in r1.btag[0]
    np.testing.assert_array_equal(a["objects"], b["objects"])


def test_missing_branch_is_one_line_and_writes_nothing(shared_data, tmp_path):
    path = write_physlite_rntuple(shared_data / PHYSLITE, tmp_path / "nojvt.root", drop=(f"{JETS}.NNJvtPass",))
    r = hepfm("convert", "physlite", path, "--out", tmp_path / "s")
    one_line_error(r, str(path), "no branch AnalysisJetsAuxDyn.NNJvtPass (needed for the jet-vertex tagger)")
    assert not (tmp_path / "s").exists()
    # recorded as not applied when asked for
    report = convert_physlite([path], tmp_path / "t", "z", progress=False,
                              selection=physlite.PhysliteSelection(require_ids=False))
    assert report.source_info[str(path)]["jet_vertex_tagger"].startswith("not applied (no AnalysisJetsAuxDyn.NNJvtPass")
    path = write_physlite_rntuple(shared_data / PHYSLITE, tmp_path / "nomet.root",
                                  drop=("MET_Core_AnalysisMETAuxDyn.mpx",))
    with pytest.raises(HepfmError, match=r"no branch MET_Core_AnalysisMETAuxDyn\.mpx \(needed for missing ET\)"):
        convert_physlite([path], tmp_path / "u", "z", progress=False)
    assert not (tmp_path / "u").exists()


def test_not_a_physlite_file(shared_data, tmp_path):
    r = hepfm("convert", "physlite", shared_data / "nano_dy.root", "--out", tmp_path / "s")
    one_line_error(r, "nano_dy.root", "no tree 'CollectionTree'", "is this the right format?")
    text = tmp_path / "notes.root"
    text.write_text("not a ROOT file\n")
    r = hepfm("convert", "physlite", text, "--out", tmp_path / "s")
    one_line_error(r, "notes.root", "not a readable ROOT file")
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(create_model("graphnet", 2, share_blocks=True), folder, {"task": "multiclass", "names": ["a", "b"]})
    return folder


def test_predict_scores_physlite_with_identities(model_dir, converted, shared_data, tmp_path):
    """Scores read straight from the PHYSLITE file equal the scores of its converted store, row for row."""
    import pyarrow.parquet as pq

    _, a = converted
    r = hepfm("predict", model_dir, "--data", shared_data / PHYSLITE, "--format", "physlite",
              "--out", tmp_path / "direct.parquet", "--no-progress")
    assert r.returncode == 0, r.stderr
    direct = pq.read_table(tmp_path / "direct.parquet")
    assert direct.num_rows == 100 and {"file", "entry", "run", "luminosityBlock", "event"} <= set(direct.column_names)
    np.testing.assert_array_equal(direct["event"].to_numpy(), a["event_id"].astype(np.uint64))
    np.testing.assert_array_equal(direct["entry"].to_numpy(), np.arange(100))
    assert (direct["run"].to_numpy() == 300000).all()
    store = convert_physlite([shared_data / PHYSLITE], tmp_path / "store", "zee", progress=False).out
    r = hepfm("predict", model_dir, "--data", store, "--out", tmp_path / "stored.parquet", "--no-progress")
    assert r.returncode == 0, r.stderr
    stored = pq.read_table(tmp_path / "stored.parquet")
    for name in ("score_a", "score_b"):
        np.testing.assert_allclose(direct[name].to_numpy(), stored[name].to_numpy(), rtol=1e-6, atol=1e-7)
