"""Damaged stores and data identity: truncated or rewritten shards and non-finite events are refused
naming the file (and event) with no run folder left behind; one hash split for in-memory and streamed
pretraining; pretraining events never reach a fine-tune validation/test set unless explicitly allowed;
disjoint training subsets per seed."""

from __future__ import annotations

import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch
from cli_runner import hepfm, one_line_error

import hepfm as hepfm_pkg
from hepfm.data.datasets import BinarySplitPlan, binary_split, pretraining_split
from hepfm.data.streaming import stream_pretraining_split
from hepfm.errors import HepfmError
from hepfm.io.store import write_manifest
from hepfm.testing import toy_store
from hepfm.train.trainer import TrainConfig
from hepfm.train.workflows import OverlapWarning, evaluate_run, finetune, pretrain

FAST = dict(batch_size=64, progress=False, tensorboard=False)


TOY_STORE = {"n_per_class": 200, "shards": 2}


def _copy(store, dest):
    shutil.copytree(store, dest)
    return dest


def _keys(x: torch.Tensor) -> set:
    return {tuple(r) for r in x[:, 0, :3].tolist()}


def test_truncated_shard_is_named_and_leaves_no_run_folder(store, tmp_path):
    bad = _copy(store, tmp_path / "bad")
    shard = bad / "hard" / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:-5000])
    for stream in (False, True):
        with pytest.raises(HepfmError, match=rf"{shard}: damaged shard \(size .*regenerate|{shard}.*rerun"):
            pretrain(bad, tmp_path / f"pre{stream}", cfg=TrainConfig(epochs=1, **FAST), stream=stream)
        assert not (tmp_path / f"pre{stream}").exists()
    with pytest.raises(HepfmError, match=str(shard)):
        finetune(bad / "hard", bad / "soft", tmp_path / "ft", "scratch", cfg=TrainConfig(epochs=1, **FAST))
    assert not (tmp_path / "ft").exists()
    finetune(store / "hard", store / "soft", tmp_path / "model", "scratch", cfg=TrainConfig(epochs=1, **FAST),
             model_config={"share_blocks": True}, plan=BinarySplitPlan(train_size=50))
    with pytest.raises(HepfmError, match=str(shard)):
        evaluate_run(tmp_path / "model", bad / "hard", bad / "soft")
    r = hepfm("pretrain", "--data", bad, "--out", tmp_path / "cli", "--no-progress")
    one_line_error(r, str(shard), "damaged shard")
    assert not (tmp_path / "cli").exists()


def test_rewritten_shard_of_the_same_size_fails_its_checksum(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = _copy(store, tmp_path / "bad")
    before = sorted(p.name for p in bad.rglob("*"))
    pretraining_split(bad, "multiclass")  # verified once: cached in the user's cache folder, not in the store
    assert sorted(p.name for p in bad.rglob("*")) == before
    assert list((tmp_path / "cache" / "hepfm" / "verified").glob("*.json"))
    shard = bad / "soft" / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))  # same size, new mtime: the cached verification no longer applies
    with pytest.raises(HepfmError, match=rf"{shard}: damaged shard \(its SHA-256"):
        pretraining_split(bad, "multiclass")


def test_non_finite_event_is_named_and_leaves_no_output(store, tmp_path):
    bad = _copy(store, tmp_path / "bad")
    shard = bad / "soft" / "shard-00001.h5"
    with h5py.File(shard, "a") as f:
        x = f["objects"][...]
        x[17, 1, 0] = np.nan
        f["objects"][...] = x
    write_manifest(bad)  # a store written with a NaN: its checksums are right
    for stream in (False, True):
        out = tmp_path / f"pre{stream}"
        with pytest.raises(HepfmError, match=rf"{shard}: event 17 \(row 17 of the shard\) has non-finite objects"):
            pretrain(bad, out, cfg=TrainConfig(epochs=1, **FAST), stream=stream)
        assert not out.exists()
    # A folder that existed keeps what it held and gains nothing.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(HepfmError, match="event 17"):
        pretrain(bad, kept, cfg=TrainConfig(epochs=1, **FAST), stream=True)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    with pytest.raises(HepfmError, match="event 17"):
        finetune(bad / "hard", bad / "soft", tmp_path / "ft", "scratch", cfg=TrainConfig(epochs=1, **FAST))
    assert not (tmp_path / "ft").exists()
    r = hepfm("pretrain", "--data", bad, "--out", tmp_path / "cli", "--no-progress")
    one_line_error(r, str(shard), "event 17")
    assert not (tmp_path / "cli").exists()


