"""Training invariants: fine-tuning starts from the pretrained weights, frozen leaves them untouched,
kill-and-resume equals an uninterrupted run, a short pretrain beats chance, bad input is refused."""

from __future__ import annotations

import math
import re

import pytest
import torch

import hepfm
from hepfm.data.datasets import BinarySplitPlan, EventData, binary_split, pretraining_split
from hepfm.errors import HepfmError
from hepfm.models import create_model
from hepfm.testing import toy_events
from hepfm.train.checkpoint import load_checkpoint
from hepfm.train.distributed import DistContext
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import SimulatedKill, TrainConfig, evaluate, fit
from hepfm.train.workflows import evaluate_run, finetune, pretrain

FAST = dict(batch_size=64, progress=False, tensorboard=False)


PRETRAIN_EPOCHS = 2  # the shared ``pretrained`` fixture (conftest)


def _toy_data(n, seed):
    objects, counts = toy_events(n, seed, mean_jets=4.0)
    y = torch.from_numpy((counts > 6).astype("float32"))
    return EventData(torch.from_numpy(objects), torch.from_numpy(counts), y)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_splits_are_disjoint_and_seeded(store):
    parts, names = pretraining_split(store, "multiclass", split_seed=3)
    assert names == ["soft", "hard"] or names == ["hard", "soft"]
    ids = [set(map(tuple, p.x[:, 0, :3].tolist())) for p in parts.values()]
    assert sum(len(p) for p in parts.values()) == 600
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again, _ = pretraining_split(store, "multiclass", split_seed=3)
    assert torch.equal(again["test"].x, parts["test"].x)
    # Binary splits: one fixed test set for every seed and training size.
    a = binary_split(store / "hard", store / "soft", BinarySplitPlan(train_size=50, seed=0))
    b = binary_split(store / "hard", store / "soft", BinarySplitPlan(train_size=100, seed=4))
    assert torch.equal(a["test"].x, b["test"].x)
    assert len(a["train"]) == 100 and len(b["train"]) == 200
    assert not torch.equal(a["train"].x[:50], b["train"].x[:50])


def test_finetune_starts_from_pretrained_weights_and_frozen_leaves_them(pretrained, downstream, tmp_path):
    store = downstream
    reference = _weights(hepfm.load(pretrained))
    backbone_keys = [k for k in reference if not k.startswith("head.")]
    model = hepfm.load(pretrained)
    prepare(model, "finetune", 1)
    for k in backbone_keys:
        assert torch.equal(model.state_dict()[k], reference[k]), k
    # Fine-tuning with a zero backbone learning rate changes the head only; frozen training too.
    finetune(store / "hard", store / "soft", tmp_path / "ft", "finetune", init_from=pretrained, backbone_lr=0.0,
             plan=BinarySplitPlan(train_size=100), cfg=TrainConfig(epochs=1, **FAST))
    frozen = finetune(store / "hard", store / "soft", tmp_path / "fz", "frozen", init_from=pretrained,
                      plan=BinarySplitPlan(train_size=100), cfg=TrainConfig(epochs=2, **FAST))
    assert frozen["epochs_run"] == 2
    for run in ("ft", "fz"):
        after = hepfm.load(tmp_path / run).state_dict()
        for k in backbone_keys:
            assert torch.equal(after[k], reference[k]), (run, k)
        assert after["head.weight"].shape == (1, 64)
    # With the backbone learning rate on, the backbone moves.
    finetune(store / "hard", store / "soft", tmp_path / "ft2", "finetune", init_from=pretrained,
             plan=BinarySplitPlan(train_size=100), cfg=TrainConfig(epochs=1, **FAST))
    moved = hepfm.load(tmp_path / "ft2").state_dict()
    assert any(not torch.equal(moved[k], reference[k]) for k in backbone_keys)


