"""RNTuple input: the CMS NanoAOD RNTuple (10 events) converts exactly as the same events written as a TTree.

The RNTuple's events (run 1, luminosity block 224561, events 44727241-44727250) are not among the 200 of
the TTree file beside it (luminosity blocks 2272915-2272920), so the TTree to compare with is written here
from the RNTuple's own values, with NanoAOD's layout (``nJet`` counters, ``Jet_pt`` branches).
"""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import uproot
from cli_runner import hepfm

from hepfm.io import nanoaod
from hepfm.io.readers import RNTupleSource, open_events
from hepfm.physics.detector import DetectorConfig

RNTUPLE = "nanoAOD_2015_ttbar_rntuple.root"
TTREE = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def store_arrays(out, label):
    with h5py.File(sorted((out / label).glob("shard-*.h5"))[0]) as f:
        return {k: f[k][:] for k in f}


def write_as_ttree(source, branches, dst):
    """The named branches of an RNTuple written as a NanoAOD TTree (collections zipped under ``nX`` counters)."""
    arrays = source.ntuple.arrays([source.stored_name(b) for b in branches])
    columns, groups = {}, {}
    for name in branches:
        values = arrays[name]
        if values.ndim > 1:
            prefix, field = name.split("_", 1)
            groups.setdefault(prefix, {})[field] = values
        else:
            columns[name] = values
    for prefix, fields in groups.items():
        columns[prefix] = ak.zip(fields)
    with uproot.recreate(dst) as f:  # mktree: ``f[name] = ...`` would write an RNTuple
        f.mktree("Events", {k: v.type.content for k, v in columns.items()})
        f["Events"].extend(columns)
    assert uproot.open(dst).classnames()["Events;1"] == "TTree"
    return dst


def test_the_events_differ_from_the_ttree_file(shared_data):
    a = uproot.open(shared_data / RNTUPLE)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    b = uproot.open(shared_data / TTREE)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    ids = lambda x: set(zip(x["run"], x["luminosityBlock"], x["event"], strict=True))  # noqa: E731
    assert len(ids(a)) == 10 and not ids(a) & ids(b)


def test_nanoaod_rntuple_matches_the_same_events_as_a_ttree(shared_data, tmp_path):
    source = open_events(shared_data / RNTUPLE, "Events")
    assert isinstance(source, RNTupleSource) and source.num_entries == 10
    plan = nanoaod.plan_file(source, shared_data / RNTUPLE, DetectorConfig(), nanoaod.NanoAODSelection())
    extra = [b for b in source.keys() if b.startswith("Muon_") and b[5:] in ("isPFcand", "isGlobal", "isTracker")]
    tree_file = write_as_ttree(source, sorted(set(plan.branches) | set(extra) | {"Muon_looseId"}),
                               tmp_path / "same_events_ttree.root")
    nanoaod.convert_nanoaod([shared_data / RNTUPLE], tmp_path / "a", "tt", progress=False, step_size=4)
    nanoaod.convert_nanoaod([tree_file], tmp_path / "b", "tt", progress=False)
    a, b = store_arrays(tmp_path / "a", "tt"), store_arrays(tmp_path / "b", "tt")
    assert set(a) == set(b) and len(a["objects"]) == 10
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a["event_id"], np.arange(44727241, 44727251))
    kind = a["objects"][..., 6]
    assert (kind == 1).sum() >= 20 and (kind == 6).sum() == 10  # tt̄: several jets an event, one MET each


def test_cli_reads_the_rntuple(shared_data, tmp_path):
    r = hepfm("convert", "nanoaod", shared_data / RNTUPLE, "--out", tmp_path / "s", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "10 events read, 10 written" in r.stdout and "Jet_btagCSVV2 > 0.8 (2015 medium)" in r.stdout
