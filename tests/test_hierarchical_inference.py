"""Hierarchical models in inference: ``hepfm predict`` from stores with constituents gives the model's own
scores, with clear errors for a store of another K, a store without constituents and NanoAOD inputs; the
fixed-width jet path equals the batch-trimmed one; ONNX export equals PyTorch on generated events."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_runner import hepfm, one_line_error

from hepfm.data.datasets import read_events, with_constituents
from hepfm.data.features import fit_scaling
from hepfm.errors import HepfmError
from hepfm.inference.predict import predict_file
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.io.store import EventStore
from hepfm.models.hierarchical import N_CONSTITUENT, N_OBJECT
from hepfm.models.jets import fit_constituent_scaling
from hepfm.models.pretrained import data_schema
from hepfm.models.registry import create_model
from hepfm.models.saving import load_model, save_model
from hepfm.train.tasks import Task

pytestmark = pytest.mark.pythia

K = 16  # ttbar jets often fill all K slots, Z+jets ones rarely: batches of both widths
NAMES = ["background", "signal"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Generated events: K constituents per jet (two processes, several shards), K=8, and none."""
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate

    root = tmp_path_factory.mktemp("hier")
    generate([catalog_source("ttbar"), catalog_source("zjets")], root / "ev", events=40, seed=3, shard_size=15,
             progress=False, constituents=K)
    generate([catalog_source("zjets")], root / "k8", events=10, seed=3, progress=False, constituents=8)
    generate([catalog_source("zjets")], root / "plain", events=10, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def events(stores):
    """Every event of the K store, in store order: rows [n, M, 7 + 6K], counts [n], event ids [n]."""
    arrays = read_events(stores / "ev", ("objects", "n_objects", "constituents", "event_id"))[0]
    x = with_constituents(arrays["objects"], arrays["constituents"]).astype(np.float32)
    return x, arrays["n_objects"].astype(np.int64), arrays["event_id"]


def _model(events, event_model="transformer", jet_model="jet_transformer"):
    """A hierarchical model (two-layer transformers: a quicker export) with the feature scalings of the
    store's events, as training sets them."""
    torch.manual_seed(2)
    layers = {"transformer": {"layers": 2}, "jet_transformer": {"layers": 2}}
    model = create_model("hierarchical", 1, event_model=event_model, event_config=layers.get(event_model),
                         jet_model=jet_model, jet_config=layers.get(jet_model), max_constituents=K)
    x, n, _ = events
    model.scaling.set(*fit_scaling(x[..., :N_OBJECT], n))
    jets = x[x[..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"]][:, N_OBJECT:].reshape(-1, K, N_CONSTITUENT)
    model.jet.scaling.set(*fit_constituent_scaling(jets, (jets[..., -1] > 0).sum(axis=1)))
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(stores, events):
    folder = stores / "model"
    save_model(_model(events), folder,
               {"task": "binary", "names": NAMES, "data_schema": data_schema(EventStore(stores / "ev"))})
    return folder


def _reference(folder, x, n, fixed_width=False):
    """(logits, scores) of the saved model on rows x [n, w, ...] in one forward pass."""
    model = load_model(folder).eval()
    model.fixed_width = fixed_width
    mask = torch.arange(x.shape[1])[None] < torch.from_numpy(n)[:, None]
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x)), mask)
    return logits.numpy(), Task("binary", NAMES).scores(logits).numpy().reshape(len(x), -1)


def test_predict_gives_the_models_own_scores(model_dir, events, tmp_path):
    x, n, event_id = events
    out = tmp_path / "scores.parquet"
    rep = predict_file(model_dir, model_dir.parent / "ev", out, chunk_size=7, batch_size=5, progress=False)
    assert rep.n_events == len(x) == 80
    table = pq.read_table(out)
    np.testing.assert_array_equal(table["event_id"].to_numpy(), event_id)
    scores = table["score_signal"].to_numpy()
    assert np.abs(scores - _reference(model_dir, x, n)[1][:, 0]).max() <= 1e-5
    assert scores.std() > 0  # the events are told apart: the constituents and objects reached the model
    # a process folder of the store
    predict_file(model_dir, model_dir.parent / "ev" / "zjets", tmp_path / "z.parquet", progress=False)
    zjets = pq.read_table(tmp_path / "z.parquet")
    meta = json.loads(zjets.schema.metadata[b"hepfm"])
    assert meta["process_names"][int(zjets["process"].to_numpy()[0])] == "zjets"
    by_id = dict(zip(event_id.tolist(), scores.tolist(), strict=True))
    z_ids = zjets["event_id"].to_numpy().tolist()
    assert len(z_ids) == 40
    np.testing.assert_allclose(zjets["score_signal"].to_numpy(), [by_id[i] for i in z_ids], atol=1e-6)


