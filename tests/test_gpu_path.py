"""Issue 16, CPU side: bucketed shapes for compiled GraphNet, read-ahead of streamed stores, warm-up and
linear learning-rate scaling."""

from __future__ import annotations

import re
import threading

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hepfm.data.datasets import EventData
from hepfm.data.prefetch import ReadAhead
from hepfm.data.streaming import StreamingEvents
from hepfm.errors import HepfmError
from hepfm.models import GraphNet, create_model
from hepfm.models.graphnet import PAPER_OPTIONS, PackedGraph, bucket_size
from hepfm.testing import toy_events
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import SimulatedKill, TrainConfig, fit, pad_width, warmup_factor

FAST = dict(batch_size=64, progress=False, tensorboard=False)


def _toy_data(n, seed):
    objects, counts = toy_events(n, seed, mean_jets=4.0)
    return EventData(torch.from_numpy(objects), torch.from_numpy(counts), torch.from_numpy((counts > 6).astype("f4")))




def test_bucket_sizes_round_up_by_at_most_an_eighth():
    for n in [0, 1, 16, 17, 100, 1000, 12345, 10**6]:
        b = bucket_size(n)
        assert b >= n and (b <= 16 or b <= n * 1.125 + 1)
    assert len({bucket_size(n) for n in range(1025, 2049)}) == 8  # 8 buckets per doubling


@pytest.mark.parametrize("options", [{}, PAPER_OPTIONS], ids=["default", "paper"])
def test_bucketed_graphnet_gives_the_same_outputs_and_gradients(options, one_thread):
    data = _toy_data(300, 3)
    x, mask, _ = data.batch(torch.arange(300))
    hidden = torch.zeros_like(mask)
    hidden[torch.arange(300), 0] = True  # the masked task's hidden objects (first of each event)
    torch.manual_seed(0)
    net = GraphNet(n_outputs=3, mask_token=True, **options)
    results = []
    for bucket in (False, True):
        net.bucket_shapes = bucket
        net.zero_grad()
        xp, mp, hp = pad_width(x, mask, hidden) if bucket else (x, mask, hidden)
        out = net(xp, mp, hp)
        (out * torch.linspace(-1, 1, 3)).square().sum().backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}))
    (out0, grads0), (out1, grads1) = results
    assert out1.shape == out0.shape
    torch.testing.assert_close(out1, out0, atol=1e-6, rtol=0)
    for k, g in grads0.items():
        torch.testing.assert_close(grads1[k], g, atol=1e-6, rtol=1e-6, msg=k)
    # ... and it was padded: buckets, not the real sizes.
    plain, padded = PackedGraph(mask), PackedGraph(mask, bucket=True)
    assert len(padded.node_event) == bucket_size(len(plain.node_event) + 2) > len(plain.node_event)
    assert len(padded.receiver) == bucket_size(len(plain.receiver)) > len(plain.receiver)


def test_an_epoch_has_a_handful_of_bucketed_shapes():
    data = _toy_data(4096, 5)
    plain, bucketed, n_batches = set(), set(), 0
    for _, x, mask, _ in data.epoch_batches(0, 1, 256):
        x, mask, _ = pad_width(x, mask)
        g, p = PackedGraph(mask), PackedGraph(mask, bucket=True)
        plain.add((len(g.node_event), len(g.receiver)))
        bucketed.add((x.shape[:2], len(p.node_event), len(p.receiver)))
        n_batches += 1
    assert n_batches == 16 and len(plain) == 16  # without buckets: a new shape every batch
    assert len(bucketed) <= 5, bucketed


