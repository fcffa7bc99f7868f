"""The masked-object task: targets, the dummy hiding its object, seeded masks, resume, learning a separable
toy, transfer to a binary task, the seed-002 optimiser and model size, and the command line end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hepfm.data.datasets import BinarySplitPlan, EventData
from hepfm.data.masking import IGNORE, OBJECT_CLASSES, choose_slots, class_table, object_class, object_classes
from hepfm.errors import HepfmError
from hepfm.io.store import shard_name, write_manifest, write_shard
from hepfm.models import create_model
from hepfm.models.base import count_parameters
from hepfm.models.saving import load_model
from hepfm.testing import toy_events, toy_store
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import SimulatedKill, TrainConfig, batch_uniforms, fit
from hepfm.train.workflows import finetune, pretrain

FAST = dict(progress=False, tensorboard=False)
CLASSES = object_classes(None)
SMALL = {"graphnet": dict(depth=2, n_blocks=2), "transformer": dict(dim=32, heads=2, layers=2)}


def _batch(n=64, seed=0):
    objects, counts = toy_events(n, seed, mean_jets=4.0)
    x = torch.from_numpy(objects)
    mask = torch.arange(x.shape[1])[None, :] < torch.from_numpy(counts)[:, None]
    return x, mask


def test_target_is_the_class_of_the_hidden_object_and_its_row_is_zeroed():
    x, mask = _batch()
    x[:5, 1:] = 0.0  # five events with a single object: never masked
    mask[:5, 1:] = False
    task = Task("masked", CLASSES)
    u = torch.rand(len(x), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    xm, hidden, y = task.mask(x, mask, u, create_model("graphnet", task.n_outputs).scaling)
    assert not hidden[:5].any() and (y[:5, 0] == IGNORE).all()
    assert (hidden.sum(dim=1)[5:] == 1).all() and not (hidden & ~mask).any()
    slot = hidden.long().argmax(dim=1)[5:]
    original = x[5:][torch.arange(len(slot)), slot]
    names = [CLASSES[int(c)] for c in y[5:, 0]]
    for row, name in zip(original, names, strict=True):
        typ, btag = int(row[6]), row[4] > 0.5
        expected = {1: "b_jet" if btag else "light_jet", 2: "electron", 3: "muon", 6: "met"}[typ]
        assert name == expected
    assert (xm[hidden] == 0).all()
    assert torch.equal(xm[~hidden], x[~hidden])  # nothing else changes
    # Every real object is chosen sometimes (uniform choice), padding never.
    slots, masked = choose_slots(mask, torch.rand(len(x), dtype=torch.float64))
    assert (slots < mask.sum(dim=1)).all() and masked[5:].all()


def test_classes_follow_the_store_and_tau_only_with_taus():
    assert "tau" not in object_classes({"tau_tagging": False}) and "tau" in object_classes({"tau_tagging": True})
    assert "tau" in object_classes(None, [1, 5, 6])
    table = class_table(["light_jet", "b_jet", "met"])
    rows = torch.tensor([[50, 0, 0, 50, 1, 0, 1], [50, 0, 0, 50, 0, 0, 1], [30, 0, 0, 30, 0, 0, 6],
                         [20, 0, 0, 20, 0, -1, 2]], dtype=torch.float32)
    assert object_class(rows, table).tolist() == [1, 0, 2, IGNORE]
    with pytest.raises(ValueError, match="unknown object class"):
        class_table(["gluon"])


@pytest.mark.parametrize("name", ["graphnet", "transformer"])
def test_the_dummy_hides_type_and_kinematics(name):
    torch.manual_seed(0)
    model = create_model(name, len(CLASSES), mask_token=True, **SMALL[name]).eval()
    x, mask = _batch(32, seed=1)
    task = Task("masked", CLASSES)
    u = torch.rand(len(x), dtype=torch.float64)
    xm, hidden, _ = task.mask(x, mask, u, model.scaling)
    # Put back, in the hidden slots, anything at all: another type, other kinematics. The model is handed the
    # same batch (masking zeroes the slot) and its dummy token replaces the slot's embedding in any case.
    other = x.clone()
    other[hidden] = torch.tensor([300.0, 1.5, -2.0, 700.0, 1.0, -1.0, 4.0])
    xo, hidden_o, _ = task.mask(other, mask, u, model.scaling)
    assert torch.equal(hidden, hidden_o)
    with torch.no_grad():
        a, b = model(xm, mask, hidden), model(xo, mask, hidden)
        # Without the dummy the model does see what is in the slot: the check above can fail.
        c, d = model(x, mask), model(other, mask)
    assert torch.allclose(a, b, atol=0, rtol=0)
    assert not torch.allclose(c, d)
    # The token itself is used (changing it changes the outputs).
    with torch.no_grad():
        model.mask_token.add_(1.0)
        assert not torch.allclose(model(xm, mask, hidden), a)


def test_the_same_seed_gives_the_same_masks():
    a, b = batch_uniforms(3, 1, 7, 100, "cpu"), batch_uniforms(3, 1, 7, 100, "cpu")
    assert torch.equal(a, b)
    for other in (batch_uniforms(4, 1, 7, 100, "cpu"), batch_uniforms(3, 2, 7, 100, "cpu"),
                  batch_uniforms(3, 1, 8, 100, "cpu")):
        assert not torch.equal(a, other)
    _, mask = _batch(100)
    s1, _ = choose_slots(mask, a)
    s2, _ = choose_slots(mask, batch_uniforms(4, 1, 7, 100, "cpu"))
    assert torch.equal(s1, choose_slots(mask, b)[0]) and not torch.equal(s1, s2)
    # Evaluation masks: fixed per event, whatever the batch size.
    task = Task("masked", CLASSES)
    assert torch.equal(task.eval_uniforms(50), task.eval_uniforms(80)[:50])


def _data(n, seed):
    objects, counts = toy_events(n, seed, mean_jets=3.0)
    return EventData(torch.from_numpy(objects), torch.from_numpy(counts), torch.zeros(n, dtype=torch.long))


def test_kill_and_resume_of_a_masked_run_equals_the_uninterrupted_run(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact arithmetic (see test_training)
    try:
        train, val = _data(160, 0), _data(40, 1)
        task = Task("masked", CLASSES, regress=True)

        def run(folder, **kw):
            torch.manual_seed(0)
            model = create_model("transformer", task.n_outputs, mask_token=True, **SMALL["transformer"])
            groups = prepare(model, "scratch", task.n_outputs, lr=1e-3)
            cfg = TrainConfig(epochs=2, batch_size=32, checkpoint_every=2, seed=5, augment=("phi",), patience=10,
                              **FAST, **kw)
            return model, fit(model, task, train, val, groups, cfg, folder)

        reference, ref = run(tmp_path / "straight")
        with pytest.raises(SimulatedKill):
            run(tmp_path / "killed", stop_after_batches=7)  # epoch 2, batch 2 (5 batches per epoch)
        resumed, result = run(tmp_path / "killed")
        for k, v in reference.state_dict().items():
            assert torch.equal(v, resumed.state_dict()[k]), k
        assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in ref.history]
        # Another seed masks other objects: another result (the check can fail).
        torch.manual_seed(0)
        model = create_model("transformer", task.n_outputs, mask_token=True, **SMALL["transformer"])
        fit(model, task, train, val, prepare(model, "scratch", task.n_outputs, lr=1e-3),
            TrainConfig(epochs=2, batch_size=32, seed=6, augment=("phi",), patience=10, **FAST), tmp_path / "other")
        assert not torch.equal(model.state_dict()["head.weight"], reference.state_dict()["head.weight"])
    finally:
        torch.set_num_threads(before)


def _separable_store(root, n=1200, seed=0):
    """Every event: two light jets, one b-jet, one electron and MET, random kinematics. The hidden object's
    class follows from the classes left (chance: 40%, the light jets)."""
    rng = np.random.default_rng(seed)
    objects = np.zeros((n, 8, 7), np.float32)
    for k, (typ, btag, charge) in enumerate([(1, 0, 0), (1, 0, 0), (1, 1, 0), (2, 0, -1), (6, 0, 0)]):
        pt = rng.exponential(40.0, n) + 20
        eta = np.where(typ == 6, 0.0, rng.uniform(-2.4, 2.4, n))
        objects[:, k] = np.stack([pt, eta, rng.uniform(-np.pi, np.pi, n), pt * np.cosh(eta), np.full(n, btag),
                                  np.full(n, charge), np.full(n, typ)], axis=1)
    (root / "data").mkdir(parents=True)
    arrays = {"objects": objects, "n_objects": np.full(n, 5), "n_dropped": np.zeros(n, np.int32),
              "process": np.zeros(n, np.int32), "weight": np.ones(n, np.float32), "event_id": np.arange(n)}
    write_shard(root / "data" / shard_name(0), arrays, {"process_name": "data", "process_names": ["data"]})
    write_manifest(root)
    return root


@pytest.mark.parametrize("name", ["graphnet", "transformer"])
def test_a_separable_toy_is_learned_far_above_chance(tmp_path, name):
    store = _separable_store(tmp_path / "sep")
    summary = pretrain(store, tmp_path / "run", "masked", model=name, model_config=SMALL[name], lr=1e-3,
                       cfg=TrainConfig(epochs=10, batch_size=64, patience=10, **FAST))
    test = summary["test"]
    assert test["chance"] == pytest.approx(0.4, abs=0.1)
    assert test["accuracy"] > 0.9, test


def test_transfer_copies_the_backbone_and_replaces_the_head(tmp_path):
    pre_store = toy_store(tmp_path / "pre", n_per_class=150)
    down = toy_store(tmp_path / "down", n_per_class=150, seed=100)
    pretrain(pre_store, tmp_path / "masked", "masked", model="transformer", model_config=SMALL["transformer"],
             lr=1e-3, regress=True, cfg=TrainConfig(epochs=1, batch_size=64, **FAST))
    parent = load_model(tmp_path / "masked")
    assert parent.metadata["task"] == "masked" and parent.metadata["task_options"]["regress"]
    assert parent.n_outputs == len(parent.metadata["names"]) + 5 and parent.mask_token is not None
    for strategy in ("frozen", "finetune"):
        finetune(down / "hard", down / "soft", tmp_path / strategy, strategy, init_from=tmp_path / "masked",
                 plan=BinarySplitPlan(train_size=60), lr=1e-3, cfg=TrainConfig(epochs=1, batch_size=32, **FAST))
        child = load_model(tmp_path / strategy)
        assert child.n_outputs == 1 and child.mask_token is None and "mask_token" not in child.config
        old, new = parent.state_dict(), child.state_dict()
        assert set(new) == set(old) - {"mask_token"}
        changed = [k for k in new if not k.startswith("head.") and not torch.equal(new[k], old[k])]
        if strategy == "frozen":
            assert changed == []  # embedding + backbone transferred as they were
        else:
            assert changed  # fine-tuned at the backbone rate
        assert new["embed.linears.0.weight"].shape == old["embed.linears.0.weight"].shape


def test_sgd_cosine_anneals_from_1e_2_to_1e_4_and_the_kek_transformer_has_11m_parameters(tmp_path):
    train, val = _data(64, 0), _data(32, 1)
    task = Task("masked", CLASSES)
    model = create_model("graphnet", task.n_outputs, mask_token=True, **SMALL["graphnet"])
    cfg = TrainConfig(epochs=4, batch_size=32, optimizer="sgd-cosine", patience=10, **FAST)
    result = fit(model, task, train, val, prepare(model, "scratch", task.n_outputs, lr=1e-2), cfg, tmp_path)
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] == pytest.approx(1e-2) and lrs[1] < lrs[0] and lrs[-1] > 1e-4
    last = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 3 / 4))
    assert lrs[-1] == pytest.approx(last)
    kek = create_model("transformer-kek", len(CLASSES))
    assert kek.name == "transformer" and 10.5e6 < count_parameters(kek) < 11.5e6
    assert count_parameters(create_model("transformer", len(CLASSES))) < 1e6  # the small default stays


def cli(capsys, *args) -> str:
    """Run ``hepfm ARGS`` in this process (the subprocess start-up costs more than these toy runs); its stdout."""
    from hepfm.cli import app

    app(args=[str(a) for a in args], prog_name="hepfm", standalone_mode=False)
    return capsys.readouterr().out


def test_masked_pretraining_and_transfer_from_the_command_line(tmp_path, capsys):
    pre = toy_store(tmp_path / "pre", n_per_class=100)
    down = toy_store(tmp_path / "down", n_per_class=120, seed=100)
    stdout = cli(capsys, "pretrain", "--data", pre, "--out", tmp_path / "m", "--task", "masked", "--model",
                 "transformer", "--model-option", "dim=32", "--model-option", "layers=1", "--epochs", "1",
                 "--batch-size", "64", "--augment", "phi", "--no-progress")
    assert "accuracy_met" in stdout and "chance" in stdout
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["task"] == "masked" and config["names"] == CLASSES
    cli(capsys, "finetune", "--signal", down / "hard", "--background", down / "soft", "--from", tmp_path / "m",
        "--train-size", "40", "--epochs", "1", "--optimizer", "sgd-cosine", "--out", tmp_path / "ft", "--no-progress")
    ft = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert ft["training"]["config"]["batch_size"] == 512 and ft["lr"] == 1e-2
    with pytest.raises(HepfmError, match="needs the masked task"):
        pretrain(pre, tmp_path / "bad", "multiclass", regress=True)
    assert not (tmp_path / "bad").exists() and set(OBJECT_CLASSES) >= set(CLASSES)


def test_scaling_study_at_toy_size_shares_the_baseline_and_tabulates_gains(tmp_path):
    import yaml

    from hepfm.study.config import parse_config
    from hepfm.study.scaling import run_scaling

    pre = toy_store(tmp_path / "pre", n_per_class=150, seed=1)
    down = toy_store(tmp_path / "down", n_per_class=150, seed=2)
    raw = {"tasks": {"toy": {"signal": str(down / "hard"), "background": str(down / "soft")}},
           "sizes": [30], "seeds": 2, "test_size": 40, "model": "transformer",
           "model_options": {"dim": 32, "layers": 1},
           "strategies": ["scratch", "finetune_masked"],
           "pretrain": {"epochs": 1, "batch_size": 64, "lr": 1e-3, "masked": {"augment": ["phi"]}},
           "finetune": {"epochs": 1, "batch_size": 32, "lr": 1e-3}}
    rows = run_scaling(raw, tmp_path / "s", [100, 200], pretrain_data=pre, progress=False,
                       reports=False)
    assert {(r["pretrain_events"], r["strategy"], r["metric"]) for r in rows} == {
        (n, "finetune_masked", m) for n in (100, 200) for m in ("accuracy", "auc")}
    assert len({r["baseline"] for r in rows if r["metric"] == "auc"}) == 1  # one scratch baseline for all sizes
    assert (tmp_path / "s" / "pretrain-200" / "cells" / "toy" / "30" / "scratch").is_symlink()
    for n, per_process in ((100, 50), (200, 100)):
        meta = load_model(tmp_path / "s" / f"pretrain-{n}" / "pretrained" / "masked").metadata
        assert meta["max_events"] == per_process and meta["training"]["config"]["augment"] == ["phi"]
    assert (tmp_path / "s" / "scaling.md").exists() and (tmp_path / "s" / "scaling_auc_toy_30.png").exists()
    # The shipped configuration is valid once given a pretraining store.
    from pathlib import Path

    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "scaling-masked.yaml").read_text())
    shipped["pretrain"]["data"] = str(pre)
    cfg = parse_config(shipped)
    assert cfg.pretraining_tasks == ["multiclass", "masked"] and cfg.sizes == [1000]