def test_predict_refuses_stores_of_another_k_or_without_constituents_and_root_files(model_dir, stores, tmp_path):
    out = tmp_path / "s.parquet"
    with pytest.raises(HepfmError, match=r"k8: keeps 8 constituents per jet, the model takes 16; .*keeps 16"):
        predict_file(model_dir, stores / "k8", out, progress=False)
    with pytest.raises(HepfmError, match=r"plain: a hierarchical model needs jet constituents, and this store"):
        predict_file(model_dir, stores / "plain", out, progress=False)
    with pytest.raises(HepfmError, match=r"events\.root: .*NanoAOD files carry none"):
        predict_file(model_dir, [str(tmp_path / "events.root")], out, input_format="nanoaod", progress=False)
    r = hepfm("predict", model_dir, "--data", stores / "k8", "--out", out)
    one_line_error(r, str(stores / "k8"), "keeps 8 constituents per jet, the model takes 16")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize(("event_model", "jet_model"), [("transformer", "jet_transformer"), ("graphnet", "deepsets")])
def test_the_fixed_width_jet_path_equals_the_trimmed_one(stores, events, event_model, jet_model):
    x, n, _ = events
    model = _model(events, event_model, jet_model)
    jets = x[..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"]
    n_con = (x[..., N_OBJECT:].reshape(*x.shape[:2], K, N_CONSTITUENT)[..., -1] > 0).sum(-1)
    widths = []
    for start in range(0, len(x), 4):  # small batches: the trimmed path's width is often below K
        sl = slice(start, start + 4)
        mask = torch.arange(x.shape[1])[None] < torch.from_numpy(n[sl])[:, None]
        rows = torch.from_numpy(x[sl])
        with torch.no_grad():
            model.fixed_width = False
            trimmed = model(rows, mask)
            model.fixed_width = True
            fixed = model(rows, mask)
        assert np.abs((fixed - trimmed).numpy()).max() <= 1e-5
        real_jets = jets[sl] & mask.numpy()
        widths.append(int(n_con[sl][real_jets].max()) if real_jets.any() else 0)
    assert min(widths) < K and max(widths) == K  # both kinds of batch were compared


def test_onnxruntime_matches_pytorch_for_a_hierarchical_model(model_dir, events, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from hepfm.inference.export import export_onnx

    export_onnx(model_dir, tmp_path / "h.onnx")
    meta = {p.key: p.value for p in onnx.load(tmp_path / "h.onnx").metadata_props}
    assert meta["inputs"] == "objects+constituents" and meta["max_constituents"] == str(K)
    session = ort.InferenceSession(str(tmp_path / "h.onnx"))
    x, n, _ = events
    for start, stop, width in ((0, 1, None), (40, 41, None), (0, 30, None), (30, 80, None), (0, 80, x.shape[1])):
        width = width or int(n[start:stop].max())  # trimmed to the batch's largest multiplicity, or the store's M
        rows = np.ascontiguousarray(x[start:stop, :width])
        mask = np.arange(width)[None, :] < n[start:stop, None]
        logits, scores = session.run(None, {"objects": rows, "mask": mask})
        ref_logits, ref_scores = _reference(model_dir, rows, n[start:stop])  # the PyTorch (trimmed-width) path
        assert np.abs(logits - ref_logits).max() <= 1e-5
        assert np.abs(scores - ref_scores).max() <= 1e-5
    # rows without their constituents are refused by the graph's fixed width
    with pytest.raises(Exception, match=rf"(?s)invalid dimensions for input: objects.*Expected: {N_OBJECT + 6 * K}"):
        session.run(None, {"objects": np.ascontiguousarray(x[:2, :5, :N_OBJECT]), "mask": np.ones((2, 5), bool)})
