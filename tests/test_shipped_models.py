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
from hepfm.physics.truth import LABEL_NAMES
from hepfm.study.config import pretraining_processes

SHIPPED = {"graphnet-pythia12-multiclass": "multiclass", "graphnet-pythia12-multilabel": "multilabel"}


@pytest.mark.parametrize("name, task", SHIPPED.items())
def test_shipped_model_is_complete_and_built_on_todays_detector(name, task):
    folder = available()[name]
    assert folder.parent == weights_dir()  # inside the package, no network, no environment variable
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == task and config["name"] == name
    assert sorted(config["names"]) == sorted(pretraining_processes() if task == "multiclass" else LABEL_NAMES)
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


def test_shipped_multiclass_model_is_better_than_chance_and_calibrated_in_size(physics_store, tmp_path):
    """Scores on events generated here, as a user would: the 12-class model recognises its processes."""
    out = tmp_path / "scores.parquet"
    r = hepfm("predict", "graphnet-pythia12-multiclass", "--data", physics_store, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pandas()
    names = pretraining_processes()
    scores = table[[f"score_{p}" for p in names]].to_numpy()
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    known = table["process"].isin(names).to_numpy()
    assert known.sum() > 100
    truth = np.array([names.index(p) for p in table["process"][known]])
    accuracy = (scores[known].argmax(axis=1) == truth).mean()
    chance = np.bincount(truth).max() / len(truth)
    assert accuracy > chance + 0.15, (accuracy, chance)
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
