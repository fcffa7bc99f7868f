"""The conversion pre-selection (the KEK study's >= 1 lepton, >= 2 jets, >= 1 b-jet) on NanoAOD and Delphes files,
and masked pretraining, streamed, on a converted real-data store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import hepfm

from hepfm.errors import HepfmError
from hepfm.io.convert import PRESELECTIONS, Preselection, preselecting, preselection
from hepfm.io.store import EventStore

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def _counts(arrays):
    o, n = arrays["objects"], arrays["n_objects"]
    real = np.arange(o.shape[1])[None, :] < n[:, None]
    t = o[..., 6]
    jets = real & (t == 1)
    return (real & ((t == 2) | (t == 3))).sum(1), jets.sum(1), (jets & (o[..., 4] > 0.5)).sum(1)


def test_preselection_counts_objects():
    rows = np.zeros((3, 5, 7), np.float32)
    rows[:, :4, 6] = [[2, 1, 1, 6], [3, 1, 6, 0], [1, 1, 1, 6]]
    rows[:, 1, 4] = 1.0  # the second object b-tagged (a jet in events 0-2)
    n = np.array([4, 3, 4])
    assert PRESELECTIONS["kek"].passes(rows, n).tolist() == [True, False, False]  # 1: one jet; 2: no lepton
    assert Preselection("none").passes(rows, n).all()
    with pytest.raises(HepfmError, match="unknown pre-selection"):
        preselection("tight")


def test_nanoaod_preselection_keeps_exactly_the_passing_events(shared_data, tmp_path):
    from hepfm.io.nanoaod import convert_nanoaod

    full = convert_nanoaod([shared_data / TTBAR], tmp_path / "all", "tt", progress=False)
    with preselecting(PRESELECTIONS["kek"]):
        kept = convert_nanoaod([shared_data / TTBAR], tmp_path / "kek", "tt", progress=False)
    a, b = EventStore(tmp_path / "all").arrays(), EventStore(tmp_path / "kek").arrays()
    lep, jets, bjets = _counts(a)
    passing = (lep >= 1) & (jets >= 2) & (bjets >= 1)
    assert 0 < passing.sum() < len(passing)
    assert kept.n_written == passing.sum() and kept.n_preselection_failed == full.n_written - passing.sum()
    assert np.array_equal(b["event_id"], a["event_id"][passing])
    assert np.array_equal(b["objects"], a["objects"][passing])
    assert EventStore(tmp_path / "kek").attrs()["preselection"]["min_bjets"] == 1
    assert EventStore(tmp_path / "all").attrs()["preselection"] == "none"


def test_delphes_preselection_from_the_command_line(tmp_path):
    from test_delphes import delphes_events, write_delphes

    from hepfm.io.delphes import convert_delphes

    write_delphes(tmp_path / "d.root", delphes_events())
    convert_delphes([tmp_path / "d.root"], tmp_path / "all", progress=False)
    r = hepfm("convert", "delphes", tmp_path / "d.root", "--out", tmp_path / "kek", "--preselect", "kek",
              "--no-progress")
    assert r.returncode == 0, r.stderr
    lep, jets, bjets = _counts(EventStore(tmp_path / "all").arrays())
    n_pass = int(((lep >= 1) & (jets >= 2) & (bjets >= 1)).sum())
    assert f"500 events read, {n_pass} written" in r.stdout and f"{500 - n_pass} failed the pre-selection" in r.stdout


def test_masked_pretraining_streams_a_converted_nanoaod_store(shared_data, tmp_path, capsys):
    from test_masked import cli

    from hepfm.io.nanoaod import convert_nanoaod

    trees = sorted(p for p in shared_data.glob("nano*.root") if "rntuple" not in p.name)  # not the RNTuple copy
    convert_nanoaod(trees + [shared_data / TTBAR], tmp_path / "real", "data",
                    shard_size=64, progress=False)
    stdout = cli(capsys, "pretrain", "--data", tmp_path / "real", "--task", "masked", "--stream", "--model",
                 "transformer", "--model-option", "dim=32", "--model-option", "layers=1", "--epochs", "1",
                 "--batch-size", "32", "--out", tmp_path / "m", "--no-progress")
    assert "held-out test: loss" in stdout and "accuracy_met" in stdout
    assert json.loads((tmp_path / "m" / "stream.json").read_text())["stream"]
