"""Delphes conversion, round trip through a tree with Delphes' branch names written by uproot.

uproot cannot write split TClonesArray branches, so the test tree holds ``Jet.PT``, ``Jet_size`` ... at
the top level, where a Delphes file nests them (``Jet/Jet.PT``). The leaf names are the same, and uproot
finds a sub-branch by its own name at any depth, so the reader reads both layouts alike.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepfm.io.delphes import convert_delphes
from hepfm.io.store import EventStore
from hepfm.physics.detector import DetectorConfig

N = 500


def delphes_events(seed: int = 7) -> dict[str, ak.Array]:
    """Random events with the Delphes classes' field names (classes/DelphesClasses.h) and types."""
    rng = np.random.default_rng(seed)

    def collection(n_max, fields):
        counts = rng.integers(0, n_max + 1, N)
        total = int(counts.sum())
        return ak.zip({k: ak.unflatten(f(total), counts) for k, f in fields.items()})

    kin = {"PT": lambda t: rng.uniform(5, 150, t).astype(np.float32),
           "Eta": lambda t: rng.uniform(-3, 3, t).astype(np.float32),
           "Phi": lambda t: rng.uniform(-np.pi, np.pi, t).astype(np.float32)}
    charge = {"Charge": lambda t: rng.choice([-1, 1], t).astype(np.int32)}
    one = np.ones(N, dtype=np.int64)
    return {
        "Event": ak.zip({"Number": ak.unflatten(np.arange(1000, 1000 + N, dtype=np.int64), one),
                         "Weight": ak.unflatten(rng.uniform(0.5, 2, N).astype(np.float32), one)}),
        "Jet": collection(8, {**kin, "Mass": lambda t: rng.uniform(0, 20, t).astype(np.float32),
                              "BTag": lambda t: rng.integers(0, 4, t).astype(np.uint32),
                              "TauTag": lambda t: (rng.random(t) < 0.1).astype(np.uint32),
                              "Charge": lambda t: rng.integers(-1, 2, t).astype(np.int32)}),
        "Electron": collection(2, {**kin, **charge}),
        "Muon": collection(2, {**kin, **charge}),
        "Photon": collection(2, {**kin, "E": lambda t: rng.uniform(20, 100, t).astype(np.float32)}),
        "MissingET": ak.zip({"MET": ak.unflatten(rng.uniform(0, 100, N).astype(np.float32), one),
                             "Eta": ak.unflatten(np.zeros(N, np.float32), one),
                             "Phi": ak.unflatten(rng.uniform(-np.pi, np.pi, N).astype(np.float32), one)}),
    }


def write_delphes(path, events, tree="Delphes"):
    """A TTree with Delphes' names: ``Jet.PT`` fields and ``Jet_size`` counters (uproot's naming hooks)."""
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: v.type.content for k, v in events.items()}, counter_name=lambda name: f"{name}_size",
                 field_name=lambda outer, inner: f"{outer}.{inner}")
        f[tree].extend(events)


def test_the_test_tree_has_delphes_branch_names(tmp_path):
    write_delphes(tmp_path / "d.root", delphes_events())
    keys = set(uproot.open(tmp_path / "d.root")["Delphes"].keys())
    assert {"Jet.PT", "Jet.Eta", "Jet.Phi", "Jet.BTag", "Jet.TauTag", "Jet.Charge", "Jet_size", "Electron.PT",
            "Electron.Charge", "Muon.PT", "Photon.PT", "MissingET.MET", "MissingET.Phi", "Event.Number"} <= keys


def _expected(events, cfg: DetectorConfig):
    """Per-event counts with the default cuts, computed directly on the awkward input."""
    crack = cfg.crack_eta
    e, m, p, j = events["Electron"], events["Muon"], events["Photon"], events["Jet"]
    ae, ap = abs(e.Eta), abs(p.Eta)
    e = e[(e.PT >= 10) & (ae <= 2.47) & ~((ae > crack[0]) & (ae < crack[1]))]
    m = m[(m.PT >= 10) & (abs(m.Eta) <= 2.7)]
    p = p[(p.PT >= 20) & (ap <= 2.37) & ~((ap > crack[0]) & (ap < crack[1]))]
    j = j[(j.PT >= 25) & (abs(j.Eta) <= 2.5)]
    lep = ak.concatenate([ak.zip({"Eta": x.Eta, "Phi": x.Phi}) for x in (e, m, p)], axis=1)
    pairs = ak.cartesian({"j": j, "l": lep}, nested=True)
    dphi = (pairs.j.Phi - pairs.l.Phi + np.pi) % (2 * np.pi) - np.pi
    close = ak.any(np.sqrt((pairs.j.Eta - pairs.l.Eta) ** 2 + dphi**2) < 0.4, axis=2)
    j = j[~close]
    return e, m, p, j