def test_one_hash_split_for_memory_stream_and_max_events(store):
    full, _ = pretraining_split(store, "multiclass", split_seed=2)
    capped, _ = pretraining_split(store, "multiclass", split_seed=2, max_events=120)
    train, held, _ = stream_pretraining_split(store, "multiclass", split_seed=2, buffer_size=50, chunk_size=30)
    streamed_train = {k for _, x, _, _ in train.epoch_batches(0, 0, 64) for k in _keys(x)}
    assert streamed_train == _keys(full["train"].x)
    assert _keys(held["test"].x) == _keys(full["test"].x) and _keys(held["val"].x) == _keys(full["val"].x)
    for part in ("train", "val", "test"):  # capping the events keeps every event's split
        assert _keys(capped[part].x) <= _keys(full[part].x)
    assert len(capped["test"]) < len(full["test"])


def test_pretraining_events_never_reach_a_finetune_test_set(store, pretrained, tmp_path):
    plan = BinarySplitPlan(train_size=50)
    cfg = TrainConfig(epochs=1, **FAST)
    with pytest.raises(HepfmError, match="test events were in the training or validation data of the pretrained"):
        finetune(store / "hard", store / "soft", tmp_path / "same", init_from=pretrained, plan=plan, cfg=cfg)
    assert not (tmp_path / "same").exists()
    # Another store generated with the same seed holds the same events: the same leak, refused too.
    twin = toy_store(tmp_path / "twin", n_per_class=200, shards=2)
    with pytest.raises(HepfmError, match="allow the overlap explicitly"):
        finetune(twin / "hard", twin / "soft", tmp_path / "twin_run", init_from=pretrained, plan=plan, cfg=cfg)
    with pytest.warns(OverlapWarning, match="NOT HELD OUT"):
        finetune(twin / "hard", twin / "soft", tmp_path / "marked", init_from=pretrained, plan=plan, cfg=cfg,
                 allow_overlap=True)
    meta = hepfm_pkg.load(tmp_path / "marked").metadata
    assert meta["overlap"] is True and meta["pretraining_overlap"]["test"] > 0
    # Another seed: no overlap; evaluating that model on the pretraining store is refused.
    other = toy_store(tmp_path / "other", n_per_class=200, seed=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        finetune(other / "hard", other / "soft", tmp_path / "clean", init_from=pretrained, plan=plan, cfg=cfg)
    meta = json.loads((tmp_path / "clean" / "config.json").read_text())
    assert meta["overlap"] is False and meta["pretraining_data"] and "lr" in meta
    assert evaluate_run(tmp_path / "clean", other / "hard", other / "soft")["held_out"]
    with pytest.raises(HepfmError, match="test events were in the training"):
        evaluate_run(tmp_path / "clean", store / "hard", store / "soft")
    with pytest.warns(OverlapWarning):
        res = evaluate_run(tmp_path / "clean", store / "hard", store / "soft", allow_overlap=True)
    assert res["overlap"] and not res["held_out"]
    r = hepfm("evaluate", tmp_path / "clean", "--signal", store / "hard", "--background", store / "soft")
    one_line_error(r, "--allow-overlap")


def test_disjoint_training_subsets_per_seed(store):
    def train(seed, size=30):
        return _keys(binary_split(store / "hard", store / "soft",
                                  BinarySplitPlan(train_size=size, test_size=40, seed=seed, block=seed))["train"].x)

    a, b, c = train(0), train(1), train(2)
    assert len(a) == len(b) == 60 and not (a & b) and not (a & c) and not (b & c)
    assert train(1) == b  # a seed's subset is fixed
    with pytest.raises(HepfmError, match=r"block 5 of 30 training \+ 8 validation events per class needs"):
        train(5)
