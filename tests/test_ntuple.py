"""Analysis ntuples through a YAML mapping: the shipped CMS NanoAOD and Delphes mappings give the dedicated
readers' objects where the selections coincide, the ATLAS Open Data 13 TeV mapping on a synthetic file with
that release's branches, and one-line errors for mistakes in the mapping or the file."""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
from cli_runner import hepfm, one_line_error

from hepfm.errors import HepfmError
from hepfm.io.nanoaod import NanoAODSelection, convert_nanoaod
from hepfm.io.ntuple import convert_ntuple, load_mapping, parse_mapping, shipped_mappings
from hepfm.physics.detector import DetectorConfig

N = 300


def store_arrays(out, label):
    with h5py.File(sorted((out / label).glob("shard-*.h5"))[0]) as f:
        return {k: f[k][:] for k in f}


def opendata_events(seed: int = 3, scale: float = 1.0) -> dict:
    """Events with the branches of the ATLAS Open Data 13 TeV education ntuples (GeV; ``scale`` = 1000: MeV)."""
    rng = np.random.default_rng(seed)

    def jagged(counts, values):
        return ak.unflatten(values, counts)

    n_lep, n_jet, n_pho = rng.integers(0, 4, N), rng.integers(0, 7, N), rng.integers(0, 2, N)
    lep, jet, pho = int(n_lep.sum()), int(n_jet.sum()), int(n_pho.sum())

    def kin(counts, total, prefix, pt_range):
        pt = rng.uniform(*pt_range, total).astype(np.float32)
        eta = rng.uniform(-2.8, 2.8, total).astype(np.float32)
        return {f"{prefix}_pt": jagged(counts, pt * scale), f"{prefix}_eta": jagged(counts, eta),
                f"{prefix}_phi": jagged(counts, rng.uniform(-np.pi, np.pi, total).astype(np.float32)),
                f"{prefix}_e": jagged(counts, (pt * np.cosh(eta) * scale * 1.01).astype(np.float32))}

    return {
        **kin(n_lep, lep, "lep", (5, 120)),
        "lep_charge": jagged(n_lep, rng.choice([-1, 1], lep).astype(np.int32)),
        "lep_type": jagged(n_lep, rng.choice([11, 13, 15], lep, p=[0.45, 0.45, 0.1]).astype(np.uint32)),
        "lep_isTightID": jagged(n_lep, rng.random(lep) < 0.8),
        "lep_isTightIso": jagged(n_lep, rng.random(lep) < 0.9),
        **kin(n_pho, pho, "photon", (10, 80)),
        "photon_isTightID": jagged(n_pho, rng.random(pho) < 0.7),
        "photon_isTightIso": jagged(n_pho, rng.random(pho) < 0.9),
        **kin(n_jet, jet, "jet", (15, 200)),
        "jet_btag_quantile": jagged(n_jet, rng.integers(1, 6, jet).astype(np.int32)),
        "jet_jvt": jagged(n_jet, rng.random(jet) < 0.9),
        "met": (rng.uniform(0, 150, N) * scale).astype(np.float32),
        "met_phi": rng.uniform(-np.pi, np.pi, N).astype(np.float32),
        "mcWeight": rng.normal(1.0, 0.5, N).astype(np.float32),
        "ScaleFactor_PILEUP": rng.uniform(0.8, 1.2, N).astype(np.float32),
        "eventNumber": np.arange(5000, 5000 + N, dtype=np.int64),
        "runNumber": np.full(N, 284500, dtype=np.int32),
    }


def write_tree(path, data, name="analysis", rntuple=False):
    data = {k: v if isinstance(v, ak.Array) else ak.Array(v) for k, v in data.items()}
    with uproot.recreate(path) as f:
        if rntuple:
            f.mkrntuple(name, ak.Array(data))
        else:
            f.mktree(name, {k: v.type.content for k, v in data.items()})
            f[name].extend(data)
    return path


