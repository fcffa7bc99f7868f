"""Jet constituents from Delphes files: ``Jet.Constituents`` references resolved to EFlow objects.

uproot cannot write a TRefArray branch, so the tree written here holds every branch but
``Jet.Constituents``, and :class:`TreeWithRefs` adds that one in the layout uproot reads from a Delphes
file (per jet a ``TRefArray`` record: ``fName``, ``fSize`` and ``refs``, the referenced objects' unique
IDs). Every other step (branch checks, chunked reading, cuts, storage) is the real conversion.

The jets are built from their constituents (massless four-vector sums), so the stored constituents must
add up to their jet (physics closure) and lie close to its axis.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepfm.data.datasets import stored_constituents
from hepfm.data.jets import jet_tagging_data
from hepfm.errors import HepfmError
from hepfm.io import delphes
from hepfm.io.delphes import convert_delphes
from hepfm.io.schema import CONSTITUENT_CLASSES, CONSTITUENT_INDEX, JET_FLAVOURS
from hepfm.io.store import EventStore
from hepfm.physics.detector import DetectorConfig

N = 300
K = 8
FLAVOURS = {0: "unmatched", 1: "light", 2: "light", 3: "light", 4: "c", 5: "b", 21: "gluon", 6: "unmatched"}


def _four_vector(pt, eta, phi):
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)


def delphes_with_constituents(seed: int = 11):
    """(events for the tree, Jet.Constituents refs): jets summed from EFlow tracks, photons, neutral hadrons."""
    rng = np.random.default_rng(seed)
    cols = {name: {f: [] for f in fields} for name, fields in (
        ("EFlowTrack", ("PT", "Eta", "Phi", "Charge", "PID", "fUniqueID")),
        ("EFlowPhoton", ("ET", "Eta", "Phi", "E", "fUniqueID")),
        ("EFlowNeutralHadron", ("ET", "Eta", "Phi", "E", "fUniqueID")))}
    jets = {f: [] for f in ("PT", "Eta", "Phi", "Mass", "BTag", "TauTag", "Charge", "Flavor")}
    refs = []
    for _ in range(N):
        n_jets = int(rng.integers(0, 5))
        n_cand = int(rng.integers(30, 70))
        uids = rng.permutation(np.arange(1, 4 * n_cand)).astype(np.uint32)[:n_cand]
        owner = np.where(rng.random(n_cand) < 0.6, -1, rng.integers(0, max(n_jets, 1), n_cand)) if n_jets \
            else np.full(n_cand, -1)
        axes = np.column_stack([rng.uniform(-2.0, 2.0, max(n_jets, 1)), rng.uniform(-np.pi, np.pi, max(n_jets, 1))])
        kind = rng.integers(0, 3, n_cand)
        pt = rng.exponential(12.0, n_cand) + 1.0
        in_jet = owner >= 0
        eta = np.where(in_jet, axes[owner.clip(0), 0] + rng.normal(0, 0.1, n_cand), rng.uniform(-4, 4, n_cand))
        phi = np.where(in_jet, axes[owner.clip(0), 1] + rng.normal(0, 0.1, n_cand), rng.uniform(-3, 3, n_cand))
        phi = (phi + np.pi) % (2 * np.pi) - np.pi
        for name, k in (("EFlowTrack", 0), ("EFlowPhoton", 1), ("EFlowNeutralHadron", 2)):
            sel = kind == k
            c = cols[name]
            c["PT" if k == 0 else "ET"].append(pt[sel].astype(np.float32))
            c["Eta"].append(eta[sel].astype(np.float32))
            c["Phi"].append(phi[sel].astype(np.float32))
            c["fUniqueID"].append(uids[sel])
            if k == 0:
                c["Charge"].append(rng.choice([-1, 1], sel.sum()).astype(np.int32))
                c["PID"].append(rng.choice([211, -211, 11, -13, 321], sel.sum()).astype(np.int32))
            else:
                c["E"].append((pt[sel] * np.cosh(eta[sel])).astype(np.float32))
        event_refs, jet_pt, jet_eta, jet_phi = [], [], [], []
        for j in range(n_jets):
            members = np.nonzero(owner == j)[0]
            # from float32 kinematics, as the reader sees them
            px, py, pz, _ = _four_vector(*(v[members].astype(np.float32).astype(np.float64) for v in (pt, eta, phi)))
            p_t = np.hypot(px.sum(), py.sum())
            jet_pt.append(p_t)
            jet_eta.append(np.arcsinh(pz.sum() / p_t) if p_t > 0 else 0.0)
            jet_phi.append(np.arctan2(py.sum(), px.sum()))
            ids = list(uids[members])
            if j == 0:
                ids.append(np.uint32(4 * n_cand + 7))  # an object the file does not store
            event_refs.append(rng.permutation(np.asarray(ids, dtype=np.int32)))
        refs.append(event_refs)
        jets["PT"].append(np.asarray(jet_pt, np.float32))
        jets["Eta"].append(np.asarray(jet_eta, np.float32))
        jets["Phi"].append(np.asarray(jet_phi, np.float32))
        jets["Mass"].append(np.zeros(n_jets, np.float32))
        jets["BTag"].append(np.zeros(n_jets, np.uint32))
        jets["TauTag"].append((rng.random(n_jets) < 0.2).astype(np.uint32))
        jets["Charge"].append(rng.integers(-1, 2, n_jets).astype(np.int32))
        jets["Flavor"].append(rng.choice(list(FLAVOURS), n_jets).astype(np.int32))

    def zipped(fields):
        return ak.zip({f: ak.Array(v) for f, v in fields.items()})

    one = np.ones(N, dtype=np.int64)
    empty = {f: [np.zeros(0, np.float32)] * N for f in ("PT", "Eta", "Phi")}
    lepton = zipped({**empty, "Charge": [np.zeros(0, np.int32)] * N})
    events = {"Jet": zipped(jets), "Electron": lepton, "Muon": lepton,
              "MissingET": ak.zip({"MET": ak.unflatten(np.full(N, 30.0, np.float32), one),
                                   "Phi": ak.unflatten(np.zeros(N, np.float32), one)}),
              **{name: zipped(c) for name, c in cols.items()}}
    refs = ak.Array([[{"fName": "", "fSize": len(r), "refs": r} for r in event] for event in refs])
    return events, refs


def relayout(events, layout):
    """The same objects as other cards write them. ``eflow`` adds ``ParticleFlowCandidate`` copies of every
    EFlow object (same IDs) with doubled pT, which must lose to the EFlow collections, and a ``Track`` copy of
    the tracks with doubled pT, which must not be read. ``tracks_towers``: tracks and calorimeter towers only
    (photons with all their energy in the ECAL), IDs with a process index above bit 24, no ``Jet.Flavor``."""
    trk, pho, neu = events["EFlowTrack"], events["EFlowPhoton"], events["EFlowNeutralHadron"]
    rest = {k: v for k, v in events.items() if not k.startswith("EFlow")}
    if layout == "eflow":
        def candidates(c, pt, charge, pid):
            return ak.zip({"PT": 2 * pt, "Eta": c.Eta, "Phi": c.Phi, "E": 2 * pt * np.cosh(c.Eta), "Charge": charge,
                           "PID": pid, "fUniqueID": c.fUniqueID})

        pf = ak.concatenate([candidates(trk, trk.PT, trk.Charge, trk.PID),
                             candidates(pho, pho.ET, 0 * pho.fUniqueID, 22 + 0 * pho.fUniqueID),
                             candidates(neu, neu.ET, 0 * neu.fUniqueID, 130 + 0 * neu.fUniqueID)], axis=1)
        return {**events, "ParticleFlowCandidate": pf, "Track": ak.with_field(trk, 2 * trk.PT, "PT")}
    towers = ak.concatenate([ak.zip({**{f: c[f] for f in ak.fields(c)}, "Eem": c.E * em, "Ehad": c.E * (1 - em)})
                             for c, em in ((pho, 1.0), (neu, 0.0))], axis=1)
    high = np.uint32(3 << 24)
    jet = rest["Jet"]
    rest["Jet"] = jet[[f for f in ak.fields(jet) if f != "Flavor"]]
    return {**rest, "Track": ak.with_field(trk, trk.fUniqueID | high, "fUniqueID"),
            "Tower": ak.with_field(towers, towers.fUniqueID | high, "fUniqueID")}


def write_tree(path, events):
    with uproot.recreate(path) as f:
        f.mktree("Delphes", {k: v.type.content for k, v in events.items()},
                 counter_name=lambda name: f"{name}_size", field_name=lambda outer, inner: f"{outer}.{inner}")
        f["Delphes"].extend(events)


class TreeWithRefs:
    """A written uproot tree plus the ``Jet.Constituents`` branch uproot cannot write (see the docstring)."""

    def __init__(self, tree, refs):
        self.tree, self.refs = tree, refs
        self.num_entries = tree.num_entries

    def __getitem__(self, name):
        return self.refs if name == "Jet.Constituents" else self.tree[name]

    def iterate(self, branches, step_size, library, report):
        rest = [b for b in branches if b != "Jet.Constituents"]
        for chunk, rep in self.tree.iterate(rest, step_size=step_size, library=library, report=True):
            yield ak.with_field(chunk, self.refs[rep.tree_entry_start:rep.tree_entry_stop], "Jet.Constituents"), rep


@pytest.fixture(params=["eflow", "tracks_towers"])
def converted(request, tmp_path, monkeypatch):
    events, refs = delphes_with_constituents()
    report = _convert(tmp_path, monkeypatch, relayout(events, request.param), refs)
    return events, refs, report, tmp_path / "store", request.param


def _convert(tmp_path, monkeypatch, events, refs, name="d.root", **kwargs):
    """Convert ``events`` written to a file, with ``refs`` as its Jet.Constituents, to tmp_path/store."""
    write_tree(tmp_path / name, events)
    real_open = delphes.cv.open_tree
    monkeypatch.setattr(delphes.cv, "open_tree", lambda path, tree: TreeWithRefs(real_open(path, tree), refs))
    return convert_delphes([tmp_path / name], tmp_path / "store", "jets", constituents=K, progress=False,
                           step_size=70, shard_size=120, **kwargs)


def test_delphes_constituents_add_up_to_their_jet(converted):
    _, refs, report, out, layout = converted
    assert report.n_written == N
    (counts,) = report.counts.values()
    assert counts["constituent_references"] == ak.sum(ak.num(refs["refs"], axis=2))
    # one reference per event with jets points to an object the file does not store
    assert counts["constituent_references"] - counts["constituent_references_resolved"] == ak.sum(ak.num(refs) > 0)
    data = EventStore(out).arrays(fields=("objects", "n_objects", "constituents", "n_constituents", "jet_flavour"))
    obj, con, n_con = data["objects"], data["constituents"], data["n_constituents"]
    jet = obj[..., 6] == 1
    assert jet.sum() > 200 and (n_con[~jet] == 0).all() and (con[~jet] == 0).all()
    c = CONSTITUENT_INDEX
    pt, deta, dphi, energy = (con[..., c[name]].astype(np.float64) for name in ("pt", "deta", "dphi", "energy"))
    real = np.arange(K) < n_con[..., None]
    assert (pt[real] > 0).all() and (pt[~real] == 0).all()
    assert (np.diff(pt, axis=-1) <= 0).all()  # descending pT
    assert (np.abs(deta[real]) < 0.8).all() and (np.abs(dphi[real]) < 0.8).all()
    # massless: E = pT cosh(eta)
    np.testing.assert_allclose(energy[real], (pt * np.cosh(deta + obj[..., 1:2]))[real], rtol=1e-4)
    # closure: jets whose constituents all fit sum back to the jet's momentum (magnitude and direction)
    all_fit = jet & (n_con < K)
    assert all_fit.sum() > 50
    summed = [(v * real).sum(-1)[all_fit] for v in _four_vector(pt, deta + obj[..., 1:2], dphi + obj[..., 2:3])[:3]]
    wanted = _four_vector(*(obj[..., i].astype(np.float64)[all_fit] for i in range(3)))[:3]
    for got, want in zip(summed, wanted, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert (data["jet_flavour"][~jet] == JET_FLAVOURS["none"]).all()
    assert stored_constituents(out) == K
    if layout == "tracks_towers":  # no Jet.Flavor: no flavour truth, so nothing to tag
        assert (data["jet_flavour"][jet] == JET_FLAVOURS["unmatched"]).all()
        with pytest.raises(HepfmError, match="two flavours or more"):
            jet_tagging_data(out)
        return
    # usable for jet tagging: the flavoured jets, by the flavours Delphes gives
    splits, classes = jet_tagging_data(out)
    assert classes == ["light", "gluon", "c", "b"]
    assert sum(len(d.y) for d in splits.values()) == (jet & (data["jet_flavour"] > JET_FLAVOURS["unmatched"])).sum()


def test_delphes_constituent_classes_and_counts(converted):
    events, refs, _, out, layout = converted
    data = EventStore(out).arrays(fields=("constituents", "n_constituents", "jet_flavour"))
    con, n_con = data["constituents"], data["n_constituents"]
    real = np.arange(K) < n_con[..., None]
    cls = con[..., CONSTITUENT_INDEX["class"]][real]
    charge = con[..., CONSTITUENT_INDEX["charge"]][real]
    classes = CONSTITUENT_CLASSES
    assert set(np.unique(cls)) == {classes[k] for k in ("charged_hadron", "neutral_hadron", "photon", "electron",
                                                        "muon")}
    assert (charge[np.isin(cls, [classes["photon"], classes["neutral_hadron"]])] == 0).all()
    assert (np.abs(charge[np.isin(cls, [classes["charged_hadron"], classes["electron"], classes["muon"]])]) == 1).all()
    # every stored jet keeps min(resolved references, K) (the reference to an unstored object is dropped)
    # and the flavour of its Jet.Flavor; jets fill the first slots in descending pT
    pt, eta, pdg = events["Jet"].PT, events["Jet"].Eta, events["Jet"].Flavor
    n_refs = ak.num(refs["refs"], axis=2)
    for i in range(N):
        flavours = [FLAVOURS[int(f)] if layout == "eflow" else "unmatched" for f in pdg[i]]
        want = sorted((-float(pt[i][j]), min(int(n_refs[i][j]) - (j == 0), K), JET_FLAVOURS[flavours[j]])
                      for j in range(len(pt[i])) if pt[i][j] >= 25 and abs(eta[i][j]) <= 2.5)
        n = len(want)
        assert list(n_con[i, :n]) == [c for _, c, _ in want] and (n_con[i, n:] == 0).all()
        assert list(data["jet_flavour"][i, :n]) == [f for _, _, f in want]


def test_delphes_without_constituent_references_is_refused(tmp_path):
    events, _ = delphes_with_constituents()
    write_tree(tmp_path / "d.root", events)
    with pytest.raises(HepfmError, match=r"d\.root.*Jet\.Constituents"):
        convert_delphes([tmp_path / "d.root"], tmp_path / "store", constituents=K, progress=False)
    assert not (tmp_path / "store").exists()
    # without asking for constituents the same file converts, with no constituent datasets
    convert_delphes([tmp_path / "d.root"], tmp_path / "plain", progress=False)
    assert "constituents" not in EventStore(tmp_path / "plain").arrays()


def test_delphes_references_without_their_collections_are_refused(tmp_path, monkeypatch):
    events, refs = delphes_with_constituents()
    with pytest.raises(HepfmError, match=r"d\.root: .*stores none of .*EFlowTrack.*fUniqueID"):
        _convert(tmp_path, monkeypatch, {k: v for k, v in events.items() if not k.startswith("EFlow")}, refs)
    assert not (tmp_path / "store").exists()
    # only the tracks stored: most references (photons, neutral hadrons) point nowhere
    tracks_only = {k: v for k, v in events.items() if k not in ("EFlowPhoton", "EFlowNeutralHadron")}
    with pytest.raises(HepfmError, match=r"e\.root: only \d+ of \d+ jet constituent references resolve"):
        _convert(tmp_path, monkeypatch, tracks_only, refs, name="e.root")
    assert not (tmp_path / "store").exists()


def test_tau_tagged_jets_keep_no_constituents(tmp_path, monkeypatch):
    events, refs = delphes_with_constituents()
    _convert(tmp_path, monkeypatch, events, refs, detector=DetectorConfig(tau_tagging=True))
    data = EventStore(tmp_path / "store").arrays(fields=("objects", "n_constituents", "jet_flavour"))
    kind = data["objects"][..., 6]
    assert (kind == 5).sum() > 20 and (kind == 1).sum() > 100
    assert (data["n_constituents"][kind == 5] == 0).all() and (data["jet_flavour"][kind == 5] == 0).all()
    assert (data["n_constituents"][kind == 1] > 0).mean() > 0.9


def test_delphes_constituent_store_attributes(converted):
    *_, out, _ = converted
    attrs = EventStore(out).attrs()
    assert attrs["max_constituents"] == K and attrs["source_format"] == "delphes"
    assert DetectorConfig().to_dict() == attrs["detector"]


def test_predict_scores_delphes_files_like_their_converted_store(converted, tmp_path, monkeypatch):
    """A hierarchical model scores the Delphes file itself exactly as the store converted from it."""
    import pyarrow.parquet as pq
    import torch

    from hepfm.data.datasets import read_events, with_constituents
    from hepfm.data.features import fit_scaling
    from hepfm.inference.predict import predict_file
    from hepfm.models.hierarchical import N_CONSTITUENT, N_OBJECT
    from hepfm.models.jets import fit_constituent_scaling
    from hepfm.models.pretrained import data_schema
    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model

    *_, out, _ = converted
    arrays = read_events(out, ("objects", "n_objects", "constituents"))[0]
    x = with_constituents(arrays["objects"], arrays["constituents"])
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model="graphnet", jet_model="deepsets", max_constituents=K)
    model.scaling.set(*fit_scaling(x[..., :N_OBJECT], arrays["n_objects"]))
    jets = arrays["constituents"][arrays["objects"][..., 6] == 1].reshape(-1, K, N_CONSTITUENT)
    model.jet.scaling.set(*fit_constituent_scaling(jets, (jets[..., -1] > 0).sum(axis=1)))
    save_model(model.eval(), tmp_path / "model",
               {"task": "binary", "names": ["background", "signal"], "data_schema": data_schema(EventStore(out))})
    predict_file(tmp_path / "model", out, tmp_path / "store.parquet", progress=False)
    predict_file(tmp_path / "model", [str(tmp_path / "d.root")], tmp_path / "file.parquet", input_format="delphes",
                 chunk_size=70, progress=False)
    from_store, from_file = pq.read_table(tmp_path / "store.parquet"), pq.read_table(tmp_path / "file.parquet")
    np.testing.assert_array_equal(from_file["entry"].to_numpy(), np.arange(N))
    scores = from_store["score_signal"].to_numpy()
    assert scores.std() > 0
    np.testing.assert_allclose(from_file["score_signal"].to_numpy(), scores, atol=1e-6)
    # a Delphes file whose jets keep no constituents is refused, naming the file and the branch
    monkeypatch.undo()
    with pytest.raises(HepfmError, match=r"d\.root: .*no branch Jet\.Constituents"):
        predict_file(tmp_path / "model", [str(tmp_path / "d.root")], tmp_path / "none.parquet", input_format="delphes",
                     progress=False)
    assert not (tmp_path / "none.parquet").exists()
