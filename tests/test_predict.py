"""hepfm predict: scores with event identities in parquet, HDF5 and ROOT, streamed in chunks, equal to the
model applied in memory; NanoAOD input with run/lumi/event; clear errors and nothing half-written."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import uproot
from cli_runner import hepfm

from hepfm.data.datasets import read_events
from hepfm.errors import HepfmError
from hepfm.inference.predict import predict_file
from hepfm.models.registry import create_model
from hepfm.models.saving import save_model
from hepfm.train.tasks import Task

TOY_STORE = {"n_per_class": 300, "shards": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, store):
    torch.manual_seed(0)
    model = create_model("graphnet", 2, share_blocks=True)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(model, folder, {"task": "multiclass", "names": ["soft", "hard"]})
    return folder


def reference_scores(model_dir, store):
    from hepfm.models.saving import load_model

    model = load_model(model_dir).eval()
    arrays = read_events(store, ("objects", "n_objects"))[0]
    x, n = torch.from_numpy(arrays["objects"]), torch.from_numpy(arrays["n_objects"].astype(np.int64))
    mask = torch.arange(x.shape[1])[None] < n[:, None]
    with torch.no_grad():
        return Task("multiclass", ["soft", "hard"]).scores(model(x, mask)).numpy()


@pytest.mark.parametrize("suffix", [".parquet", ".h5", ".root"])
def test_scores_and_identity_in_every_format(model_dir, store, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    rep = predict_file(model_dir, store, out, chunk_size=128, batch_size=50, progress=False)  # many chunks
    assert rep.n_events == 600 and rep.columns == ["score_soft", "score_hard"]
    if suffix == ".parquet":
        table = pq.read_table(out)
        cols = {k: table[k].to_numpy() for k in table.column_names}
        meta = json.loads(table.schema.metadata[b"hepfm"])
    elif suffix == ".h5":
        with h5py.File(out) as f:
            cols = {k: f[k][:] for k in f}
            meta = json.loads(f.attrs["hepfm"])
    else:
        with uproot.open(out) as f:
            cols = f["Events"].arrays(library="np")
            meta = json.loads(str(f["hepfm_metadata"]))
    assert sorted(meta["process_names"]) == ["hard", "soft"] and len(meta["shard_paths"]) == 4
    ref = reference_scores(model_dir, store)
    np.testing.assert_allclose(np.stack([cols["score_soft"], cols["score_hard"]], 1), ref, atol=1e-5)
    np.testing.assert_allclose(cols["score_soft"] + cols["score_hard"], 1.0, atol=1e-5)
    # identity: process, shard and row index point back at the event
    assert np.array_equal(np.bincount(cols["process"]), [300, 300])
    for shard in range(4):
        rows = cols["index"][cols["shard"] == shard]
        assert np.array_equal(rows, np.arange(len(rows)))
    assert not list(tmp_path.glob("*.tmp"))


def test_nanoaod_input_carries_run_lumi_event(model_dir, tmp_path, shared_data):
    out = tmp_path / "nano.parquet"
    r = hepfm("predict", model_dir, "--data", shared_data / "nano_dy.root", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "events/s" in r.stdout
    table = pq.read_table(out)
    with uproot.open(shared_data / "nano_dy.root") as f:
        events = f["Events"]["event"].array(library="np")
    assert table.num_rows == len(events)
    assert np.array_equal(np.sort(table["event"].to_numpy()), np.sort(events.astype(np.uint64)))
    assert {"run", "luminosityBlock", "entry", "file"} <= set(table.column_names)


def test_collision_data_failing_the_quality_cuts_is_skipped(model_dir, tmp_path, shared_data):
    out = tmp_path / "dimuon.parquet"
    r = hepfm("predict", model_dir, "--data", shared_data / "nano_dimuon.root", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "37 events, 3 skipped" in r.stdout  # Flag_METFilters false in 3 of 40 events
    with uproot.open(shared_data / "nano_dimuon.root") as f:
        a = f["Events"].arrays(["event", "Flag_METFilters", "PV_npvsGood"], library="np")
    good = a["Flag_METFilters"] & (a["PV_npvsGood"] > 0)
    assert np.array_equal(np.sort(pq.read_table(out)["event"].to_numpy()), np.sort(a["event"][good]))


def test_bad_inputs_are_one_line_errors_and_leave_nothing(model_dir, store, tmp_path):
    r = hepfm("predict", model_dir, "--data", store, "--out", tmp_path / "scores.csv")
    assert r.returncode == 2 and "unknown output format" in r.stderr
    r = hepfm("predict", tmp_path / "nomodel", "--data", store, "--out", tmp_path / "s.h5")
    assert r.returncode == 2 and "no such model folder, and no shipped model" in r.stderr
    r = hepfm("predict", model_dir, "--data", tmp_path / "nothing.root", "--out", tmp_path / "s.h5")
    assert r.returncode == 2 and "no such file" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_store_from_another_detector_is_refused(model_dir, store, tmp_path):
    from hepfm.io.store import EventStore
    from hepfm.models.pretrained import data_schema

    config = json.loads((model_dir / "config.json").read_text())
    schema = data_schema(EventStore(store))
    schema["detector"] = {"jet_pt_min": 20.0}
    schema["detector_hash"] = "0"
    changed = tmp_path / "m"
    changed.mkdir()
    (changed / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (changed / "config.json").write_text(json.dumps({**config, "data_schema": schema}))
    with pytest.raises(HepfmError, match="detector configuration differs in jet_pt_min"):
        predict_file(changed, store, tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_models_by_name_work_wherever_a_folder_does(model_dir, store, tmp_path):
    """A model found by name (the package's folder, or HEPFM_MODEL_PATH) is accepted by finetune, predict and
    hepfm.load_pretrained, exactly like its folder."""
    import os
    import shutil

    from hepfm import load_pretrained

    shelf = tmp_path / "shelf"
    shutil.copytree(model_dir, shelf / "toy-multiclass")
    env = {"HEPFM_MODEL_PATH": str(shelf)}
    r = hepfm("predict", "toy-multiclass", "--data", store, "--out", tmp_path / "s.h5", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    r = hepfm("finetune", "--signal", store / "hard", "--background", store / "soft", "--from", "toy-multiclass",
              "--train-size", 50, "--epochs", 1, "--out", tmp_path / "ft", "--no-progress", "--allow-overlap",
              env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init_from"] == "toy-multiclass"
    os.environ["HEPFM_MODEL_PATH"] = str(shelf)
    try:
        model = load_pretrained("toy-multiclass")
        assert model.metadata["names"] == ["soft", "hard"]
        with pytest.raises(HepfmError, match="no shipped model of that name"):
            load_pretrained("no-such-model")
    finally:
        del os.environ["HEPFM_MODEL_PATH"]
