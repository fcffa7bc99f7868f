"""The foundation models shipped inside the package: present, complete, built on today's detector, described
truthfully by their cards, and usable by name on freshly generated events."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import hepfm

from hepfm import load_pretrained
from hepfm.models.pretrained import CARD, available, detector_hash, weights_dir
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.processes import PRETRAINING
from hepfm.physics.truth import LABEL_NAMES

SHIPPED = {"graphnet-pythia12-multiclass": "multiclass", "graphnet-pythia12-multilabel": "multilabel"}


@pytest.mark.parametrize("name, task", SHIPPED.items())
def test_shipped_model_is_complete_and_built_on_todays_detector(name, task):
    folder = available()[name]
    assert folder.parent == weights_dir()  # inside the package, no network, no environment variable
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == task and config["name"] == name
    assert sorted(config["names"]) == sorted(list(PRETRAINING) if task == "multiclass" else LABEL_NAMES)
    schema = config["data_schema"]
    # the model was trained on events of the detector a fresh installation simulates
    assert schema["detector_hash"] == detector_hash(DetectorConfig().to_dict())
    training = config["training"]
    assert training["n_train"] + training["n_val"] + training["n_test"] >= 1_000_000
    card = (folder / CARD).read_text()
    for value in (v for v in training["test"].values() if isinstance(v, float)):
        assert f"{value:.4f}" in card
    for fact in ("hepfm generate pretrain", "Intended use and limits", "Licence", schema["detector_hash"]):
        assert fact in card
    model = load_pretrained(name)
    assert sum(p.numel() for p in model.parameters()) == training["parameters"]


def test_shipped_multiclass_model_does_on_fresh_events_what_its_card_says(physics_store, tmp_path):
    """Scores on events generated here (another seed), through hepfm predict as a user would: each process is
    recognised as often as on the model's own test set, and the scores are not collapsed."""
    out = tmp_path / "scores.parquet"
    r = hepfm("predict", "graphnet-pythia12-multiclass", "--data", physics_store, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    names = list(PRETRAINING)
    scores = np.stack([table[f"score_{p}"].to_numpy() for p in names], axis=1)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    stored = json.loads(table.schema.metadata[b"hepfm"])["process_names"]  # `process` indexes these
    process = np.array(stored)[table["process"].to_numpy()]
    known = np.isin(process, names)
    assert known.sum() > 100
    truth = np.array([names.index(p) for p in process[known]])
    right = scores[known].argmax(axis=1) == truth
    # per process, the model does on these events (another seed) what its card says it does on its test set
    card = json.loads((available()["graphnet-pythia12-multiclass"] / "config.json").read_text())
    class_accuracy = card["training"]["test_detail"]["class_accuracy"]
    for i, name in enumerate(names):
        here = right[truth == i]
        if len(here) >= 200:
            expected = class_accuracy[name]
            assert abs(here.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / len(here)), name
    chance = np.bincount(truth).max() / len(truth)
    assert right.mean() > chance + 0.03
    assert len(np.unique(np.round(scores[known], 4), axis=0)) > 0.9 * known.sum()  # not collapsed


def test_shipped_models_are_listed_and_fine_tune_by_name():
    r = hepfm("models")
    assert r.returncode == 0 and all(name in r.stdout for name in SHIPPED)
    model = load_pretrained("graphnet-pythia12-multiclass")
    x = torch.zeros(2, 20, 7)
    x[:, 0] = torch.tensor([50.0, 0.1, 0.2, 51.0, 0, 0, 1])
    x[:, 1] = torch.tensor([30.0, 0.0, 1.0, 30.0, 0, 0, 6])
    mask = torch.arange(20)[None] < torch.tensor([[2], [2]])
    with torch.no_grad():
        assert torch.isfinite(model(x, mask)).all()
