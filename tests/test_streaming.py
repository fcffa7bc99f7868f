"""Streamed training data: hash splits cover the store, every train event once per epoch, (seed, epoch)
order with exact resume, rank slices, the memory bound, and kill-and-resume through the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hepfm
from hepfm.data import streaming
from hepfm.data.identity import TEST, TRAIN, VAL, assign_splits, shard_identity
from hepfm.data.streaming import StreamingEvents, held_out_splits
from hepfm.io.store import EventStore
from hepfm.models import create_model
from hepfm.testing import one_shard_per_process_store, toy_store
from hepfm.testing.streaming import classes_per_batch
from hepfm.train import loading
from hepfm.train.checkpoint import load_checkpoint
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import SimulatedKill, TrainConfig, fit
from hepfm.train.workflows import pretrain

SMALL = dict(buffer_size=100, chunk_size=50)  # several units per shard; the buffer fills and swaps


TOY_STORE = {"n_per_class": 500, "shards": 4}


def _keys(x: torch.Tensor) -> list[tuple]:
    return [tuple(r) for r in x[:, 0, :3].tolist()]  # (pT, eta, phi) of the first object identifies an event


def _expected(store, task="multiclass"):
    """Event key -> (split code, label) from the whole store, read directly."""
    s = EventStore(store)
    names = s.process_names
    out = {}
    for shard in s.shards:
        a = s.read_rows(shard, ("objects", "truth"))
        codes = assign_splits(0, shard_identity(s, shard), np.arange(shard["n_events"]))
        labels = a["truth"].tolist() if task == "multilabel" else [names.index(shard["process"])] * len(codes)
        out.update(zip(_keys(torch.from_numpy(a["objects"])), zip(codes.tolist(), labels, strict=True), strict=True))
    assert len(out) == len(s)  # keys are unique
    return out


def _run(src, epoch=0, seed=1, bs=64, **kw):
    return list(src.epoch_batches(epoch, seed, bs, **kw))


def test_splits_cover_the_store_and_each_train_event_comes_once(store):
    train, held, names = streaming.stream_pretraining_split(store, "multiclass", **SMALL)
    expected = _expected(store)
    assert names == EventStore(store).process_names
    for epoch in (0, 1):
        batches = _run(train, epoch)
        seen = [k for b in batches for k in _keys(b[1])]
        assert len(seen) == len(set(seen)) == len(train)
        assert {k for k, (c, _) in expected.items() if c == TRAIN} == set(seen)
        assert [b[0] for b in batches[:-1]] == [64] * (len(batches) - 1)
        for _, x, mask, y in batches:  # labels follow the events; x trimmed to the batch's largest count
            assert [expected[k][1] for k in _keys(x)] == y.tolist() and y.dtype == torch.int64
            assert x.shape[1] == int(mask.sum(1).max()) and torch.all(x[~mask] == 0)
    for code, part in ((VAL, held["val"]), (TEST, held["test"])):
        assert {k for k, (c, _) in expected.items() if c == code} == set(_keys(part.x))
        assert [expected[k][1] for k in _keys(part.x)] == part.y.tolist()
    assert len(train) + len(held["val"]) + len(held["test"]) == len(expected) == 1000
    assert 0.7 < len(train) / 1000 < 0.9


def test_order_is_a_function_of_seed_and_epoch_and_resume_is_exact(store):
    src = StreamingEvents(store, **SMALL)
    full = _run(src)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full, _run(src), strict=True))
    assert _keys(full[0][1]) != _keys(_run(src, epoch=1)[0][1])
    assert _keys(full[0][1]) != _keys(_run(src, seed=2)[0][1])
    for k in (1, 2, 5, len(full) - 1):  # before, at and well after the buffer has filled
        again = _run(src, start=k)
        assert len(again) == len(full) - k
        for a, b in zip(again, full[k:], strict=True):
            assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    # A buffer larger than the split shuffles everything at the end of the epoch; resume still exact.
    big = StreamingEvents(store, buffer_size=10_000, chunk_size=50)
    ref = _run(big)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(_run(big, start=3), ref[3:], strict=True))


def test_rank_slices_make_up_the_global_batch(store):
    src = StreamingEvents(store, **SMALL)
    whole, r0, r1 = _run(src, bs=50), _run(src, bs=50, rank=0, world=2), _run(src, bs=50, rank=1, world=2)
    for (g, x, _, y), (g0, x0, _, y0), (g1, x1, _, y1) in zip(whole, r0, r1, strict=True):
        assert g == g0 == g1 == len(x0) + len(x1)
        assert _keys(x)[0::2] == _keys(x0) and _keys(x)[1::2] == _keys(x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        assert torch.equal(x[0::2, :x0.shape[1]], x0) and torch.equal(x[1::2, :x1.shape[1]], x1)


def test_memory_stays_within_the_buffer_and_one_chunk(store):
    src = StreamingEvents(store, buffer_size=120, chunk_size=40)
    _run(src)
    _run(src, epoch=1, start=6)
    assert 0 < src.peak_buffered <= 120 and src.peak_held <= 120 + 40
    assert src.peak_buffered == 120  # the bound is reached, so the check is not vacuous


def test_multilabel_caps_and_sample(store):
    train, held, names = streaming.stream_pretraining_split(store, "multilabel", max_events=200, max_eval_events=5,
                                                            **SMALL)
    assert len(names) == 41
    expected = _expected(store, "multilabel")
    batch = _run(train)[0]
    assert batch[3].dtype == torch.float32 and batch[3].shape == (64, 41)
    assert batch[3].tolist() == [expected[k][1] for k in _keys(batch[1])]
    # max_events: the first 200 events of each process, split by the hash.
    store_ = EventStore(store)
    first = set()
    for p in store_.process_names:
        objects = np.concatenate([store_.read_rows(s, ("objects",))["objects"]
                                  for s in store_.shards if s["process"] == p])
        first |= set(_keys(torch.from_numpy(objects[:200])))
    seen = {k for b in _run(train) for k in _keys(b[1])}
    assert seen == {k for k in first if expected[k][0] == TRAIN}
    assert len(held["val"]) == len(held["test"]) == 10  # 5 per process each
    sample = train.sample(70, seed=3)
    assert len(sample) == 70 and set(_keys(sample.x)) <= seen
    with pytest.raises(hepfm.errors.HepfmError, match="unknown pretraining task"):
        StreamingEvents(store, "contrastive")


def test_fit_on_a_stream_kill_and_resume_gives_the_same_weights(tmp_path, one_thread):
    small = toy_store(tmp_path / "store", n_per_class=150, shards=2)
    train, held, names = streaming.stream_pretraining_split(small, "multiclass", buffer_size=100, chunk_size=40)
    task = Task("multiclass", names)
    assert held_out_splits(train)["val"].x.shape == held["val"].x.shape

    def run(folder, **kw):
        torch.manual_seed(0)
        model = create_model("graphnet", 2, share_blocks=True)
        groups = prepare(model, "scratch", 2, lr=1e-3)
        cfg = TrainConfig(epochs=2, batch_size=64, checkpoint_every=2, seed=5, patience=10, progress=False,
                          tensorboard=False, **kw)
        return model, fit(model, task, train, held["val"], groups, cfg, folder)

    reference, ref_result = run(tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", stop_after_batches=len(train) // 64 + 4)  # mid-epoch 2, after a save at batch 2
    assert load_checkpoint(tmp_path / "killed")["state"]["batch"] == 2
    resumed, result = run(tmp_path / "killed")
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in ref_result.history]


def test_pretrain_chooses_streaming_by_size_and_records_it(store, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=1, batch_size=128, progress=False, tensorboard=False)
    summary = pretrain(store, tmp_path / "auto", model_config={"share_blocks": True}, cfg=cfg, max_events=100)
    assert summary["stream"] is False
    monkeypatch.setattr(loading, "memory_budget", lambda device: 10_000)  # far less than the store's ~1 MB
    summary = pretrain(store, tmp_path / "small_ram", model_config={"share_blocks": True}, cfg=cfg, max_events=100)
    assert summary["stream"] is True and summary["n_train"] + summary["n_val"] + summary["n_test"] <= 200
    meta = hepfm.load(tmp_path / "small_ram").metadata
    assert meta["data_loading"]["stream"] is True and meta["data_loading"]["auto"] is True


def test_streamed_batches_mix_every_process(tmp_path):
    """A store written process by process (one shard each): every batch holds every class.

    Before the read units were interleaved by process, the same settings gave batches of 5 to 12 of the
    12 classes (mean 9.8) with one class making up 30% of a batch on average.
    """
    store = one_shard_per_process_store(tmp_path / "store", processes=12, events=2000)
    distinct, share = classes_per_batch(store, buffer_size=2000, chunk_size=655, batch_size=256)
    assert len(distinct) > 50 and distinct.min() == 12, distinct
    assert share.max() < 0.25, share.max()


def test_torchrun_processes_share_the_memory_budget(store, tmp_path, monkeypatch):
    need = streaming.in_memory_bytes(store, 100)[0]
    monkeypatch.setattr(loading, "memory_budget", lambda device: int(need * 1.5))  # one copy fits, two do not
    cfg = TrainConfig(epochs=1, batch_size=128, progress=False, tensorboard=False)
    one = pretrain(store, tmp_path / "one", model_config={"share_blocks": True}, cfg=cfg, max_events=100)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as torchrun --nproc-per-node 2 sets it for each process
    two = pretrain(store, tmp_path / "two", model_config={"share_blocks": True}, cfg=cfg, max_events=100)
    assert one["stream"] is False and two["stream"] is True
