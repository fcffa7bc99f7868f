"""Fine-tuning recipes: layer-wise rate decay, the linear probe before fine-tuning (LP-FT), where they apply."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import hepfm, one_line_error
from safetensors.torch import load_file

import hepfm as hepfm_pkg
from hepfm.data.datasets import BinarySplitPlan
from hepfm.errors import ConfigurationError
from hepfm.models.registry import create_model
from hepfm.study.config import parse_config
from hepfm.study.layout import StudyLayout
from hepfm.study.run import point_name, run_study
from hepfm.train.strategies import prepare
from hepfm.train.trainer import SimulatedKill, TrainConfig
from hepfm.train.workflows import finetune

FAST = dict(batch_size=64, progress=False, tensorboard=False)


@pytest.mark.parametrize("name, options, n_depths", [("graphnet", {}, 6), ("graphnet", {"share_blocks": True}, 3),
                                                     ("transformer", {}, 6)])
def test_depth_groups_cover_everything_below_the_head_input_side_first(name, options, n_depths):
    model = create_model(name, 2, **options)
    groups = model.depth_groups()
    assert len(groups) == n_depths
    ids = [id(p) for g in groups for p in g]
    head = {id(p) for p in model.head.parameters()}
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()} - head
    first = {id(p) for p in (model.node_encoder if name == "graphnet" else model.embed).parameters()}
    assert first <= {id(p) for p in groups[0]}
    assert {id(p) for p in model.decoder.parameters()} <= {id(p) for p in groups[-1]}


def test_layer_decay_lowers_the_rate_by_depth_and_keeps_the_head_rate():
    model = create_model("graphnet", 1)
    depths = model.depth_groups()
    groups = prepare(model, "finetune", 1, lr=1e-3, backbone_lr=1e-4, layer_decay=0.5)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 1e-3
    rates = [g["lr"] for g in groups[1:]]
    assert rates == pytest.approx([1e-4 * 0.5 ** (len(depths) - 1 - i) for i in range(len(depths))])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # No decay: today's two groups exactly.
    plain = prepare(create_model("graphnet", 1), "finetune", 1, lr=1e-3, backbone_lr=1e-4)
    assert [g["name"] for g in plain] == ["head", "backbone"]


@pytest.mark.parametrize("strategy, setting, message", [
    ("scratch", {"layer_decay": 0.8}, "layer_decay applies to the finetune strategy, not to scratch"),
    ("frozen", {"linear_probe": True}, "linear_probe applies to the finetune strategy, not to frozen"),
])
def test_recipe_settings_outside_fine_tuning_are_refused_before_anything_is_written(downstream, pretrained, tmp_path,
                                                                                    strategy, setting, message):
    store = downstream
    with pytest.raises(ConfigurationError, match=message):
        finetune(store / "hard", store / "soft", tmp_path / "run", strategy, init_from=pretrained,
                 cfg=TrainConfig(epochs=1, **FAST, **setting))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigurationError, match="layer_decay"):
        TrainConfig(layer_decay=0.0)


def test_the_cli_refuses_a_recipe_for_pretraining_in_one_line(store, tmp_path):
    result = hepfm("pretrain", "--data", str(store), "--out", str(tmp_path / "pre"), "--linear-probe",
                   "--no-progress")
    one_line_error(result, "linear_probe applies to the finetune strategy, not to pretraining")
    assert not (tmp_path / "pre").exists()


def _lpft(folder, store, pretrained, **kw):  # store: events the pretrained model never saw
    cfg = TrainConfig(epochs=2, seed=3, patience=10, linear_probe=True, layer_decay=0.7, **FAST, **kw)
    return finetune(store / "hard", store / "soft", folder, "finetune", init_from=pretrained, lr=3e-3,
                    backbone_lr=3e-4, plan=BinarySplitPlan(train_size=150), cfg=cfg)


def test_lpft_trains_the_head_on_the_frozen_backbone_first_and_resumes_exactly(downstream, pretrained, tmp_path,
                                                                              one_thread):
    store = downstream
    _lpft(tmp_path / "whole", store, pretrained)
    probe = tmp_path / "whole" / "probe"
    head = load_file(str(probe / "probed.safetensors"))
    assert (probe / "history.csv").exists() and not (probe / "checkpoint.pt").exists()
    # The probe trained only the head: applied to the pretrained backbone it is not the fresh head any more.
    assert set(head) == {"head.weight", "head.bias"}  # only the new output layer trained in the probe
    assert head["head.weight"].shape == (1, 64) and torch.isfinite(head["head.weight"]).all()
    final = hepfm_pkg.load(tmp_path / "whole")
    config = final.metadata["training"]["config"]
    assert config["linear_probe"] is True and config["layer_decay"] == 0.7
    # Killed in the probe phase, the rerun resumes it and ends with the same model, weight for weight.
    with pytest.raises(SimulatedKill):
        # 5 batches an epoch: killed in the probe's second epoch.
        _lpft(tmp_path / "killed", store, pretrained, stop_after_batches=7)
    assert (tmp_path / "killed" / "probe" / "checkpoint.pt").exists()
    _lpft(tmp_path / "killed", store, pretrained)
    resumed = hepfm_pkg.load(tmp_path / "killed")
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in final.state_dict().items())
    # Without the probe, the same settings give another model (the probe changed where fine-tuning started).
    plain = finetune(store / "hard", store / "soft", tmp_path / "plain", "finetune", init_from=pretrained,
                     lr=3e-3, backbone_lr=3e-4, plan=BinarySplitPlan(train_size=150),
                     cfg=TrainConfig(epochs=2, seed=3, patience=10, layer_decay=0.7, **FAST))
    assert plain["test"]["loss"] != final.metadata["training"]["test"]["loss"]


def test_a_study_tunes_recipe_axes_one_at_a_time_at_the_best_point_and_records_the_choice(tmp_path, toy_stores):
    pre, down = toy_stores(n_per_class=300, seed=1), toy_stores(n_per_class=300, seed=2)
    raw = {"tasks": {"toy": {"signal": str(down / "hard"), "background": str(down / "soft")}},
           "sizes": [40], "seeds": 1, "test_size": 60, "strategies": ["scratch", "finetune_multiclass"],
           "model_options": {"share_blocks": True},
           "pretrain": {"data": str(pre), "epochs": 1, "batch_size": 128, "lr": 1e-3},
           "finetune": {"epochs": 1, "batch_size": 32, "lr_grid": [1e-3, 3e-3], "backbone_ratios": [0.1],
                        "recipe": {"weight_decay": [0.0, 0.01], "linear_probe": [False, True]}},
           "cka": {"events": 60}}
    cfg = parse_config(raw)
    assert run_study(cfg, tmp_path, progress=False).failures == []
    layout = StudyLayout(tmp_path)
    scratch = json.loads((layout.tuning("toy", 40, "scratch") / layout.TUNING).read_text())
    # Scratch: the two rates, then weight decay at the better one; LP-FT is fine-tuning's alone.
    assert len(scratch["grid"]) == 3 and not any("lp" in p["point"] for p in scratch["grid"])
    best_rate = min(scratch["grid"][:2], key=lambda p: p["val_loss"])
    assert scratch["grid"][2]["point"] == point_name(best_rate["lr"], None, {"weight_decay": 0.01})
    fine = json.loads((layout.tuning("toy", 40, "finetune_multiclass") / layout.TUNING).read_text())
    assert len(fine["grid"]) == 4  # 2 rates, weight decay at the best, the probe at the best of those three
    best3 = min(fine["grid"][:3], key=lambda p: (p["collapsed"], p["val_loss"]))
    assert fine["grid"][3]["recipe"] == {**best3.get("recipe", {}), "linear_probe": True}
    assert (tmp_path / fine["grid"][3]["run"] / "probe" / "probed.safetensors").exists()
    cell = json.loads((layout.cell("toy", 40, "finetune_multiclass", 0) / layout.RESULT).read_text())
    chosen = next(p for p in fine["grid"] if p["point"] == fine["chosen"])
    assert cell["point"] == chosen["point"] and cell.get("recipe") == chosen.get("recipe")
    trained = json.loads((tmp_path / cell["run"] / "config.json").read_text())["training"]["config"]
    for key, value in chosen.get("recipe", {}).items():
        assert trained[key] == value
    # Rerun: the tuning replays to the same points and is reused; another axis is refused.
    assert run_study(cfg, tmp_path, progress=False).failures == []
    other = parse_config({**raw, "finetune": {**raw["finetune"], "recipe": {"weight_decay": [0.0, 0.1]}}})
    failures = run_study(other, tmp_path, progress=False).failures
    assert failures and all("the configuration asks for" in f["error"] for f in failures)


@pytest.mark.parametrize("recipe, message", [
    ({"weight_decay": 0.01}, "must be a list of 1 to 10 single values"),
    ({"weight_decay": [0.0, 0.0]}, "lists a value twice"),
    ({"weight_decay": ["x"]}, "value must be a number"),
    ({"layer_decay": [0.0]}, "layer_decay"),
    ({"seed": [1, 2]}, "unknown key(s) ['seed']"),
])
def test_bad_recipe_axes_are_one_line_naming_the_file(recipe, message):
    raw = {"tasks": ["wh_vs_zh"], "sizes": [1000], "seeds": 2, "test_size": 10,
           "generation": {"downstream_events": 5000}, "strategies": ["scratch"], "finetune": {"recipe": recipe}}
    with pytest.raises(ConfigurationError) as info:
        parse_config(raw, "study.yaml")
    assert message in str(info.value) and str(info.value).startswith("study.yaml: ")
