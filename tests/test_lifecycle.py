"""The pieces under every training run: the model and task registries, the backbone hooks, the run folder's
names and the typed run record of config.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hepfm.errors import ConfigurationError, HepfmError
from hepfm.io.rundir import CHECKPOINT, CONFIG, HISTORY, STREAM_PLAN, WEIGHTS, RunDir
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM
from hepfm.models.registry import MODELS, create_model, register_model
from hepfm.train.record import RECORD_VERSION, UNSET, RunRecord, known
from hepfm.train.strategies import prepare
from hepfm.train.tasks import TASKS, BinaryTask, MaskedTask, MulticlassTask, MultiTask, Task

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "src" / "hepfm" / "models" / "weights").glob("*/config.json"))


def test_the_registry_imports_no_model_and_its_lookups_see_every_builtin_backbone():
    import ast

    import hepfm.models.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if m and m.startswith("hepfm.models")]  # no cycle through a model module
    # Whichever model module a program imports first, a lookup sees every built-in backbone.
    code = "import hepfm.models.hierarchical, hepfm.models.registry as r; print(sorted(r.MODELS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(["deepsets", "graphnet", "hierarchical", "jet_transformer", "transformer"])


def test_a_backbone_registers_itself_by_decorator_and_a_taken_name_is_refused():
    class Tiny(Backbone):
        name = "tiny_for_test"

        def __init__(self, n_outputs: int = 1, width: int = 4):
            super().__init__(n_outputs, {"width": width})
            self.decoder = torch.nn.Linear(7, LATENT_DIM)

        def encode(self, x, mask, hidden=None):
            return self.decoder(x).sum(dim=1)

    try:
        assert register_model(Tiny) is Tiny
        model = create_model("tiny_for_test", 3, width=5)
        assert isinstance(model, Tiny) and model.describe() == {"model": "tiny_for_test", "n_outputs": 3,
                                                                "config": {"width": 5}}
        clash = type("Clash", (Tiny,), {"name": "graphnet"})
        with pytest.raises(ConfigurationError, match=r"'graphnet' is taken by hepfm\.models\.graphnet\.GraphNet"):
            register_model(clash)
        assert MODELS["graphnet"].__name__ == "GraphNet"
    finally:
        dict.pop(MODELS, "tiny_for_test", None)


def test_the_pretraining_task_names_have_one_list_that_every_layer_reads():
    import ast

    from hepfm.data import pretraining
    from hepfm.study import config as study_config

    assert pretraining.PRETRAINING_TASKS == ("multiclass", "multilabel", "masked", "jet-tagging")
    assert set(pretraining.PRETRAINING_TASKS) <= set(TASKS)
    assert set(pretraining.PUBLISHABLE_TASKS) <= set(pretraining.EVENT_PRETRAINING_TASKS)
    assert study_config.PRETRAINING_TASKS is pretraining.PRETRAINING_TASKS
    starts = {start for start, _ in study_config.STRATEGIES.values()} - {None}
    assert starts <= {*pretraining.PRETRAINING_TASKS, pretraining.MULTI_TASK}
    # No other module spells out a list of pretraining task names.
    names = set(pretraining.PRETRAINING_TASKS)
    src = Path(pretraining.__file__).resolve().parents[1]
    spelled = []
    for path in src.rglob("*.py"):
        if path.name == "pretraining.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(values & names) >= 2:
                    spelled.append(f"{path.relative_to(src)}:{node.lineno}")
    assert spelled == []


def test_tasks_are_classes_built_by_name():
    assert TASKS == ("multiclass", "multilabel", "binary", "masked", "jet-tagging", "origin", "heavy")
    assert type(Task("binary", ["b", "s"])) is BinaryTask and Task("binary", ["b", "s"]).n_outputs == 1
    assert type(Task("multiclass", ["a", "b", "c"])) is MulticlassTask
    masked = Task("masked", ["light_jet", "muon"], regress=True)
    assert isinstance(masked, MaskedTask) and masked.masked and masked.n_outputs == 2 + 5
    assert Task("masked", ["light_jet", "muon"], regress=True) == masked != Task("masked", ["light_jet", "muon"])
    assert MulticlassTask(["a", "b"]) == Task("multiclass", ["a", "b"])
    assert Task("jet-tagging", ["light", "b"]).card_detail is False and MulticlassTask(["a"]).card_detail
    with pytest.raises(ConfigurationError, match="unknown task 'regression'; choose from multiclass, multilabel"):
        Task("regression", ["x"])
    with pytest.raises(ConfigurationError, match="masked task only"):
        Task("multiclass", ["a", "b"], regress=True)


def test_a_task_of_two_heads_sums_their_weighted_losses_on_their_own_targets():
    torch.manual_seed(0)
    events = MulticlassTask(["a", "b", "c"])
    signal = BinaryTask(["b", "s"])
    task = MultiTask({"process": (events, 1.0), "signal": (signal, 0.25)})
    assert task.n_outputs == 4 and task.names[:2] == ["process:a", "process:b"]
    outputs = torch.randn(6, 4)
    y = {"process": torch.tensor([0, 1, 2, 0, 1, 2]), "signal": torch.tensor([0.0, 1, 1, 0, 0, 1])}
    expected = events.loss(outputs[:, :3], y["process"]) + 0.25 * signal.loss(outputs[:, 3:], y["signal"])
    torch.testing.assert_close(task.loss(outputs, y), expected)
    assert task.loss(outputs, y).shape == (6,)
    scores = task.scores(outputs)
    assert scores["process"].shape == (6, 3) and scores["signal"].shape == (6,)
    metrics = task.metrics(outputs, y)
    assert metrics["accuracy"] == metrics["process_accuracy"] and "signal_auc" in metrics
    assert task.summary()["heads"]["signal"] == {"task": "binary", "names": ["b", "s"], "weight": 0.25,
                                                 "options": {}}
    with pytest.raises(ConfigurationError, match="loss weight"):
        MultiTask({"signal": (signal, -1.0)})
    masked = MultiTask({"process": (events, 1.0), "m": (MaskedTask(["muon", "light_jet"]), 0.5)})
    assert masked.masked and not task.masked  # a masked head masks the batch that every head reads
    with pytest.raises(ConfigurationError, match="at most one masked head"):
        MultiTask({"m": (MaskedTask(["muon"]), 1.0), "n": (MaskedTask(["muon"]), 1.0)})


def test_each_strategy_gives_the_hierarchical_model_its_parameter_groups_through_prepare():
    def build():
        torch.manual_seed(0)
        return create_model("hierarchical", 1, event_model="graphnet", jet_model="deepsets", max_constituents=4)

    jet_params = lambda m: {id(p) for p in m.jet.parameters()}  # noqa: E731
    frozen = build()
    groups = prepare(frozen, "frozen", 1, lr=1e-3, backbone_lr=1e-5)
    assert [g["name"] for g in groups] == ["event"] and frozen.jet_backbone_frozen()
    assert not jet_params(frozen) & {id(p) for p in groups[0]["params"]}
    assert frozen.frozen_rows() is not None  # the trainer computes each jet's embedding once
    finetuned = build()
    groups = prepare(finetuned, "finetune", 1, lr=1e-3, backbone_lr=1e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("event", 1e-3), ("jet", 1e-5)]
    assert {id(p) for p in groups[1]["params"]} == jet_params(finetuned) and finetuned.frozen_rows() is None
    scratch = build()
    assert [(g["name"], g["lr"]) for g in prepare(scratch, "scratch", 1, lr=1e-3, backbone_lr=1e-5)] == [
        ("event", 1e-3), ("jet", 1e-3)]
    with pytest.raises(ConfigurationError, match="built with 1 outputs"):
        prepare(build(), "scratch", 2)
    event = create_model("graphnet", 2)
    assert event.compile_bucketed and event.frozen_rows() is None and event.export_metadata() == {}
    assert not scratch.compile_bucketed and scratch.export_metadata()["max_constituents"] == "4"


def test_a_run_folder_names_its_files(tmp_path):
    run = RunDir(tmp_path / "run")
    assert (run.weights.name, run.config.name, run.history.name, run.checkpoint.name, run.stream_plan.name) == (
        WEIGHTS, CONFIG, HISTORY, CHECKPOINT, STREAM_PLAN) == (
        "model.safetensors", "config.json", "history.csv", "checkpoint.pt", "stream.json")
    run.check_free(overwrite=False)  # not there yet
    run.path.mkdir()
    for name in RunDir.RUN_FILES:
        (run.path / name).write_text("x")
    run.tensorboard.mkdir()
    (run.path / "notes.txt").write_text("mine")
    run.check_free(overwrite=False)  # a checkpoint: a run to resume, not a finished model
    run.checkpoint.unlink()
    assert run.holds_model()
    with pytest.raises(HepfmError, match="already holds a trained model"):
        run.check_free(overwrite=False)
    run.check_free(overwrite=True)
    run.clear()
    assert sorted(p.name for p in run.path.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(HepfmError, match="exists and is not a folder"):
        RunDir(tmp_path / "file").check_free(overwrite=True)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_the_shipped_models_config_json_reads_as_a_version_0_record_and_writes_back_unchanged(path):
    config = json.loads(path.read_text())
    record = RunRecord.from_json(config, str(path))
    assert record.record_version == 0 and "record_version" not in config
    assert record.task in ("multiclass", "multilabel") and record.strategy == "pretrain"
    assert record.model == "graphnet" and record.training["best_epoch"] >= 1
    assert record.signal is UNSET and known(record.signal) is None and known(record.backbone_lr, 1e-5) == 1e-5
    assert record.to_json() == config
    assert "architecture" not in record.metadata() and "hepfm_version" not in record.metadata()


def test_a_record_keeps_unknown_keys_and_refuses_a_newer_version():
    record = RunRecord.from_json({"task": "binary", "names": ["b", "s"], "future_key": [1, 2], "record_version": 1})
    assert record.extra == {"future_key": [1, 2]}
    assert record.to_json() == {"task": "binary", "names": ["b", "s"], "future_key": [1, 2], "record_version": 1}
    with pytest.raises(HepfmError, match=f"record version {RECORD_VERSION + 1}; this hepfm reads up to"):
        RunRecord.from_json({"task": "binary", "record_version": RECORD_VERSION + 1}, "x/config.json")
    with pytest.raises(HepfmError, match="unreadable record_version"):
        RunRecord.from_json({"record_version": "one"})
    assert RunRecord(strategy="scratch", init_from=None).to_json() == {"strategy": "scratch", "init_from": None,
                                                                       "record_version": RECORD_VERSION}


def test_model_folders_are_read_as_records_below_the_training_layer(tmp_path):
    """read_record gives inference, study and the CLI the typed record (the class train re-exports); a
    config.json written before the record (no record_version) reads as version 0 with its keys."""
    import hepfm.models.record as models_record
    from hepfm.models.pretrained import describe_shipped
    from hepfm.models.saving import read_record

    assert RunRecord is models_record.RunRecord
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architecture": {"model": "graphnet", "n_outputs": 2}, "task": "binary", "names": ["b", "s"], "lr": 0.001,
        "training": {"train_time_s": 12.5, "test": {"auc": 0.9}}, "legacy_key": 3}))
    record = read_record(folder)
    assert (record.record_version, record.task, record.names, record.lr, record.model) == \
        (0, "binary", ["b", "s"], 0.001, "graphnet")
    assert record.training["train_time_s"] == 12.5 and record.extra == {"legacy_key": 3}
    assert record.strategy is UNSET and known(record.strategy, "scratch") == "scratch"
    rows = {row["name"]: row for row in describe_shipped()}
    assert rows and all(row["error"] is None and row["model"] for row in rows.values())
