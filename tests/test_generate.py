"""Generation mechanics: reproducibility, resumable shards, batch-system shards, LHE input."""

import os
import sys

import h5py
import numpy as np
import pytest

from hepfm.errors import HepfmError
from hepfm.io import generate as gen
from hepfm.io import store
from hepfm.io.generate import catalog_source, generate, lhe_source
from hepfm.io.store import EventStore
from hepfm.physics import generation as sim

pytestmark = pytest.mark.pythia
pytest.importorskip("pythia8mc")

FIELDS = ("objects", "n_objects", "truth", "weight", "event_id")


def read(root):
    return EventStore(root).arrays(fields=FIELDS)


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate([catalog_source("ttbar")], tmp_path / name, events=60, seed=seed, progress=False)
    a, b, c = read(tmp_path / "a"), read(tmp_path / "b"), read(tmp_path / "c")
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["objects"], c["objects"])
    # the shard files themselves are byte-for-byte identical
    shard = ("ttbar", store.shard_name(0))
    assert store.file_sha256(tmp_path.joinpath("a", *shard)) == store.file_sha256(tmp_path.joinpath("b", *shard))


def test_rerun_skips_complete_shards_and_reports_them(tmp_path, monkeypatch):
    out = tmp_path / "s"
    first = generate([catalog_source("zh")], out, events=40, seed=1, shard_size=20, progress=False)
    assert len(first.written) == 2 and first.skipped == []
    mtimes = {p: os.stat(p).st_mtime_ns for p in first.written}
    again = generate([catalog_source("zh")], out, events=40, seed=1, shard_size=20, progress=False)
    assert again.written == [] and sorted(again.skipped) == sorted(first.written)
    assert {p: os.stat(p).st_mtime_ns for p in first.written} == mtimes
    # A complete store needs no Pythia: a machine that only trains reuses it.
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    assert generate([catalog_source("zh")], out, events=40, seed=1, shard_size=20, progress=False).written == []
    with pytest.raises(HepfmError, match="needs Pythia 8"):
        generate([catalog_source("zh")], out, events=60, seed=1, shard_size=20, progress=False)
    with pytest.raises(HepfmError, match="different seed"):
        generate([catalog_source("zh")], out, events=40, seed=2, shard_size=20, progress=False)


def test_batch_system_shards_add_up_to_the_full_run(tmp_path):
    full = tmp_path / "full"
    generate([catalog_source("wh")], full, events=50, seed=3, num_shards=2, progress=False)
    split = tmp_path / "split"
    for i in (1, 0):
        report = generate([catalog_source("wh")], split, events=50, seed=3, num_shards=2, shard_index=i,
                          progress=False)
        assert [os.path.basename(p) for p in report.written] == [store.shard_name(i)]
    assert EventStore(split).counts() == {"wh": 50}
    a, b = read(full), read(split)
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["event_id"], np.arange(50))
    with pytest.raises(HepfmError, match="out of range"):
        generate([catalog_source("wh")], split, events=50, seed=3, num_shards=2, shard_index=2, progress=False)


