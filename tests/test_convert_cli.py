"""`hepfm convert` as a user meets it: a run, inspect on the result, and one-line errors on bad input
that leave no shard behind."""

from __future__ import annotations

import shutil

import awkward as ak
import numpy as np
import pytest
import uproot
from cli_runner import hepfm, one_line_error

DY = "nano_dy.root"
TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"






def no_shards(out):
    return not out.exists() or not list(out.rglob("shard-*.h5"))


def test_convert_nanoaod_and_inspect(shared_data, tmp_path):
    out = tmp_path / "store"
    # The TTree NanoAOD files (the RNTuple copy beside them is read by its own test).
    files = [shared_data / n for n in ("nanoAOD_2015_CMS_Open_Data_ttbar.root", "nano_dimuon.root", "nano_dy.root")]
    r = hepfm("convert", "nanoaod", *files, "--out", out, "--label", "mc", "--shard-size", "100",
              "--no-progress")
    assert r.returncode == 0, r.stderr
    # 200 + 40 + 40 events; 3 of the 40 collision-data events fail the MET filters (one of them has no good vertex)
    assert "280 events read, 277 written, 0 dropped (NaN/inf), 3 removed by met_filters, 1 removed by good_vertex" \
        in r.stdout
    assert "Jet_btagCSVV2 > 0.8 (2015 medium)" in r.stdout and "Jet_btagDeepFlavB > 0.277 (2018 medium)" in r.stdout
    assert "nano_dimuon.root: era 2018 (run 315267" in r.stdout
    assert sorted(p.name for p in (out / "mc").iterdir()) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    r = hepfm("inspect", out)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if " mc " in line)
    assert "277" in row and "nan" not in row and " - " in row
    r = hepfm("detector-config", out)
    assert r.returncode == 0 and '"jet_pt_min": 25.0' in r.stdout


def test_convert_delphes_cli(tmp_path):
    from test_delphes import delphes_events, write_delphes

    write_delphes(tmp_path / "d.root", delphes_events())
    r = hepfm("convert", "delphes", tmp_path / "d.root", "--out", tmp_path / "store", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "500 events read, 500 written" in r.stdout and (tmp_path / "store" / "d" / "shard-00000.h5").exists()
    # constituents asked of a file whose jets keep none: one line naming the file and the branch, no store
    r = hepfm("convert", "delphes", tmp_path / "d.root", "--out", tmp_path / "jets", "--constituents", "16")
    one_line_error(r, str(tmp_path / "d.root"), "no branch Jet.Constituents")
    assert not (tmp_path / "jets").exists()


def _truncated(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _corrupt_middle(src, dst):
    """Header and directory intact, compressed baskets in the middle overwritten: fails while reading."""
    data = bytearray(src.read_bytes())
    start, stop = len(data) // 4, 3 * len(data) // 4
    data[start:stop] = bytes(stop - start)
    dst.write_bytes(bytes(data))


def _write_tree(path, name, data):
    with uproot.recreate(path) as f:
        f.mktree(name, {k: v.type.content for k, v in data.items()})
        if len(next(iter(data.values()))):
            f[name].extend(data)


def test_bad_inputs_give_one_line_errors_and_no_output(shared_data, tmp_path):
    out = tmp_path / "store"
    cases = []
    cases.append(([tmp_path / "missing.root"], ["missing.root", "no such file"]))
    cases.append(([tmp_path / "nothing-*.root"], ["nothing-*.root", "no file matches"]))
    (tmp_path / "text.root").write_text("not a ROOT file\n" * 100)
    cases.append(([tmp_path / "text.root"], ["text.root", "not a readable ROOT file"]))
    _truncated(shared_data / DY, tmp_path / "cut.root", 0.5)
    cases.append(([tmp_path / "cut.root"], ["cut.root"]))
    _write_tree(tmp_path / "other.root", "Runs", {"run": ak.Array(np.arange(3, dtype=np.int32))})
    cases.append(([tmp_path / "other.root"], ["other.root", "no tree 'Events'", "Runs"]))
    a = uproot.open(shared_data / DY)["Events"].arrays(["Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepFlavB",
                                                         "Electron_pt", "Electron_eta", "Electron_phi",
                                                         "Electron_charge", "MET_pt", "MET_phi"])
    nomuon = {"Jet": ak.zip({k[4:]: a[k] for k in a.fields if k.startswith("Jet_")}),
              "Electron": ak.zip({k[9:]: a[k] for k in a.fields if k.startswith("Electron_")}),
              "MET_pt": a.MET_pt, "MET_phi": a.MET_phi}
    _write_tree(tmp_path / "nomuon.root", "Events", nomuon)
    cases.append(([tmp_path / "nomuon.root"], ["nomuon.root", "Muon_pt", "needed for muons"]))
    _write_tree(tmp_path / "empty.root", "Events", {"MET_pt": ak.Array(np.zeros(0, np.float32))})
    cases.append(([tmp_path / "empty.root"], ["empty.root", "is empty"]))
    # a good file first, then one that fails while its data are read: the first file's shards must go
    _corrupt_middle(shared_data / TTBAR, tmp_path / "corrupt.root")
    cases.append(([shared_data / DY, tmp_path / "corrupt.root"], ["corrupt.root"]))
    for files, fragments in cases:
        r = hepfm("convert", "nanoaod", *files, "--out", out, "--shard-size", "10", "--no-progress")
        one_line_error(r, *fragments)
        assert no_shards(out), (files, list(out.rglob("*")))
        assert not out.exists(), files


def test_wrong_format_and_existing_store(shared_data, tmp_path):
    out = tmp_path / "store"
    r = hepfm("convert", "delphes", shared_data / DY, "--out", out, "--no-progress")
    one_line_error(r, DY, "no tree 'Delphes'", "Events")
    assert not out.exists()
    r = hepfm("convert", "nanoaod", shared_data / DY, "--out", out, "--label", "dy", "--no-progress")
    assert r.returncode == 0, r.stderr
    before = sorted(out.rglob("*"))
    r = hepfm("convert", "nanoaod", shared_data / DY, "--out", out, "--label", "dy", "--no-progress")
    one_line_error(r, "already holds shards of 'dy'")
    assert sorted(out.rglob("*")) == before
    # a failing conversion into an existing store removes only what it wrote
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", out, "--label", "tt", "--btag-branch", "Jet_nope",
              "--no-progress")
    one_line_error(r, TTBAR, "Jet_nope")
    assert sorted(out.rglob("*")) == before
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", out, "--label", "a/b", "--no-progress")
    one_line_error(r, "label 'a/b'")
    # the library names the problem, the command line adds its option
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", out, "--label", "tt", "--preselect", "bogus",
              "--no-progress")
    one_line_error(r, "--preselect", "unknown pre-selection 'bogus'", "kek")
    assert sorted(out.rglob("*")) == before