def test_compiled_graphnet_recompiles_per_bucket_not_per_batch():
    """torch.compile(dynamic=False) over 12 batches: dynamo compiles each distinct bucketed shape once."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    data = _toy_data(1536, 7)
    torch.manual_seed(0)
    net = GraphNet(n_outputs=2, share_blocks=True)
    net.bucket_shapes = True
    compiled = torch.compile(net, backend=counter, dynamic=False)
    shapes = set()
    for _, x, mask, _ in data.epoch_batches(0, 2, 128):
        x, mask, _ = pad_width(x, mask)
        p = PackedGraph(mask, bucket=True)
        shapes.add((x.shape[:2], len(p.node_event), len(p.receiver)))
        compiled(x, mask).sum().backward()
    torch._dynamo.reset()
    # One frame up to the graph break (the input shape is fixed by pad_width) + one per bucketed shape.
    assert counter.frame_count <= 1 + len(shapes) < 12, (counter.frame_count, shapes)


# ----------------------------------------------------------------------------------------- read-ahead
TOY_STORE = {"n_per_class": 300, "shards": 2}  # the read-ahead tests' ``store`` (conftest.py)


def _threads():
    return [t for t in threading.enumerate() if t.name == "hepfm-read-ahead"]


def test_read_ahead_gives_the_synchronous_batches(store):
    src = StreamingEvents(store, buffer_size=200, chunk_size=50)
    sync = list(src.epoch_batches(1, 3, 64))
    ahead = list(ReadAhead(src.epoch_batches(1, 3, 64), depth=2))
    assert len(ahead) == len(sync) > 3
    for a, s in zip(ahead, sync, strict=True):
        assert a[0] == s[0] and all(torch.equal(u, v) for u, v in zip(a[1:], s[1:], strict=True))
    assert not _threads()


def test_read_ahead_shuts_down_on_errors_interrupts_and_early_stops(store):
    src = StreamingEvents(store, buffer_size=200, chunk_size=50)

    def failing():
        yield from src.epoch_batches(0, 0, 64, start=0)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        for _ in ReadAhead(failing(), depth=1):
            pass
    assert not _threads()
    for exc in (KeyboardInterrupt, RuntimeError):
        ahead = ReadAhead(src.epoch_batches(0, 0, 64), depth=1)
        with pytest.raises(exc):
            try:
                for _ in ahead:
                    raise exc("stop")
            finally:
                ahead.close()
        assert not ahead.running and not _threads()
    ahead = ReadAhead(src.epoch_batches(0, 0, 64), depth=1)
    next(iter(ahead))
    ahead.close()  # stopped after one batch, the producer blocked on a full queue
    assert not ahead.running and not _threads()


def test_fit_on_a_stream_with_and_without_read_ahead_gives_the_same_weights(store, tmp_path, one_thread):
    def run(folder, **kw):
        torch.manual_seed(0)
        model = create_model("graphnet", 2, share_blocks=True)
        src = StreamingEvents(store, buffer_size=200, chunk_size=50)
        val = _toy_data(40, 1)
        val.y = (val.y > 0).long()
        cfg = TrainConfig(epochs=1, patience=5, **FAST, **kw)
        with pytest.raises(SimulatedKill) if "stop_after_batches" in kw else _nothing():
            fit(model, Task("multiclass", ["a", "b"]), src, val, prepare(model, "scratch", 2, lr=1e-3), cfg, folder)
        return model

    sync = run(tmp_path / "sync", read_ahead=0)
    ahead = run(tmp_path / "ahead", read_ahead=3)
    for k, v in sync.state_dict().items():
        assert torch.equal(v, ahead.state_dict()[k]), k
    run(tmp_path / "killed", read_ahead=2, stop_after_batches=2)  # stops mid-epoch: the thread is shut down
    assert not _threads()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- warm-up and LR scaling
def _fit(folder, model_seed=0, **kw):
    torch.manual_seed(model_seed)
    model = create_model("graphnet", 1, share_blocks=True)
    groups = prepare(model, "scratch", 1, lr=1e-3)
    cfg = TrainConfig(**{"epochs": 2, "checkpoint_every": 2, "seed": 5, "patience": 10, "lr_decay": 0.5,
                         **FAST, **kw})
    return model, fit(model, Task("binary", ["b", "s"]), _toy_data(200, 0), _toy_data(60, 1), groups, cfg, folder)


def test_warmup_ramps_each_step_and_linear_scaling_multiplies_the_rate(tmp_path):
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        _, result = _fit(tmp_path / "w", warmup_steps=6, lr_scaling="linear", lr_reference_batch=32)
    finally:
        handle.remove()
    base = 1e-3 * 64 / 32  # linear scaling: batch 64 against the reference 32
    # 4 batches per epoch; epoch 2's scheduled rate is halved (lr_decay 0.5); warm-up over steps 0..5.
    scheduled = [base] * 4 + [base / 2] * 4
    expected = [r * min(1.0, (s + 1) / 6) for s, r in enumerate(scheduled)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in result.history] == pytest.approx([base, base / 2])  # the schedule is unchanged
    assert warmup_factor(TrainConfig(), 0) == 1.0


def test_resume_with_warmup_equals_uninterrupted_and_a_changed_warmup_is_refused(tmp_path, one_thread):
    reference, ref = _fit(tmp_path / "straight", warmup_steps=5)
    with pytest.raises(SimulatedKill):
        _fit(tmp_path / "killed", warmup_steps=5, stop_after_batches=3)  # mid-epoch 1, during the warm-up
    with pytest.raises(HepfmError, match=re.escape("warmup_steps 5 -> 7")):
        _fit(tmp_path / "killed", warmup_steps=7)
    with pytest.raises(HepfmError, match=re.escape("warmup_steps 5 -> '(unset)'")):
        _fit(tmp_path / "killed")
    resumed, result = _fit(tmp_path / "killed", warmup_steps=5)
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in ref.history]
    # Without warm-up the weights differ: the test above can fail.
    plain, _ = _fit(tmp_path / "plain")
    assert any(not torch.equal(v, plain.state_dict()[k]) for k, v in reference.state_dict().items())


def test_bad_large_batch_settings_are_refused():
    with pytest.raises(HepfmError, match="learning-rate scaling"):
        TrainConfig(lr_scaling="sqrt")
    with pytest.raises(HepfmError, match="warm-up"):
        TrainConfig(warmup_steps=-1)
