"""ONNX export: onnxruntime gives the PyTorch model's outputs on real CMS events, for any batch size and
number of objects, with the model's task and classes as metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_runner import hepfm

from hepfm.data.datasets import read_events
from hepfm.io.nanoaod import convert_nanoaod
from hepfm.models.registry import create_model
from hepfm.models.saving import load_model, save_model
from hepfm.train.tasks import Task


@pytest.fixture(scope="module")
def real_events(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("nano") / "store"
    convert_nanoaod([shared_data / "nanoAOD_2015_CMS_Open_Data_ttbar.root", shared_data / "nano_dy.root"], out,
                    label="cms", progress=False)
    arrays = read_events(out, ("objects", "n_objects"))[0]
    return arrays["objects"], arrays["n_objects"].astype(np.int64)


@pytest.mark.parametrize(("task", "names", "options"), [
    ("multiclass", ["a", "b", "c"], {}),
    ("binary", ["background", "signal"], {"aggregation": "sum", "residual": False}),
])
def test_onnxruntime_matches_pytorch_on_real_events(tmp_path, real_events, task, names, options):
    torch.manual_seed(1)
    model = create_model("graphnet", len(names) if task != "binary" else 1, **options)
    with torch.no_grad():  # a non-trivial feature scaling, as a trained model has
        model.scaling.set(np.linspace(-1, 1, model.scaling.mean.numel()).reshape(model.scaling.mean.shape),
                          np.linspace(0.5, 2, model.scaling.std.numel()).reshape(model.scaling.std.shape))
    folder = tmp_path / "model"
    save_model(model, folder, {"task": task, "names": names})
    r = hepfm("export", folder, "--onnx", tmp_path / "model.onnx")
    assert r.returncode == 0, r.stderr
    proto = onnx.load(tmp_path / "model.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == task and json.loads(meta["classes"]) == names
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    reference = load_model(folder).eval()
    objects, counts = real_events
    assert len(objects) >= 200
    for start, stop, width in ((0, 1, None), (0, 64, None), (64, 240, None), (0, 240, 20)):
        n = counts[start:stop]
        width = width or int(n.max())  # trimmed to the batch's largest multiplicity, or the store's M
        x = np.ascontiguousarray(objects[start:stop, :width], dtype=np.float32)
        mask = np.arange(width)[None, :] < n[:, None]
        logits, scores = session.run(None, {"objects": x, "mask": mask})
        with torch.no_grad():
            ref = reference(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
        ref_scores = Task(task, names).scores(torch.from_numpy(ref)).numpy().reshape(len(x), -1)
        assert np.abs(logits - ref).max() <= 1e-5
        assert np.abs(scores - ref_scores).max() <= 1e-5


def test_export_errors(tmp_path):
    r = hepfm("export", tmp_path / "missing", "--onnx", tmp_path / "m.onnx")
    assert r.returncode == 2 and "no such model folder, and no shipped model" in r.stderr
    assert not list(tmp_path.iterdir())