def _zero_first_basket(src, dst, branch):
    """Directory and tree metadata intact, one branch's first basket overwritten: fails when that branch is read."""
    b = uproot.open(src)["Events"][branch]
    seek, size = int(b.member("fBasketSeek")[0]), int(b.member("fBasketBytes")[0])
    data = bytearray(src.read_bytes())
    data[seek:seek + size] = bytes(size)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("fraction", [0.5, 0.97, 0.995])
def test_truncated_or_damaged_files_give_one_line(shared_data, tmp_path, fraction):
    _truncated(shared_data / DY, tmp_path / "cut.root", fraction)
    _zero_first_basket(shared_data / DY, tmp_path / "basket.root", "Muon_looseId")  # read while the file is checked
    for name in ("cut.root", "basket.root"):
        out = tmp_path / name.replace(".root", "")
        r = hepfm("convert", "nanoaod", tmp_path / name, "--out", out, "--no-progress")
        if name == "cut.root" and r.returncode == 0:  # the cut fell after the data this reader needs
            continue
        one_line_error(r, name)
        assert not out.exists()


def test_era_and_lumi_json_options(shared_data, tmp_path):
    (tmp_path / "golden.json").write_text('{"315267": [[1, 100]]}')
    r = hepfm("convert", "nanoaod", shared_data / "nano_dimuon.root", shared_data / DY, "--out", tmp_path / "s",
              "--lumi-json", tmp_path / "golden.json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "80 events read, 40 written" in r.stdout and "40 removed by lumi_mask" in r.stdout
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", tmp_path / "t", "--era", "2016", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Jet_btagCSVV2 > 0.8484 (2016 medium)" in r.stdout and "era 2016 (named by the caller)" in r.stdout
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", tmp_path / "u", "--era", "2019", "--no-progress")
    one_line_error(r, "unknown CMS era '2019'")
    r = hepfm("convert", "nanoaod", shared_data / TTBAR, "--out", tmp_path / "u", "--lumi-json", tmp_path / "no.json",
              "--no-progress")
    one_line_error(r, "no.json", "no such luminosity JSON file")
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--btag-branch", "Jet_qgl"], ["Jet_qgl", "no 2018 working point", "b-tag cut"]),
    (["--shard-size", "0"], ["shard size must be positive"]),
])
def test_bad_options(shared_data, tmp_path, args, fragments):
    r = hepfm("convert", "nanoaod", shared_data / DY, "--out", tmp_path / "s", *args, "--no-progress")
    one_line_error(r, *fragments)
    assert not (tmp_path / "s").exists()
    shutil.rmtree(tmp_path / "s", ignore_errors=True)


@pytest.mark.parametrize("error", [ValueError("basket decompression failed"), KeyboardInterrupt()])
def test_failure_midway_removes_the_shards_of_this_call(shared_data, tmp_path, monkeypatch, error):
    from hepfm.errors import HepfmError
    from hepfm.io import nanoaod

    real, calls = nanoaod._convert_chunk, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the first chunk of the second file; by then shards are on disk
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(nanoaod, "_convert_chunk", flaky)
    out = tmp_path / "store"
    (out / "keep").mkdir(parents=True)
    expected = pytest.raises(HepfmError, match=f"{TTBAR}: cannot read the data") if isinstance(error, ValueError) \
        else pytest.raises(KeyboardInterrupt)
    with expected:
        nanoaod.convert_nanoaod([shared_data / DY, shared_data / TTBAR], out, "x", shard_size=10, step_size=20,
                                progress=False)
    assert len(calls) == 3 and no_shards(out) and not (out / "x").exists() and (out / "keep").is_dir()
