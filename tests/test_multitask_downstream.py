"""A multi-task pretrained backbone downstream: a study's strategies on it, and its event-level heads' scores."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from cli_runner import hepfm

import hepfm as hepfm_pkg
from hepfm.errors import ConfigurationError
from hepfm.study.config import parse_config
from hepfm.study.layout import StudyLayout
from hepfm.study.run import run_study
from hepfm.testing import multi_task_store, toy_store
from hepfm.train.tasks import MultiTask, saved_task

HEADS = {"multiclass": 1.0, "origin": 0.5, "heavy": 0.2}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt-study")
    pre = multi_task_store(root / "pre", n_per_class=300, seed=1)
    down = toy_store(root / "down", n_per_class=300, seed=2)
    raw = {"tasks": {"toy": {"signal": str(down / "hard"), "background": str(down / "soft")}},
           "sizes": [40], "seeds": 1, "test_size": 60,
           "strategies": ["scratch", "finetune_multi", "frozen_multi"], "model_options": {"share_blocks": True},
           "pretrain": {"data": str(pre), "epochs": 2, "batch_size": 128, "lr": 1e-3, "multi": {"heads": HEADS}},
           "finetune": {"epochs": 1, "batch_size": 32, "lr": 1e-3}, "cka": {"events": 60}}
    out = root / "out"
    state = run_study(parse_config(raw), out, progress=False)
    return raw, out, state, pre


def test_a_study_pretrains_on_several_heads_and_fine_tunes_and_freezes_that_backbone(study):
    _, out, state, _ = study
    assert state.failures == []
    layout = StudyLayout(out)
    meta = json.loads((layout.pretrained("multi") / "config.json").read_text())
    assert meta["task"] == "multi" and set(meta["task_options"]["heads"]) == set(HEADS)
    for strategy in ("finetune_multi", "frozen_multi"):
        cell = json.loads((layout.cell("toy", 40, strategy, 0) / layout.RESULT).read_text())
        run = json.loads((out / cell["run"] / "config.json").read_text())
        assert run["init_from"] == str(layout.pretrained("multi")) and run["task"] == "binary"


@pytest.mark.parametrize("change, message", [
    ({"multi": {}}, "need pretrain.multi.heads"),
    ({"multi": {"heads": {"spin": 1}}}, "unknown head(s) ['spin']"),
    ({"multi": {"heads": {"multiclass": -1}}}, "must be a finite number >= 0"),
    ({"multi": {"heads": HEADS, "hedas": 1}}, "unknown key(s) ['hedas']"),
])
def test_bad_multi_task_study_settings_are_one_line_naming_the_file(study, change, message):
    raw = {**study[0], "pretrain": {**study[0]["pretrain"], **change}}
    with pytest.raises(ConfigurationError) as info:
        parse_config(raw, "study.yaml")
    assert message in str(info.value) and str(info.value).startswith("study.yaml: ")


def test_predict_writes_the_event_level_heads_of_a_multi_task_model(study, tmp_path):
    _, out, _, pre = study
    folder = StudyLayout(out).pretrained("multi")
    model = hepfm_pkg.load(folder)
    task = saved_task(model.metadata["task"], model.metadata["names"], model.metadata["task_options"])
    assert isinstance(task, MultiTask) and set(task.heads) == {"multiclass", "heavy"}  # origin is per object
    columns = task.event_score_columns()
    assert columns[:2] == ["multiclass_hard", "multiclass_soft"] and len(columns) == 2 + 6 * len(task.heads["heavy"][0]
                                                                                                .particles)
    scores_file = tmp_path / "scores.h5"
    result = hepfm("predict", str(folder), "--data", str(pre), "--out", str(scores_file))
    assert result.returncode == 0, result.stderr
    with h5py.File(scores_file) as f:
        scores = {k: f[k][:] for k in f}
    probs = np.stack([scores["score_multiclass_hard"], scores["score_multiclass_soft"]], axis=1)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    exists = [k for k in scores if k.startswith("score_heavy_") and k.endswith("_exists")]
    assert exists and all(((scores[k] >= 0) & (scores[k] <= 1)).all() for k in exists)
    # The same numbers as the model's own forward pass through the task.
    x = torch.zeros(1, 3, 7)
    x[0, :, 0], x[0, :, 6] = torch.tensor([50.0, 40.0, 30.0]), 1.0
    with torch.no_grad():
        table = task.score_table(model(x, torch.ones(1, 3, dtype=torch.bool)))
    assert table.shape == (1, len(columns))