def test_delphes_round_trip(tmp_path):
    events = delphes_events()
    write_delphes(tmp_path / "d.root", events)
    report = convert_delphes([tmp_path / "d.root"], tmp_path / "store", "zprime", progress=False, shard_size=200)
    assert report.n_read == report.n_written == N and len(report.shards) == 3
    data = EventStore(tmp_path / "store").arrays()
    obj, kind = data["objects"], data["objects"][:, :, 6]
    e, m, p, j = _expected(events, DetectorConfig())
    n_other = ak.to_numpy(ak.num(e) + ak.num(m) + ak.num(p)) + 1
    kept = np.minimum(ak.to_numpy(ak.num(j)), 20 - n_other)
    np.testing.assert_array_equal((kind == 1).sum(axis=1), kept)
    np.testing.assert_array_equal((kind == 2).sum(axis=1), ak.to_numpy(ak.num(e)))
    np.testing.assert_array_equal((kind == 3).sum(axis=1), ak.to_numpy(ak.num(m)))
    np.testing.assert_array_equal((kind == 4).sum(axis=1), ak.to_numpy(ak.num(p)))
    np.testing.assert_array_equal(data["n_dropped"], ak.to_numpy(ak.num(j)) - kept)
    assert ((kind == 6).sum(axis=1) == 1).all()
    met = obj[kind == 6]
    np.testing.assert_allclose(met[:, 0], ak.to_numpy(ak.firsts(events["MissingET"].MET)), rtol=1e-6)
    assert (met[:, 1] == 0).all()
    # b-tag = bit 0 of Jet.BTag; charges of leptons come through
    full = kept == ak.to_numpy(ak.num(j))
    want_b = ak.to_numpy(ak.sum(j.BTag & 1, axis=1))
    np.testing.assert_array_equal(obj[:, :, 4].sum(axis=1)[full], want_b[full])
    np.testing.assert_array_equal(np.sort(obj[kind == 2][:, 5]), np.sort(ak.to_numpy(ak.flatten(e.Charge))))
    np.testing.assert_array_equal(data["event_id"], np.arange(1000, 1000 + N))
    np.testing.assert_allclose(data["weight"], ak.to_numpy(ak.firsts(events["Event"].Weight)))
    attrs = EventStore(tmp_path / "store").attrs()
    assert attrs["source_format"] == "delphes" and attrs["truth"] == "none" and attrs["btag_branch"] == "Jet.BTag"


def test_delphes_tau_tagging_and_btag_bit(tmp_path):
    events = delphes_events(3)
    write_delphes(tmp_path / "d.root", events)
    cfg = DetectorConfig(tau_tagging=True)
    convert_delphes([tmp_path / "d.root"], tmp_path / "store", "x", detector=cfg, btag_bit=1, progress=False)
    obj = EventStore(tmp_path / "store").arrays()["objects"]
    _, _, _, j = _expected(events, cfg)
    tau = j[((j.TauTag & 1) > 0) & (abs(j.Eta) < 2.5)]
    assert (obj[:, :, 6] == 5).sum() == ak.sum(ak.num(tau)) > 0
    taus = obj[obj[:, :, 6] == 5]
    assert (taus[:, 4] == 0).all() and set(np.unique(taus[:, 5])) <= {-1.0, 0.0, 1.0}
    jets = j[~(((j.TauTag & 1) > 0) & (abs(j.Eta) < 2.5))]
    assert obj[:, :, 4].sum() <= ak.sum((jets.BTag >> 1) & 1)


@pytest.mark.parametrize("drop, fragment", [("MissingET", "MissingET.MET"), ("Muon", "Muon.PT")])
def test_missing_delphes_branch_is_named(tmp_path, drop, fragment):
    from hepfm.errors import HepfmError

    events = {k: v for k, v in delphes_events().items() if k != drop}
    write_delphes(tmp_path / "d.root", events)
    with pytest.raises(HepfmError, match=fragment):
        convert_delphes([tmp_path / "d.root"], tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()


def test_tau_charge_is_the_sign_of_the_constituent_charge_sum(tmp_path):
    """Delphes' Jet.Charge sums the constituents' charges (e.g. +3, -2); the simulated chain stores its sign."""
    events = delphes_events(5)
    jets = events["Jet"]
    counts = ak.num(jets)
    raw = np.random.default_rng(1).integers(-3, 4, int(ak.sum(counts))).astype(np.int32)
    events["Jet"] = ak.zip({**{f: jets[f] for f in jets.fields if f != "Charge"},
                            "Charge": ak.unflatten(raw, counts)})
    write_delphes(tmp_path / "d.root", events)
    cfg = DetectorConfig(tau_tagging=True)
    convert_delphes([tmp_path / "d.root"], tmp_path / "store", "x", detector=cfg, progress=False)
    taus = EventStore(tmp_path / "store").arrays()["objects"]
    taus = taus[taus[:, :, 6] == 5]
    _, _, _, j = _expected(events, cfg)
    want = j[((j.TauTag & 1) > 0) & (abs(j.Eta) < 2.5)].Charge
    assert len(taus) == ak.sum(ak.num(want)) > 0 and ak.any(abs(want) > 1)
    np.testing.assert_array_equal(np.sort(taus[:, 5]), np.sort(np.sign(ak.to_numpy(ak.flatten(want)))))