def test_kill_and_resume_gives_the_same_weights(tmp_path, one_thread):
    train, val = _toy_data(200, 0), _toy_data(60, 1)
    task = Task("binary", ["b", "s"])

    def run(folder, **kw):
        torch.manual_seed(0)
        model = create_model("graphnet", 1, share_blocks=True)
        groups = prepare(model, "scratch", 1, lr=1e-3)
        cfg = TrainConfig(epochs=3, checkpoint_every=2, seed=5, augment=("phi", "boost"), patience=10, **FAST, **kw)
        return model, fit(model, task, train, val, groups, cfg, folder)

    reference, ref_result = run(tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", stop_after_batches=5)  # mid-epoch 2 (4 batches per epoch)
    state = load_checkpoint(tmp_path / "killed")["state"]
    assert (state["epoch"], state["batch"]) == (1, 0)  # epoch ends are checkpoints; batch 5 was not
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", stop_after_batches=2)  # resumed, killed again right after a mid-epoch save
    assert load_checkpoint(tmp_path / "killed")["state"]["batch"] == 2
    resumed, result = run(tmp_path / "killed")
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in ref_result.history]


def test_short_pretrain_on_generated_events_beats_chance(physics_store, tmp_path):
    summary = pretrain(physics_store, tmp_path / "pre", "multiclass", lr=2e-3,
                       cfg=TrainConfig(epochs=4, batch_size=256, progress=False))
    chance = 1 / 7
    # Seeds 0, 1, 2 reach 0.356, 0.423, 0.381 on the hash split's 669 test events (binomial error ~0.019);
    # 2 x chance (0.286) is > 3 errors below the lowest and > 7 above chance.
    assert summary["test"]["accuracy"] > 2 * chance, summary["test"]
    history = (tmp_path / "pre" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,wall_time_s,train_loss,val_loss,val_accuracy")
    assert (tmp_path / "pre" / "tensorboard").is_dir()


def test_multilabel_pretraining_runs_on_truth_labels(store, tmp_path):
    summary = pretrain(store, tmp_path / "ml", "multilabel", model="transformer", lr=1e-3,
                       cfg=TrainConfig(epochs=1, **FAST))
    meta = hepfm.load(tmp_path / "ml").metadata
    assert meta["task"] == "multilabel" and len(meta["names"]) == 41
    assert 0 <= summary["test"]["accuracy"] <= 1


def test_evaluate_uses_the_held_out_split(pretrained, downstream, tmp_path):
    store = downstream
    finetune(store / "hard", store / "soft", tmp_path / "ft", "finetune", init_from=pretrained, lr=1e-3,
             plan=BinarySplitPlan(train_size=100, test_size=80), cfg=TrainConfig(epochs=2, **FAST))
    res = evaluate_run(tmp_path / "ft", store / "hard", store / "soft")
    assert res["held_out"] and res["n_test"] == 160
    assert 0.5 < res["auc"] <= 1.0
    saved = hepfm.load(tmp_path / "ft").metadata["training"]["test"]
    assert math.isclose(saved["auc"], res["auc"], rel_tol=1e-6)


def test_bad_inputs_are_refused(pretrained, store, tmp_path):
    with pytest.raises(HepfmError, match=r"only \d+ are left"):
        finetune(store / "hard", store / "soft", tmp_path / "big", "scratch",
                 plan=BinarySplitPlan(train_size=10_000), cfg=TrainConfig(epochs=1, **FAST))
    with pytest.raises(HepfmError, match="needs a pretrained model"):
        finetune(store / "hard", store / "soft", tmp_path / "x", "finetune")
    with pytest.raises(HepfmError, match="label sets must match"):
        pretrain(store, tmp_path / "y", "multilabel", init_from=pretrained, cfg=TrainConfig(epochs=1, **FAST))
    with pytest.raises(HepfmError, match="already holds a trained model"):
        pretrain(store, pretrained, "multiclass", cfg=TrainConfig(epochs=1, **FAST))
    with pytest.raises(HepfmError, match="at least two processes"):
        pretrain(store / "hard", tmp_path / "one", "multiclass", cfg=TrainConfig(epochs=1, **FAST))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    train, val = _toy_data(128, 0), _toy_data(32, 1)
    model = create_model("graphnet", 1, share_blocks=True)
    groups = prepare(model, "scratch", 1)
    cfg = TrainConfig(epochs=2, seed=0, checkpoint_every=1, **FAST)
    order = torch.randperm(128, generator=torch.Generator().manual_seed(0))  # epoch 0's order
    train.x[order[100], 0, 0] = float("nan")  # in the second batch of the first epoch
    with pytest.raises(HepfmError, match="non-finite training loss at epoch 1, batch 2"):
        fit(model, Task("binary", ["b", "s"]), train, val, groups, cfg, tmp_path)
    saved = load_checkpoint(tmp_path)
    assert saved["state"]["batch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())


def test_bf16_autocast_training_and_other_optimisers_run(tmp_path):
    train, val = _toy_data(128, 0), _toy_data(32, 1)
    task = Task("binary", ["b", "s"])
    for k, (optimizer, schedule, bf16) in enumerate((("adamw", "cosine", True), ("sgd", "constant", False))):
        model = create_model("transformer", 1, layers=1)
        cfg = TrainConfig(epochs=2, optimizer=optimizer, schedule=schedule, bf16=bf16, seed=k, **FAST)
        result = fit(model, task, train, val, prepare(model, "scratch", 1), cfg, tmp_path / str(k))
        assert len(result.history) == 2 and math.isfinite(result.history[-1]["val_loss"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_gpu_with_bf16(tmp_path):
    train, val = _toy_data(512, 0), _toy_data(64, 1)
    model = create_model("graphnet", 1)
    cfg = TrainConfig(epochs=1, seed=0, **FAST)
    ctx = DistContext(device=torch.device("cuda"))
    result = fit(model, Task("binary", ["b", "s"]), train, val, prepare(model, "scratch", 1), cfg, tmp_path, ctx)
    assert math.isfinite(result.history[-1]["val_loss"])


def test_resume_refuses_changed_settings_and_overwrite_starts_fresh(store, pretrained, tmp_path):
    out = tmp_path / "run"

    def cfg(**kw):
        return TrainConfig(**{**dict(epochs=2, seed=0, checkpoint_every=1, **FAST), **kw})

    def run(lr=1e-3, init_from=None, **kw):
        return pretrain(store, out, "multiclass", model_config={"share_blocks": True}, lr=lr, init_from=init_from,
                        **kw)

    with pytest.raises(SimulatedKill):
        run(cfg=cfg(stop_after_batches=2))
    assert (out / "checkpoint.pt").exists()
    changes = [(dict(lr=1e-2, cfg=cfg()), "lr 0.001 -> 0.01"), (dict(cfg=cfg(batch_size=32)), "batch_size 64 -> 32"),
               (dict(cfg=cfg(epochs=3)), "epochs 2 -> 3"), (dict(cfg=cfg(augment=("phi",))), "augment [] -> ['phi']"),
               (dict(init_from=pretrained, cfg=cfg()), "init_from None -> ")]
    for kw, message in changes:
        with pytest.raises(HepfmError, match=re.escape(message)):
            run(**kw)
        assert (out / "checkpoint.pt").exists()  # refused, nothing lost
    # --overwrite discards the checkpoint: a fresh run with the new settings, recorded in config.json.
    run(lr=1e-2, cfg=cfg(), overwrite=True)
    assert hepfm.load(out).metadata["lr"] == 1e-2
    lines = (out / "history.csv").read_text().splitlines()
    assert len(lines) == 3 and not (out / "checkpoint.pt").exists()
    # The same settings resume.
    with pytest.raises(SimulatedKill):
        run(lr=1e-2, cfg=cfg(stop_after_batches=2), overwrite=True)
    run(lr=1e-2, cfg=cfg())
    assert not (out / "checkpoint.pt").exists()


def test_history_lr_is_the_epochs_own_and_validation_is_float32(tmp_path):
    train, val = _toy_data(128, 0), _toy_data(64, 1)
    task = Task("binary", ["b", "s"])
    model = create_model("graphnet", 1, share_blocks=True)
    cfg = TrainConfig(epochs=3, lr_decay=0.5, bf16=True, patience=10, seed=0, **FAST)
    result = fit(model, task, train, val, prepare(model, "scratch", 1, lr=1e-3), cfg, tmp_path)
    assert [r["lr"] for r in result.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    best = [r for r in result.history if r["best"]][-1]
    assert best["val_loss"] == pytest.approx(evaluate(model, task, val)["loss"], rel=1e-6)  # as the test is scored


@pytest.mark.parametrize("cache_frozen", [True, False])
def test_frozen_modules_keep_dropout_off(pretrained, tmp_path, cache_frozen):
    model = create_model("transformer", 1, layers=1, dropout=0.5)
    prepare(model, "frozen", 1)
    modes = {"block": [], "head": []}
    model.blocks[0].register_forward_hook(lambda m, i, o: modes["block"].append(m.training))
    model.head.register_forward_hook(lambda m, i, o: modes["head"].append(m.training))
    train, val = _toy_data(128, 0), _toy_data(32, 1)
    fit(model, Task("binary", ["b", "s"]), train, val, [{"params": list(model.head.parameters()), "lr": 1e-3}],
        TrainConfig(epochs=1, cache_frozen=cache_frozen, **FAST), tmp_path)
    assert True in modes["head"]  # the head trained in training mode
    assert modes["block"] and not any(modes["block"])  # the frozen block never did


@pytest.mark.parametrize("name,dtype", [("graphnet", torch.float32), ("transformer", torch.float32),
                                        ("transformer", torch.float64)])
def test_a_head_on_a_frozen_backbone_trains_alike_on_latents_computed_once(tmp_path, one_thread, name, dtype):
    train, val = _toy_data(300, 0), _toy_data(80, 1)
    train, val = (EventData(d.x.to(dtype), d.n_objects, d.y.to(dtype)) for d in (train, val))
    task = Task("binary", ["b", "s"])
    options = {"share_blocks": True} if name == "graphnet" else {"layers": 1, "dropout": 0.3}

    def run(folder, cache_frozen):
        torch.manual_seed(0)
        model = create_model(name, 1, **options).to(dtype)
        groups = prepare(model, "frozen", 1, lr=3e-3)
        calls = []
        model.decoder.register_forward_hook(lambda m, i, o: calls.append(1))  # once per backbone pass
        cfg = TrainConfig(epochs=4, patience=10, seed=3, cache_frozen=cache_frozen, **FAST)
        return model, fit(model, task, train, val, groups, cfg, folder), len(calls)

    cached, cached_fit, cached_calls = run(tmp_path / "cached", True)
    plain, plain_fit, plain_calls = run(tmp_path / "plain", False)
    assert cached_calls == 2  # the backbone ran once over the training events and once over the validation events
    assert plain_calls > 4 * math.ceil(300 / 64)  # every step and every validation
    for a, b in zip(cached_fit.history, plain_fit.history, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert cached_fit.best_epoch == plain_fit.best_epoch
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_overlapping_signal_and_background_and_multilabel_augment_are_refused(store, tmp_path):
    with pytest.raises(HepfmError, match="share the process"):
        finetune(store, store / "hard", tmp_path / "sb", "scratch", cfg=TrainConfig(epochs=1, **FAST))
    with pytest.raises(HepfmError, match="augmentation phi boost with the multilabel task"):
        pretrain(store, tmp_path / "ml", "multilabel", cfg=TrainConfig(epochs=1, augment=("phi", "boost"), **FAST))
    assert not (tmp_path / "sb").exists() and not (tmp_path / "ml").exists()


def test_rank_slices_are_augmented_like_the_global_batch():
    from hepfm.data.augment import augment

    data = _toy_data(10, 0)
    x, mask, _ = data.batch(torch.arange(10))
    names = ("phi", "eta_flip", "boost")
    whole = augment(x, mask, names, torch.Generator().manual_seed(4))
    gens = [torch.Generator().manual_seed(4) for _ in range(3)]
    for rank, gen in enumerate(gens):
        part = augment(x[rank::3], mask[rank::3], names, gen, rank=rank, world=3, global_size=10)
        torch.testing.assert_close(part, whole[rank::3], rtol=1e-6, atol=1e-6)  # vectorised cosh: last-bit
    # Every process's generator moves alike, so the checkpointed (rank 0) state is every rank's state.
    assert all(torch.equal(g.get_state(), gens[0].get_state()) for g in gens)