@pytest.fixture(scope="module")
def opendata(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opendata")
    events = opendata_events()
    path = write_tree(folder / "mc_ttbar.root", events)
    report = convert_ntuple([path], folder / "store", "atlas_opendata_13tev", "tt", progress=False)
    return events, report, store_arrays(folder / "store", "tt")


def test_shipped_mappings_parse():
    assert {"atlas_opendata_13tev", "cms_nanoaod", "delphes"} <= set(shipped_mappings())
    for name in shipped_mappings():
        assert load_mapping(name).collections


def test_opendata_objects(opendata):
    events, report, a = opendata
    assert report.n_read == report.n_written == N
    obj, kind = a["objects"], a["objects"][..., 6]
    lep_pt, lep_eta = ak.to_numpy(ak.flatten(events["lep_pt"])), np.abs(ak.to_numpy(ak.flatten(events["lep_eta"])))
    lep_type = ak.to_numpy(ak.flatten(events["lep_type"]))
    tight = ak.to_numpy(ak.flatten(events["lep_isTightID"] & events["lep_isTightIso"]))
    crack = (lep_eta > 1.37) & (lep_eta < 1.52)
    want_e = tight & (lep_type == 11) & (lep_pt >= 10) & (lep_eta <= 2.47) & ~crack
    want_mu = tight & (lep_type == 13) & (lep_pt >= 10) & (lep_eta <= 2.7)
    assert (kind == 2).sum() == want_e.sum() and (kind == 3).sum() == want_mu.sum()  # taus (15) are not leptons
    jets = kind == 1
    assert (obj[..., 0][jets] >= 25).all() and (np.abs(obj[..., 1][jets]) <= 2.5).all()
    # b-tag: quantile > 3.5 (the 70% working point): 2 of the 5 uniform quantiles
    assert 0.3 < obj[..., 4][jets].mean() < 0.5
    np.testing.assert_array_equal(obj[..., 0][kind == 6], events["met"].astype(np.float32))
    np.testing.assert_allclose(a["weight"], events["mcWeight"] * events["ScaleFactor_PILEUP"], rtol=1e-6)
    np.testing.assert_array_equal(a["event_id"], events["eventNumber"])
    assert (a["run"] == 284500).all()
    counts = report.counts[next(iter(report.counts))]
    assert counts["jets jet_jvt"] > 0 and counts["jets overlap"] > 0 and counts["leptons lep_isTightID"] > 0


def test_opendata_overlap_and_btag_exactly(tmp_path):
    """One event, worked by hand: a jet on top of the electron is removed, quantile 4 is a b-tag, 3 is not."""
    one = {"lep_pt": [[40.0]], "lep_eta": [[0.5]], "lep_phi": [[1.0]], "lep_e": [[50.0]], "lep_charge": [[-1]],
           "lep_type": [[11]], "lep_isTightID": [[True]], "lep_isTightIso": [[True]],
           "photon_pt": [[]], "photon_eta": [[]], "photon_phi": [[]], "photon_e": [[]],
           "photon_isTightID": [[]], "photon_isTightIso": [[]],
           "jet_pt": [[80.0, 60.0, 45.0, 30.0]], "jet_eta": [[0.5, -1.0, 2.0, 0.1]],
           "jet_phi": [[1.05, -2.0, 0.0, 3.0]], "jet_e": [[90.0, 100.0, 170.0, 31.0]],
           "jet_btag_quantile": [[5, 4, 3, 5]], "jet_jvt": [[True, True, True, False]],
           "met": [12.5], "met_phi": [0.25], "mcWeight": [2.0], "ScaleFactor_PILEUP": [0.5],
           "eventNumber": [7], "runNumber": [300000]}
    data = {k: ak.Array(v) for k, v in one.items()}
    data["photon_pt"] = ak.values_astype(data["photon_pt"], np.float32)
    for k in ("photon_eta", "photon_phi", "photon_e"):
        data[k] = ak.values_astype(data[k], np.float32)
    for k in ("photon_isTightID", "photon_isTightIso"):
        data[k] = ak.values_astype(data[k], bool)
    path = write_tree(tmp_path / "one.root", data)
    convert_ntuple([path], tmp_path / "s", "atlas_opendata_13tev", "x", progress=False)
    obj = store_arrays(tmp_path / "s", "x")["objects"][0]
    rows = obj[obj[:, 6] > 0]
    # jets first (60 b-tagged, 45 not; 80 overlaps the electron, 30 fails the JVT), then the electron, then MET
    np.testing.assert_allclose(rows[:, [0, 4, 6]], [[60, 1, 1], [45, 0, 1], [40, 0, 2], [12.5, 0, 6]])
    assert rows[2, 5] == -1


def test_rntuple_ntuple_matches_the_ttree(opendata, tmp_path):
    events, _, a = opendata
    path = write_tree(tmp_path / "mc_ttbar_rntuple.root", events, rntuple=True)
    convert_ntuple([path], tmp_path / "store", "atlas_opendata_13tev", "tt", progress=False, step_size=64)
    b = store_arrays(tmp_path / "store", "tt")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cms_mapping_gives_the_dedicated_readers_objects(shared_data, tmp_path):
    """nano_dy.root (2018 simulation) where the selections coincide: no ECAL gap nor simulated crack, no pile-up
    jet ID, the mapping's DeepJet cut; then every store array is the same, bit for bit."""
    cfg = DetectorConfig(crack_eta=(0.0, 0.0))
    convert_ntuple([shared_data / "nano_dy.root"], tmp_path / "a", "cms_nanoaod", "dy", detector=cfg, progress=False)
    convert_nanoaod([shared_data / "nano_dy.root"], tmp_path / "b", "dy", detector=cfg,
                    btag_branch="Jet_btagDeepFlavB", btag_cut=0.2783, progress=False,
                    selection=NanoAODSelection(ecal_gap=(0.0, 0.0), pileup_jet_id=False))
    a, b = store_arrays(tmp_path / "a", "dy"), store_arrays(tmp_path / "b", "dy")
    assert set(a) == set(b) and (a["objects"][..., 6] == 1).sum() > 20
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_delphes_mapping_gives_the_delphes_readers_objects(tmp_path):
    from test_delphes import delphes_events, write_delphes

    write_delphes(tmp_path / "d.root", delphes_events())
    from hepfm.io.delphes import convert_delphes

    convert_ntuple([tmp_path / "d.root"], tmp_path / "a", "delphes", "d", progress=False)
    convert_delphes([tmp_path / "d.root"], tmp_path / "b", "d", progress=False)
    a, b = store_arrays(tmp_path / "a", "d"), store_arrays(tmp_path / "b", "d")
    for key in ("objects", "n_objects", "weight", "event_id"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cli_and_one_line_errors(opendata, tmp_path):
    events, _, _ = opendata
    path = write_tree(tmp_path / "mc.root", events)
    r = hepfm("convert", "ntuple", path, "--mapping", "atlas_opendata_13tev", "--out", tmp_path / "ok", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{N} events read, {N} written" in r.stdout and "jet_btag_quantile > 3.5" in r.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("tree: analysis\nmet: {pt: met, phi: met_phi}\ncolections: {}\n")
    r = hepfm("convert", "ntuple", path, "--mapping", bad, "--out", tmp_path / "s")
    one_line_error(r, "bad.yaml", "unknown key 'colections'")
    bad.write_text("tree: analysis\nmet: {pt: met, phi: met_phi}\ncollections:\n"
                   "  jets: {kind: jet, pt: jet_pt, eta: jet_eta, phi: jet_phi, colour: red}\n")
    r = hepfm("convert", "ntuple", path, "--mapping", bad, "--out", tmp_path / "s")
    one_line_error(r, "collections.jets", "unknown key 'colour'")
    bad.write_text("tree: analysis\nmet: {pt: met, phi: met_phi}\ncollections:\n"
                   "  jets: {kind: jet, pt: jet_pt, eta: jet_eta, phi: jet_phi, btag: {branch: jet_mv2}}\n")
    r = hepfm("convert", "ntuple", path, "--mapping", bad, "--out", tmp_path / "s")
    one_line_error(r, "collections.jets.btag", "give 'cut'")
    bad.write_text("tree: analysis\nmet: {pt: met, phi: met_phi}\ncollections:\n"
                   "  jets: {kind: jet, pt: jet_ptt, eta: jet_eta, phi: jet_phi}\n")
    r = hepfm("convert", "ntuple", path, "--mapping", bad, "--out", tmp_path / "s")
    one_line_error(r, str(path), "no branch jet_ptt", "collection 'jets'")
    r = hepfm("convert", "ntuple", path, "--mapping", tmp_path / "absent.yaml", "--out", tmp_path / "s")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_unit_mismatches_are_refused(tmp_path):
    mev = write_tree(tmp_path / "mev.root", opendata_events(scale=1000.0))
    with pytest.raises(HepfmError, match=r"lep_pt has a median of .* GeV with the mapping.s units .GeV.; the file.s "
                                         r"units look like MeV"):
        convert_ntuple([mev], tmp_path / "a", "atlas_opendata_13tev", "x", progress=False)
    mapping = load_mapping("atlas_opendata_13tev")
    raw = {"tree": "analysis", "units": "MeV", "met": {"pt": "met", "phi": "met_phi"},
           "collections": {"jets": {"kind": "jet", "pt": "jet_pt", "eta": "jet_eta", "phi": "jet_phi"}}}
    report = convert_ntuple([mev], tmp_path / "b", parse_mapping(raw), "x", progress=False)
    assert report.n_written == N and mapping.tree == "analysis"
    events = opendata_events()
    events["jet_e"] = events["jet_e"] / 1000  # energy in TeV-like units beside pT in GeV
    mixed = write_tree(tmp_path / "mixed.root", events)
    with pytest.raises(HepfmError, match=r"jet_e is below jet_pt .* not in the same units"):
        convert_ntuple([mixed], tmp_path / "c", "atlas_opendata_13tev", "x", progress=False)
    with pytest.raises(HepfmError, match="unknown unit 'keV'"):
        parse_mapping({**raw, "units": "keV"}, "m.yaml")
    with pytest.raises(HepfmError, match="unknown kind 'gluon'"):
        parse_mapping({**raw, "collections": {"g": {"kind": "gluon", "pt": "a", "eta": "b", "phi": "c"}}})
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_predict_scores_an_ntuple_through_its_mapping(opendata, tmp_path):
    import pyarrow.parquet as pq
    import torch

    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model

    events, _, a = opendata
    torch.manual_seed(0)
    save_model(create_model("graphnet", 2, share_blocks=True), tmp_path / "m", {"task": "multiclass",
                                                                                 "names": ["a", "b"]})
    path = write_tree(tmp_path / "mc.root", events)
    r = hepfm("predict", tmp_path / "m", "--data", path, "--format", "ntuple", "--mapping", "atlas_opendata_13tev",
              "--out", tmp_path / "s.parquet", "--no-progress")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.num_rows == N
    np.testing.assert_array_equal(table["event"].to_numpy(), a["event_id"].astype(np.uint64))
    r = hepfm("predict", tmp_path / "m", "--data", path, "--format", "ntuple", "--out", tmp_path / "t.parquet")
    one_line_error(r, "--format ntuple needs --mapping")
    assert not (tmp_path / "t.parquet").exists()


def write_parquet(path, root_file, tree="analysis", rows=None):
    """A Parquet copy of a ROOT tree (list columns for the jagged branches)."""
    arrays = uproot.open(root_file)[tree].arrays()
    ak.to_parquet(arrays if rows is None else arrays[rows], path)
    return path


def test_parquet_copy_gives_the_same_objects(opendata, tmp_path):
    """The ATLAS Open Data mapping on a Parquet copy of the synthetic ROOT file: a file (found by its name,
    the mapping's tree ignored) and a folder of two files read as one dataset (``format: parquet``)."""
    events, _, a = opendata
    root_file = write_tree(tmp_path / "mc.root", events)
    single = write_parquet(tmp_path / "mc.parquet", root_file)
    convert_ntuple([single], tmp_path / "one", "atlas_opendata_13tev", "tt", progress=False, step_size=64)
    b = store_arrays(tmp_path / "one", "tt")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    folder = tmp_path / "dataset"
    folder.mkdir()
    write_parquet(folder / "part-0.parquet", root_file, rows=slice(0, 120))
    write_parquet(folder / "part-1.parquet", root_file, rows=slice(120, None))
    text = load_mapping("atlas_opendata_13tev").source
    yaml = open(text).read().replace("tree: analysis", "format: parquet")
    mapping = tmp_path / "parquet.yaml"
    mapping.write_text(yaml)
    convert_ntuple([folder], tmp_path / "two", mapping, "tt", progress=False, step_size=100)
    c = store_arrays(tmp_path / "two", "tt")
    for key in a:
        np.testing.assert_array_equal(a[key], c[key], err_msg=key)


def test_parquet_one_line_errors(opendata, tmp_path):
    events, _, _ = opendata
    path = write_parquet(tmp_path / "mc.parquet", write_tree(tmp_path / "mc.root", events))
    r = hepfm("convert", "ntuple", path, "--mapping", "atlas_opendata_13tev", "--out", tmp_path / "ok", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{N} events read, {N} written" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: parquet\nmet: {pt: met, phi: met_phi}\ncollections:\n"
                   "  jets: {kind: jet, pt: jet_ptt, eta: jet_eta, phi: jet_phi}\n")
    r = hepfm("convert", "ntuple", path, "--mapping", bad, "--out", tmp_path / "s")
    one_line_error(r, str(path), "Parquet dataset has no column jet_ptt", "collection 'jets'")
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    r = hepfm("convert", "ntuple", fake, "--mapping", "atlas_opendata_13tev", "--out", tmp_path / "s")
    one_line_error(r, str(fake), "not a readable Parquet file")
    assert not (tmp_path / "s").exists()
    with pytest.raises(HepfmError, match="format: unknown format 'csv'"):
        parse_mapping({"format": "csv", "met": {"pt": "m", "phi": "p"},
                       "collections": {"j": {"kind": "jet", "pt": "a", "eta": "b", "phi": "c"}}}, "m.yaml")
    with pytest.raises(HepfmError, match=r"m\.yaml: missing key 'tree'"):
        parse_mapping({"met": {"pt": "m", "phi": "p"},
                       "collections": {"j": {"kind": "jet", "pt": "a", "eta": "b", "phi": "c"}}}, "m.yaml")
