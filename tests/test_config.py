"""The typed configuration tree: one source for the library, the command line, run files and the study."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import typer.main
import yaml

from hepfm.cli import app
from hepfm.cli.options import resolved, train_values
from hepfm.config import RunConfig, TrainConfig, cli_fields, learning_rates, run_config
from hepfm.data.datasets import BinarySplitPlan, EventData
from hepfm.errors import ConfigurationError, HepfmError
from hepfm.models import create_model
from hepfm.study.config import TRAIN_KEYS, parse_config
from hepfm.study.run import cell_config
from hepfm.testing import toy_events, toy_store
from hepfm.train.checkpoint import load_checkpoint
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import SimulatedKill, evaluate, fit, run_settings
from hepfm.train.workflows import finetune

FAST = dict(progress=False, tensorboard=False)
STUDY = {"tasks": ["wh_vs_zh"], "sizes": [1000], "seeds": 2, "test_size": 10,
         "generation": {"downstream_events": 5000}, "strategies": ["scratch"]}


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _cli_config(name: str, *args: str) -> tuple[TrainConfig, dict]:
    """The TrainConfig and option values ``hepfm NAME ARGS`` resolves (parsed, not run)."""
    command = _command(name)
    ctx = command.make_context(name, list(args))
    values = resolved(ctx, ctx.params.get("config"))
    return TrainConfig(**train_values(values)), values


@pytest.mark.parametrize("optimizer", ["adam", "sgd-cosine"])
def test_cli_library_and_study_resolve_the_same_defaults(optimizer):
    library = TrainConfig(optimizer=optimizer)
    pre, _ = _cli_config("pretrain", "--data", "d", "--out", "o", "--optimizer", optimizer)
    fine, _ = _cli_config("finetune", "--signal", "s", "--background", "b", "--out", "o", "--optimizer", optimizer)
    assert pre == fine == library
    study = parse_config({**STUDY, "finetune": {"optimizer": optimizer}, "pretrain": {"lr": 1e-4,
                                                                                      "optimizer": optimizer}})
    # The study's own choices: the cell's seed, its command line's progress and bf16, no TensorBoard in cells.
    assert cell_config(study.finetune.for_cell(1000, "scratch"), seed=0, progress=True) == \
        dataclasses.replace(library, tensorboard=False)
    assert study.pretrain.train_config() == library
    assert library.batch_size == (512 if optimizer == "sgd-cosine" else 1024)
    assert learning_rates(optimizer) == ((1e-2, 1e-3) if optimizer == "sgd-cosine" else (1e-4, 1e-5))


def test_every_trainer_setting_is_a_cli_option_with_the_fields_help():
    for name in ("pretrain", "finetune"):
        params = {p.name: p for p in _command(name).params}
        for f in cli_fields(TrainConfig):
            assert f.name in params, (name, f.name)
            assert params[f.name].help == f.metadata["help"] and f.metadata["help"]
    assert "stop_after_batches" not in {p.name for p in _command("pretrain").params}
    # the study may set every setting but those it sets itself
    assert set(TRAIN_KEYS) == {f.name for f in dataclasses.fields(TrainConfig)} - {
        "seed", "progress", "bf16", "stop_after_batches"}


def test_a_library_call_with_sgd_cosine_trains_like_the_cli(tmp_path):
    store = toy_store(tmp_path / "store", n_per_class=150)
    finetune(store / "hard", store / "soft", tmp_path / "lib", "scratch", plan=BinarySplitPlan(train_size=60),
             cfg=TrainConfig(epochs=1, optimizer="sgd-cosine", **FAST))
    meta = json.loads((tmp_path / "lib" / "config.json").read_text())
    assert meta["lr"] == 1e-2 and meta["backbone_lr"] == 1e-3 and meta["training"]["config"]["batch_size"] == 512


def test_run_file_flags_override_it_and_the_run_records_the_resolved_tree(tmp_path):
    store = toy_store(tmp_path / "store", n_per_class=150)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({
        "command": "finetune", "strategy": "scratch", "lr": 1e-3,
        "data": {"signal": str(store / "hard"), "background": str(store / "soft"), "train_size": 60},
        "model": {"options": {"share_blocks": True}},
        "train": {"epochs": 3, "batch_size": 32, "weight_decay": 0.01, "tensorboard": False, "augment": ["phi"]}}))
    out = tmp_path / "ft"
    cfg, values = _cli_config("finetune", "--config", str(run_file), "--epochs", "1", "--out", str(out))
    assert (cfg.epochs, cfg.batch_size, cfg.weight_decay, cfg.augment) == (1, 32, 0.01, ("phi",))
    assert values["lr"] == 1e-3 and values["model_option"] == {"share_blocks": True}
    app(args=["finetune", "--config", str(run_file), "--epochs", "1", "--out", str(out), "--no-progress"],
        prog_name="hepfm", standalone_mode=False)
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["config"]["epochs"] == 1 and meta["training"]["config"]["weight_decay"] == 0.01
    assert meta["architecture"]["config"]["share_blocks"] is True
    recorded = yaml.safe_load((out / "run.yaml").read_text())
    expected = {**dataclasses.asdict(cfg), "augment": ["phi"], "progress": False}
    assert recorded["train"] == {k: v for k, v in expected.items() if k != "stop_after_batches"}
    assert recorded["lr"] == 1e-3 and recorded["backbone_lr"] == 1e-5 and recorded["data"]["train_size"] == 60
    run_config(recorded, "run.yaml")  # what a run records reads back as a tree
    again, _ = _cli_config("finetune", "--config", str(out / "run.yaml"), "--out", str(tmp_path / "again"))
    assert again == dataclasses.replace(cfg, progress=False)


@pytest.mark.parametrize("tree, message", [
    ({"train": {"epoch": 3}}, "unknown key 'epoch'"),
    ({"train": {"epochs": "many"}}, "'epochs' must be an integer"),
    ({"train": {"ema_decay": 1.0}}, "ema_decay (--ema-decay) must be a finite number in [0, 1)"),
    ({"modle": {}}, "unknown key 'modle'"),
    ({"data": {"signal": "x"}}, "unknown key 'data.signal' for hepfm pretrain"),
    ({"command": "finetune"}, "a run file for hepfm finetune"),
])
def test_a_bad_run_file_is_one_line_naming_the_key_and_the_file(tmp_path, tree, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(HepfmError, match=None) as info:
        _cli_config("pretrain", "--data", "d", "--out", "o", "--config", str(path))
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_study_sets_any_trainer_setting_per_task_size_and_strategy():
    raw = {**STUDY, "sizes": [1000, 2000], "strategies": ["scratch", "finetune_multiclass"],
           "generation": {"downstream_events": 6000},
           "pretrain": {"lr": 1e-4, "warmup_steps": 5, "by_task": {"multiclass": {"schedule": "cosine"}}},
           "finetune": {"weight_decay": 0.01, "augment": ["phi"], "schedule": "constant",
                        "by_strategy": {"finetune_multiclass": {"ema_decay": 0.99, "lr_grid": [1e-3]}},
                        "by_size": {2000: {"warmup_steps": 7}}}}
    cfg = parse_config(raw)
    scratch = cell_config(cfg.finetune.for_cell(1000, "scratch"), seed=1)
    assert (scratch.weight_decay, scratch.augment, scratch.schedule, scratch.ema_decay, scratch.seed) == \
        (0.01, ("phi",), "constant", 0.0, 1)
    tuned = cfg.finetune.for_cell(2000, "finetune_multiclass")
    assert cell_config(tuned, seed=0).ema_decay == 0.99 and tuned.lr_grid == (1e-3,)
    assert cell_config(tuned, seed=0).warmup_steps == 7
    pre = cfg.pretrain.with_overrides(cfg.pretrain_by_task["multiclass"]).train_config()
    assert (pre.warmup_steps, pre.schedule) == (5, "cosine")
    for change, message in [({"finetune": {"warmup_step": 3}}, "unknown key(s) ['warmup_step'] in 'finetune'"),
                            ({"finetune": {"seed": 3}}, "unknown key(s) ['seed'] in 'finetune'"),
                            ({"finetune": {"weight_decay": "x"}}, "'finetune.weight_decay' must be a number"),
                            ({"finetune": {"augment": ["spin"]}}, "'finetune.augment': unknown augmentation"),
                            ({"finetune": {"by_strategy": {"scratch": {"ema_decay": 2}}}},
                             "'finetune.by_strategy.scratch': ema_decay"),
                            ({"finetune": {"by_strategy": {"magic": {}}}}, "unknown strategy 'magic'")]:
        with pytest.raises(ConfigurationError, match=None) as info:
            parse_config({**STUDY, **change}, "study.yaml")
        assert message in str(info.value) and str(info.value).startswith("study.yaml: ")


def _data(n, seed):
    objects, counts = toy_events(n, seed, mean_jets=4.0)
    return EventData(torch.from_numpy(objects), torch.from_numpy(counts),
                     torch.from_numpy((counts > 6).astype("float32")))


def _fit(folder, train, val, **kw):
    torch.manual_seed(0)
    model = create_model("graphnet", 1, share_blocks=True)
    cfg = TrainConfig(epochs=3, batch_size=64, checkpoint_every=2, seed=5, patience=10, **FAST, **kw)
    result = fit(model, Task("binary", ["b", "s"]), train, val, prepare(model, "scratch", 1, lr=3e-3), cfg, folder)
    return model, result


def test_ema_off_is_todays_run_and_on_averages_the_weights_and_resumes_exactly(tmp_path, one_thread):
    train, val = _data(200, 0), _data(60, 1)
    plain, _plain_result = _fit(tmp_path / "plain", train, val)
    off, _ = _fit(tmp_path / "off", train, val, ema_decay=0.0)
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in plain.state_dict().items())
    assert "ema_decay" not in run_settings(TrainConfig(ema_decay=0.0))  # checkpoints of earlier runs resume
    averaged, result = _fit(tmp_path / "ema", train, val, ema_decay=0.9)
    assert any(not torch.equal(v, averaged.state_dict()[k]) for k, v in plain.state_dict().items())
    # The kept weights are the average's: they score the best epoch's recorded validation loss.
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    assert evaluate(averaged, Task("binary", ["b", "s"]), val, 8192)["loss"] == pytest.approx(best["val_loss"],
                                                                                            rel=1e-6)
    with pytest.raises(SimulatedKill):
        _fit(tmp_path / "killed", train, val, ema_decay=0.9, stop_after_batches=6)  # mid-epoch 2, after a save
    assert "ema" in load_checkpoint(tmp_path / "killed")
    resumed, resumed_result = _fit(tmp_path / "killed", train, val, ema_decay=0.9)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in averaged.state_dict().items())
    assert [r["val_loss"] for r in resumed_result.history] == [r["val_loss"] for r in result.history]
    with pytest.raises(SimulatedKill):
        _fit(tmp_path / "other", train, val, ema_decay=0.9, stop_after_batches=2)
    with pytest.raises(HepfmError, match=re.escape("ema_decay 0.9 -> 0.5")):  # another decay does not resume that run
        _fit(tmp_path / "other", train, val, ema_decay=0.5)


def test_the_run_tree_round_trips():
    tree = RunConfig(command="finetune", strategy="frozen", train=TrainConfig(augment=("phi",)))
    assert run_config(tree.to_dict(), "x.yaml") == tree


def test_a_time_limit_stops_at_the_end_of_the_epoch_that_reaches_it(tmp_path, one_thread):
    train, val = _data(200, 0), _data(60, 1)
    _, unlimited = _fit(tmp_path / "unlimited", train, val)
    assert len(unlimited.history) == 3 and "max_train_time_s" not in run_settings(TrainConfig())
    # Any epoch takes more than a nanosecond: the first one ends the run, and its weights are those kept.
    _, result = _fit(tmp_path / "limited", train, val, max_train_time_s=1e-9)
    assert len(result.history) == 1 and result.best_epoch == 1 and result.stopped_early
    assert result.history[0]["val_loss"] == unlimited.history[0]["val_loss"]  # the same first epoch
    _, generous = _fit(tmp_path / "generous", train, val, max_train_time_s=1e6)
    assert [r["val_loss"] for r in generous.history] == [r["val_loss"] for r in unlimited.history]
    with pytest.raises(ConfigurationError, match="max_train_time_s"):
        TrainConfig(max_train_time_s=-1.0)