def test_interrupted_run_leaves_no_complete_looking_shard(tmp_path, monkeypatch):
    out = tmp_path / "s"
    calls = {"n": 0}
    original = sim.reconstruct

    def reconstruct_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, "BATCH_EVENTS", 10)
    monkeypatch.setattr(sim, "reconstruct", reconstruct_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate([catalog_source("ttbar")], out, events=30, seed=1, progress=False)
    assert not out.exists()  # the run created it and completed nothing
    out.mkdir()
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        generate([catalog_source("ttbar")], out, events=30, seed=1, progress=False)
    assert list(out.iterdir()) == []  # the user's folder stays, with nothing half-made inside
    monkeypatch.setattr(sim, "reconstruct", original)
    report = generate([catalog_source("ttbar")], out, events=30, seed=1, progress=False)
    assert len(report.written) == 1 and EventStore(out).counts() == {"ttbar": 30}


def test_shard_metadata_records_the_configuration(tmp_path):
    generate([catalog_source("ggf_h")], tmp_path / "s", events=10, seed=9, progress=False)
    attrs = EventStore(tmp_path / "s").attrs("ggf_h")
    assert attrs["generator_version"].startswith("8.3")
    assert "HiggsSM:gg2H = on" in attrs["generator_settings"]
    assert any(s.startswith("Random:seed = ") for s in attrs["generator_settings"])
    assert attrs["detector"]["jet_radius"] == 0.4 and attrs["detector"]["jet_pt_min"] == 25.0
    assert len(attrs["truth_labels"]) == 41 and attrs["schema_version"] == 2
    assert attrs["sigma_pb"] > 0


def test_parallel_workers_match_serial(tmp_path):
    kw = dict(events=30, seed=4, shard_size=15, progress=False)
    generate([catalog_source("wjets")], tmp_path / "serial", workers=1, **kw)
    generate([catalog_source("wjets")], tmp_path / "parallel", workers=2, **kw)
    a, b = read(tmp_path / "serial"), read(tmp_path / "parallel")
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


# The POWHEG test file, despite its name, holds low-mass Z/gamma* -> ee events.
@pytest.mark.parametrize("filename, n_events, n_tops, n_w_min, n_z", [
    ("pylhe-testfile-powheg-box-v2-hvq.lhe", 6, 0, 0, 1),
    ("pylhe-testfile-madgraph-2.0.0-wbj.lhe", 59, None, 1, 0),  # W b j, some through an s-channel top
    ("pylhe-testfile-pythia-6.413-ttbar.lhe", 100, 2, 2, 0),
])
def test_lhe_files_are_showered_through_the_same_chain(tmp_path, shared_data, filename, n_events, n_tops, n_w_min,
                                                       n_z):
    from hepfm.physics.truth import LABEL_NAMES

    out = tmp_path / "lhe"
    report = generate([lhe_source(shared_data / filename, "ext")], out, events=None, seed=1, progress=False)
    assert report.n_events == n_events
    data = EventStore(out).arrays()
    assert len(data["objects"]) == n_events
    idx = {n: i for i, n in enumerate(LABEL_NAMES)}
    if n_tops is not None:
        assert np.all(data["truth"][:, idx["n_tops"]] == n_tops)
    assert np.all(data["truth"][:, idx["n_W"]] >= n_w_min)
    assert np.all(data["truth"][:, idx["n_Z"]] == n_z)
    assert (data["n_objects"] >= 1).all()
    with h5py.File(out / "ext" / store.shard_name(0)) as f:
        assert f.attrs["lhe_file"].endswith(filename)


def test_lhe_events_option_and_shards(tmp_path, shared_data):
    src = lhe_source(shared_data / "pylhe-testfile-pythia-6.413-ttbar.lhe", "tt6")
    generate([src], tmp_path / "a", events=30, seed=1, shard_size=20, progress=False)
    data = read(tmp_path / "a")
    np.testing.assert_array_equal(data["event_id"], np.arange(30))
    assert EventStore(tmp_path / "a").counts() == {"tt6": 30}


@pytest.mark.slow
def test_tau_tagging_finds_taus_in_z_events_and_few_in_qcd(tmp_path):
    from hepfm.physics import validation as val
    from hepfm.physics.detector import DetectorConfig

    cfg = DetectorConfig(tau_tagging=True)
    generate([catalog_source("zjets")], tmp_path / "z", events=400, seed=5, detector=cfg, progress=False)
    generate([catalog_source("qcd")], tmp_path / "q", events=150, seed=5, detector=cfg, progress=False)
    z = EventStore(tmp_path / "z").arrays()["objects"]
    q = EventStore(tmp_path / "q").arrays()["objects"]
    assert (val.multiplicity(z, "tau") > 0).mean() > 0.05  # Z -> tau tau is a third of the sample
    q_taus, q_jets = val.multiplicity(q, "tau").sum(), val.multiplicity(q, "jet").sum()
    assert q_taus / (q_taus + q_jets) < 0.03
    assert EventStore(tmp_path / "z").attrs()["detector"]["tau_tagging"] is True


def test_gzipped_lhe_is_read_and_a_cut_one_rejected(tmp_path, shared_data):
    import gzip

    raw = (shared_data / "pylhe-testfile-pythia-6.413-ttbar.lhe").read_bytes()
    gz = tmp_path / "tt6.lhe.gz"
    gz.write_bytes(gzip.compress(raw))
    report = generate([lhe_source(gz, "tt6")], tmp_path / "s", events=None, seed=1, progress=False)
    assert report.n_events == 100
    cut = tmp_path / "cut.lhe.gz"
    cut.write_bytes(gzip.compress(raw)[:2000])
    with pytest.raises(HepfmError, match=r"cut\.lhe\.gz: truncated or corrupt"):
        lhe_source(cut, "x")


def test_unidentified_muons_escape_and_never_make_jets(tmp_path):
    """Z -> mumu with muon identification off: no dijet Z peak, and the muons' momentum is missing."""
    import dataclasses

    from hepfm.physics import validation as val
    from hepfm.physics.detector import DetectorConfig

    src = catalog_source("zjets", ["23:onMode = off", "23:onIfAny = 13"])
    default = DetectorConfig()
    no_id = dataclasses.replace(default, muon_efficiency=[(default.muon_eta_max, 0.0)])
    objects = {}
    for name, cfg in (("default", default), ("no_id", no_id)):
        generate([src], tmp_path / name, events=600, seed=3, detector=cfg, progress=False)
        objects[name] = read(tmp_path / name)["objects"]
    m_jj = val.pair_mass(objects["no_id"], "jet")
    z_window = np.nanmean((m_jj > 81) & (m_jj < 101))
    assert z_window < 0.05  # ~0.25 when muons came back as jets
    assert val.multiplicity(objects["no_id"], "muon").sum() == 0
    assert val.multiplicity(objects["no_id"], "jet").mean() <= val.multiplicity(objects["default"], "jet").mean()
    assert val.met(objects["no_id"]).mean() > 35.0  # ~8 GeV when the muons were calorimeter deposits
    assert val.met(objects["default"]).mean() < val.met(objects["no_id"]).mean() - 15.0


def test_fcnc_top_and_antitop_decays_are_mixed_in_every_shard(tmp_path):
    """Which of t or tbar decays to H c is drawn per event: every 200-event shard is charge balanced."""
    from scipy import stats

    from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES

    for name in ("a", "b"):
        generate([catalog_source("fcnc_thq")], tmp_path / name, events=600, seed=9, shard_size=200, progress=False)
    shards = sorted((tmp_path / "a" / "fcnc_thq").glob("shard-*.h5"))
    assert len(shards) == 3
    for path in shards:
        with h5py.File(path) as f:
            obj = f["objects"][:]
            attrs = store.read_attrs(path)
        t, q = obj[..., FEATURE_INDEX["type"]], obj[..., FEATURE_INDEX["charge"]]
        lep = (t == TYPE_CODES["electron"]) | (t == TYPE_CODES["muon"])
        n_pos, n_neg = int((q[lep] > 0).sum()), int((q[lep] < 0).sum())
        assert n_pos + n_neg > 20
        # one charge assignment per shard gave ~15% positive leptons (p ~ 1e-6 at this size)
        assert stats.binomtest(n_pos, n_pos + n_neg, 0.5).pvalue > 1e-3, (path.name, n_pos, n_neg)
        # the cross section is that of the whole sample: both assignments, about equal
        sig_a, sig_b = attrs["mixture_sigma_pb"]
        assert attrs["sigma_pb"] == pytest.approx(sig_a + sig_b)
        assert sig_a == pytest.approx(sig_b, rel=0.3)
    a, b = read(tmp_path / "a"), read(tmp_path / "b")
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


def test_fcnc_mixture_survives_a_one_event_batch(tmp_path):
    """The last generation batch of a 251-event shard holds one event: one of the two instances gets none."""
    generate([catalog_source("fcnc_thq")], tmp_path / "s", events=251, seed=4, progress=False)
    assert len(read(tmp_path / "s")["objects"]) == 251
