"""Multi-task pretraining: several weighted heads on one backbone (process, truth labels, per-object origin,
heavy-particle kinematics, masked objects), learned, resumable, under torchrun and bf16, recorded in the model
folder and fine-tuned like any other pretrained model; old stores refused for the heads that need new truth."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from cli_runner import hepfm
from safetensors.torch import load_file

from hepfm.data.datasets import EventData, multi_task_split
from hepfm.data.streaming import stream_pretraining_split
from hepfm.errors import ConfigurationError, HepfmError, OverlapError
from hepfm.models import create_model
from hepfm.testing import multi_task_store, toy_store
from hepfm.testing.events import TOY_HEAVY_NAMES, TOY_ORIGIN_NAMES, toy_origins
from hepfm.train.checkpoint import load_checkpoint
from hepfm.train.record import RunRecord
from hepfm.train.strategies import prepare
from hepfm.train.tasks import HeavyTask, MaskedTask, MultiTask, OriginTask, Task
from hepfm.train.trainer import SimulatedKill, TrainConfig, fit
from hepfm.train.workflows import finetune, pretrain

FAST = dict(batch_size=64, progress=False, tensorboard=False)
HEADS = {"multiclass": 1.0, "origin": 0.5, "heavy": 0.2}


@pytest.fixture(scope="module")
def mt_store(tmp_path_factory):
    return multi_task_store(tmp_path_factory.mktemp("mt") / "store", n_per_class=300)


@pytest.fixture(scope="module")
def mt_splits(mt_store):
    return multi_task_split(mt_store, ["multiclass", "origin", "heavy"], split_seed=0)


def _task(splits, names, heads=("multiclass", "origin", "heavy"), masked=False) -> MultiTask:
    tasks = {"multiclass": (Task("multiclass", names["multiclass"]), 1.0),
             "origin": (OriginTask(names["origin"]), 0.5),
             "heavy": (HeavyTask.fitted(names["heavy"], splits["train"].targets["heavy"]), 0.2)}
    tasks = {h: tasks[h] for h in heads}
    if masked:
        tasks["masked"] = (MaskedTask(["light_jet", "b_jet", "electron", "muon", "met"]), 0.3)
    return MultiTask(tasks)


def test_targets_follow_their_events_and_objects_through_subset_concat_and_batches(mt_splits):
    splits, names = mt_splits
    assert names["origin"] == list(TOY_ORIGIN_NAMES) and names["heavy"] == list(TOY_HEAVY_NAMES)
    train = splits["train"]
    assert train.object_targets == {"origin"} and train.targets["origin"].shape == train.x.shape[:2]
    real = torch.arange(train.x.shape[1])[None, :] < train.n_objects[:, None]
    assert bool((train.targets["origin"][~real] == -1).all()) and bool((train.targets["origin"][real] >= 0).all())
    part = train.subset([3, 1])
    assert torch.equal(part.targets["heavy"], train.targets["heavy"][[3, 1]])
    narrow = EventData(part.x[:, :12], part.n_objects, part.y, None, {k: v[:, :12] if k == "origin" else v
                                                                       for k, v in part.targets.items()},
                       part.object_targets)
    both = EventData.concat([narrow, part])
    assert both.targets["origin"].shape == (4, train.x.shape[1])
    assert torch.equal(both.targets["origin"][2:], part.targets["origin"])
    _, mask, y = train.batch(torch.tensor([0, 5, 7]))
    assert set(y) == {"multiclass", "origin", "heavy"} and y["origin"].shape == mask.shape
    assert torch.equal(y["origin"] >= 0, mask)
    moved = train.to("cpu")
    assert moved.object_targets == train.object_targets and moved.targets.keys() == train.targets.keys()


def test_heads_combine_event_and_per_object_outputs_and_refuse_what_does_not_fit(mt_splits):
    splits, names = mt_splits
    task = _task(splits, names)
    assert task.n_outputs == 2 + 2 * 6 and task.n_object_outputs == len(TOY_ORIGIN_NAMES)
    torch.manual_seed(0)
    events, objects = torch.randn(5, task.n_outputs), torch.randn(5, 9, 4)
    y = splits["train"].batch(torch.arange(5))[2]
    y["origin"] = y["origin"][:, :9] if y["origin"].shape[1] >= 9 else torch.nn.functional.pad(
        y["origin"], (0, 9 - y["origin"].shape[1]), value=-1)
    parts = task.split((events, objects))
    expected = (task.heads["multiclass"][0].loss(parts["multiclass"], y["multiclass"])
                + 0.5 * task.heads["origin"][0].loss(parts["origin"], y["origin"])
                + 0.2 * task.heads["heavy"][0].loss(parts["heavy"], y["heavy"]))
    torch.testing.assert_close(task.loss((events, objects), y), expected)
    with pytest.raises(ConfigurationError, match="per-object outputs"):
        task.loss(events, y)
    with pytest.raises(ConfigurationError, match="at most one masked head"):
        MultiTask({"a": (MaskedTask(["muon"]), 1.0), "b": (MaskedTask(["muon"]), 1.0)})
    with pytest.raises(ConfigurationError, match="P_exists"):
        HeavyTask(["top1_pt"])
    with pytest.raises(ConfigurationError, match="no per-object outputs"):
        create_model("deepsets", 2).add_object_head(3)


def test_a_separable_origin_is_learned_per_object_and_recorded_with_the_heads(mt_store, tmp_path):
    summary = pretrain(mt_store, tmp_path / "pre", "multi", heads=HEADS, lr=3e-3,
                       model_config={"share_blocks": True}, cfg=TrainConfig(epochs=4, seed=1, **FAST))
    test = summary["test"]
    # Origin is a function of each object's type, b tag and pT: well above the most common code's share.
    assert test["origin_accuracy"] > test["origin_chance"] + 0.4, test  # measured 0.97 against 0.35
    assert {"multiclass_accuracy", "heavy_accuracy", "heavy_kinematics_mse"} <= set(test)
    record = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert record["task"] == "multi"
    heads = record["task_options"]["heads"]
    assert RunRecord.from_json(record).heads == HEADS
    assert heads["origin"]["names"] == list(TOY_ORIGIN_NAMES)
    assert not any(k.startswith("object_head") for k in load_file(str(tmp_path / "pre" / "model.safetensors")))


def test_multi_task_kill_and_resume_equals_uninterrupted_with_a_masked_head_in_bf16(mt_splits, tmp_path,
                                                                                     one_thread):
    splits, names = mt_splits
    task = _task(splits, names, masked=True)

    def run(folder, **kw):
        torch.manual_seed(0)
        model = create_model("graphnet", task.n_outputs, share_blocks=True, mask_token=True)
        model.fit_scaling(splits["train"])
        model.add_object_head(task.n_object_outputs)
        groups = prepare(model, "scratch", task.n_outputs, lr=1e-3)
        cfg = TrainConfig(epochs=2, checkpoint_every=3, seed=5, patience=10, bf16=True, **FAST, **kw)
        return model, fit(model, task, splits["train"], splits["val"], groups, cfg, folder)

    reference, ref_result = run(tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", stop_after_batches=4)
    assert load_checkpoint(tmp_path / "killed")["state"]["batch"] == 3
    resumed, result = run(tmp_path / "killed")
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in ref_result.history]
    assert {"val_origin_accuracy", "val_masked_accuracy", "val_heavy_kinematics_mse"} <= set(result.history[-1])


def test_stores_without_the_new_truth_and_bad_head_settings_are_refused(tmp_path, mt_store):
    old = toy_store(tmp_path / "old", n_per_class=40)
    with pytest.raises(HepfmError, match=r"old: shard .* no per-object origins .* regenerate"):
        pretrain(old, tmp_path / "r1", "multi", heads={"multiclass": 1.0, "origin": 1.0}, cfg=TrainConfig(**FAST))
    with pytest.raises(HepfmError, match="heavy-particle kinematics"):
        multi_task_split(old, ["heavy"])
    assert not (tmp_path / "r1").exists()
    multi_task_split(old, ["multiclass", "multilabel"])  # the older heads read old stores
    for heads, fragment in (({"colour": 1.0}, "unknown head 'colour'"), ({}, "needs heads"),
                            ({"origin": 1.0}, "needs an event-level head")):
        with pytest.raises(HepfmError, match=fragment):
            pretrain(mt_store, tmp_path / "r2", "multi", heads=heads, cfg=TrainConfig(**FAST))
    with pytest.raises(HepfmError, match="heads are for --task multi"):
        pretrain(mt_store, tmp_path / "r2", "multiclass", heads=HEADS, cfg=TrainConfig(**FAST))
    with pytest.raises(HepfmError, match="augmentation"):
        pretrain(mt_store, tmp_path / "r2", "multi", heads=HEADS, cfg=TrainConfig(augment=("phi",), **FAST))


def test_cli_multi_task_under_torchrun_equals_one_process_and_fine_tunes_with_leak_checks(mt_store, tmp_path):
    common = ["pretrain", "--data", mt_store, "--task", "multi", "--heads", "multiclass=1,origin=0.5,heavy=0.2",
              "--epochs", 1, "--lr", "1e-2", "--optimizer", "sgd", "--seed", 3, "--batch-size", 128,
              "--model-option", "share_blocks=true", "--no-progress"]
    single = hepfm(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    assert "multiclass: 1.0" in (tmp_path / "single" / "run.yaml").read_text()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    ddp = hepfm(*common, "--out", tmp_path / "ddp", launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr + ddp.stdout
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("single", "ddp"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    # The run file repeats the run's heads.
    again = hepfm("pretrain", "--config", tmp_path / "single" / "run.yaml", "--out", tmp_path / "again",
                  "--max-events", 60)
    assert again.returncode == 0, again.stderr
    assert "origin: 0.5" in (tmp_path / "again" / "run.yaml").read_text()
    # Fine-tuning takes the backbone and drops the heads; held-out events seen in pretraining are refused.
    downstream = toy_store(tmp_path / "down", n_per_class=150, seed=77)
    r = hepfm("finetune", "--signal", downstream / "hard", "--background", downstream / "soft", "--from",
              tmp_path / "single", "--train-size", 60, "--epochs", 1, "--out", tmp_path / "ft", "--batch-size", 64,
              "--no-progress")
    assert r.returncode == 0, r.stderr
    assert load_file(str(tmp_path / "ft" / "model.safetensors"))["head.weight"].shape == (1, 64)
    with pytest.raises(OverlapError):
        finetune(mt_store / "hard", mt_store / "soft", tmp_path / "leak", "finetune", init_from=tmp_path / "single",
                 cfg=TrainConfig(epochs=1, **FAST))
    bad = hepfm(*common[:5], "--heads", "multiclass=x", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "--heads: weight 'x' of head 'multiclass' is not a number" in bad.stderr


def test_streamed_multi_task_batches_carry_each_events_own_targets(mt_store, tmp_path):
    train, held, names = stream_pretraining_split(mt_store, "multi", buffer_size=200, chunk_size=50,
                                                  heads=["multiclass", "origin", "heavy", "multilabel"])
    assert names["origin"] == list(TOY_ORIGIN_NAMES) and set(held["val"].targets) == set(names)
    seen = 0
    for _, x, mask, y in train.epoch_batches(0, 3, 64, rank=1, world=2):
        # Origin is a function of each object's row: the streamed codes must be those of the streamed rows.
        expected = toy_origins(x.numpy(), mask.sum(dim=1).numpy())
        assert np.array_equal(y["origin"].numpy(), expected) and y["heavy"].shape == (len(x), 10)
        hard = y["multiclass"] == names["multiclass"].index("hard")
        assert torch.equal(y["heavy"][:, 0] == 1, hard)  # a 'top' exists in hard events only
        seen += len(x)
    assert seen == len(train) // 2
    summary = pretrain(mt_store, tmp_path / "streamed", "multi", heads={"origin": 1.0, "masked": 0.5, "heavy": 0.1},
                       stream=True, model_config={"share_blocks": True}, cfg=TrainConfig(epochs=1, **FAST))
    assert summary["stream"] and "origin_accuracy" in summary["test"] and "masked_accuracy" in summary["test"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_multi_task_with_the_masked_head_alone_pretrains(mt_store, tmp_path, stream):
    # No head but the masked one reads stored targets, so batches carry the bare process index.
    summary = pretrain(mt_store, tmp_path / "masked", "multi", heads={"masked": 1.0}, stream=stream,
                       cfg=TrainConfig(epochs=1, **FAST))
    assert summary["test"]["accuracy"] == summary["test"]["masked_accuracy"]
    assert 0.0 <= summary["test"]["masked_accuracy"] <= 1.0
