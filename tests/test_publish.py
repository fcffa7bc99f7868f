"""Publishing a model under a name (hepfm publish) and the held-out detail its card reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import hepfm

from hepfm.errors import HepfmError
from hepfm.models.card import publish
from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES
from hepfm.testing import toy_store
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig
from hepfm.train.workflows import pretrain


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = toy_store(tmp_path_factory.mktemp("toy") / "store", n_per_class=300)
    out = tmp_path_factory.mktemp("runs") / "pre"
    pretrain(store, out, cfg=TrainConfig(epochs=2, batch_size=64, progress=False), lr=1e-3)
    return out


def test_confusion_matrix_and_label_aucs_are_the_known_answers():
    task = Task("multiclass", ["a", "b", "c"])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.eye(3)[torch.tensor([0, 1, 1, 1, 0, 2])] * 5  # predicted classes
    report = task.report(logits, y)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.5}

    task = Task("multilabel", list(LABEL_NAMES))
    rng = np.random.default_rng(0)
    y = torch.from_numpy((rng.random((200, len(LABEL_NAMES))) < 0.5).astype(np.float32))
    regression = np.array([k == "regression" for k in LABEL_KINDS])
    y[:, regression] = torch.from_numpy(rng.integers(0, 3, (200, regression.sum())).astype(np.float32))
    outputs = torch.where(torch.from_numpy(regression), y, (y - 0.5) * 8)  # perfect scores and counts
    report = task.report(outputs, y)
    assert all(v == 1.0 for v in report["count_accuracy"].values())
    assert set(report["label_auc"]) == {n for n, r in zip(LABEL_NAMES, regression, strict=True) if not r}
    assert all(v == 1.0 for v in report["label_auc"].values())
    y[:, 5] = 1.0  # one value only: no AUC
    assert Task("multilabel", list(LABEL_NAMES)).report(outputs, y)["label_auc"][LABEL_NAMES[5]] is None


def test_published_model_carries_its_own_record_and_loads_by_name(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    detail = config["training"]["test_detail"]
    matrix = np.array(detail["confusion_matrix"])
    assert matrix.sum() == config["training"]["n_test"]
    assert np.isclose(np.trace(matrix) / matrix.sum(), config["training"]["test"]["accuracy"])

    notes = tmp_path / "notes.md"
    notes.write_text("hepfm pretrain --data store --out pre  # the exact command\n")
    shelf = tmp_path / "shelf"
    r = hepfm("publish", run, "--name", "toy-pretrained", "--dest", shelf, "--notes", notes)
    assert r.returncode == 0, r.stderr
    folder = shelf / "toy-pretrained"
    assert (folder / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    assert json.loads((folder / "config.json").read_text())["name"] == "toy-pretrained"
    card = (folder / "MODEL_CARD.md").read_text()
    assert "# toy-pretrained" in card and "the exact command" in card and "Intended use and limits" in card
    assert f"{config['training']['test']['accuracy']:.4f}" in card
    row = matrix[0] / matrix[0].sum()
    assert f"| **{config['names'][0]}** | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |" in card

    r = hepfm("models", env={"HEPFM_MODEL_PATH": str(shelf)})
    assert r.returncode == 0 and "toy-pretrained" in r.stdout

    # an existing name is kept unless overwriting is asked for
    r = hepfm("publish", run, "--name", "toy-pretrained", "--dest", shelf)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (folder / "MODEL_CARD.md").read_text() == card


def test_bad_names_and_non_pretrained_models_are_refused(run, tmp_path):
    with pytest.raises(HepfmError, match="lower-case letters"):
        publish(run, "My Model", tmp_path)
    config = json.loads((run / "config.json").read_text())
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    (binary / "config.json").write_text(json.dumps({**config, "task": "binary"}))
    with pytest.raises(HepfmError, match="only pretrained"):
        publish(binary, "x", tmp_path / "shelf")
    assert not (tmp_path / "shelf" / "x").exists()


def test_written_files_are_as_readable_as_any_other(tmp_path):
    """Atomic writes go through a private temporary file; the result must get the usual permissions, or a
    model or store shared on a cluster is unreadable to everyone but its writer."""
    import os

    from hepfm.io.atomic import atomic_write_text

    atomic_write_text(tmp_path / "a.json", "{}")
    (tmp_path / "b.json").write_text("{}")
    assert os.stat(tmp_path / "a.json").st_mode == os.stat(tmp_path / "b.json").st_mode
