"""Fine-tuning recipes: layer-wise rate decay, the linear probe before fine-tuning (LP-FT), where they apply."""

from __future__ import annotations

import pytest
import torch
from cli_runner import hepfm, one_line_error
from safetensors.torch import load_file

import hepfm as hepfm_pkg
from hepfm.data.datasets import BinarySplitPlan
from hepfm.errors import ConfigurationError
from hepfm.models.registry import create_model
from hepfm.train.trainer import SimulatedKill, TrainConfig
from hepfm.train.strategies import prepare
from hepfm.train.workflows import finetune, pretrain

FAST = dict(batch_size=64, progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def pretrained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pre"
    pretrain(store, out, "multiclass", model_config={"share_blocks": True}, lr=1e-3,
             cfg=TrainConfig(epochs=1, seed=1, **FAST))
    return out


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
    head = load_file(str(probe / "head.safetensors"))
    assert (probe / "history.csv").exists() and not (probe / "checkpoint.pt").exists()
    # The probe trained only the head: applied to the pretrained backbone it is not the fresh head any more.
    assert head["weight"].shape == (1, 64) and torch.isfinite(head["weight"]).all()
    final = hepfm_pkg.load(tmp_path / "whole")
    config = final.metadata["training"]["config"]
    assert config["linear_probe"] is True and config["layer_decay"] == 0.7
    # Killed in the probe phase, the rerun resumes it and ends with the same model, weight for weight.
    with pytest.raises(SimulatedKill):
        _lpft(tmp_path / "killed", store, pretrained, stop_after_batches=7)  # 5 batches an epoch: in the probe's second epoch
    assert (tmp_path / "killed" / "probe" / "checkpoint.pt").exists()
    _lpft(tmp_path / "killed", store, pretrained)
    resumed = hepfm_pkg.load(tmp_path / "killed")
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in final.state_dict().items())
    # Without the probe, the same settings give another model (the probe changed where fine-tuning started).
    plain = finetune(store / "hard", store / "soft", tmp_path / "plain", "finetune", init_from=pretrained,
                     lr=3e-3, backbone_lr=3e-4, plan=BinarySplitPlan(train_size=150),
                     cfg=TrainConfig(epochs=2, seed=3, patience=10, layer_decay=0.7, **FAST))
    assert plain["test"]["loss"] != final.metadata["training"]["test"]["loss"]
