"""Hostile or careless input to training runs (pretrain, finetune, evaluate): one line, exit 2, nothing left.

Each case failed on the code before it: a planted checkpoint ran code, a full disk during a checkpoint gave
torch's "unexpected pos" and left files, interrupts and OSErrors left partial outputs, two writers shared a
run folder, nonsense settings trained garbage, a streamed run resumed with other dropout masks, and
``evaluate``'s verdict depended on the current directory.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os

import pytest
import torch
from hostile import refused, snapshot

from hepfm.errors import HepfmError
from hepfm.io import atomic
from hepfm.io.locking import exclusive_lock
from hepfm.models import create_model
from hepfm.testing import toy_store
from hepfm.train import checkpoint, lifecycle, workflows
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import FitResult, SimulatedKill, TrainConfig, check_learning_rate, fit

FAST = ["--batch-size", "64", "--no-progress", "--epochs", "1", "--model-option", "share_blocks=true"]
CFG = dict(epochs=1, batch_size=64, progress=False, tensorboard=False)


TOY_STORE = {"n_per_class": 120}


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pretrain(store, out, **kw):
    return workflows.pretrain(store, out, model_config={"share_blocks": True}, cfg=TrainConfig(**CFG), lr=1e-3,
                              device="cpu", **kw)


# ---- command line: one line, exit 2, watched folders unchanged ----------------------------------------------

def test_planted_checkpoint_is_not_run(store, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "marker"
    torch.save({"state": _Payload(marker)}, out / "checkpoint.pt")
    refused(["pretrain", "--data", store, "--out", out, *FAST], "checkpoint.pt", "not a hepfm checkpoint",
            watch=[out])
    assert not marker.exists()


def test_second_writer_into_a_run_folder_is_refused(store, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with exclusive_lock(out, "run folder"):
        refused(["pretrain", "--data", store, "--out", out, *FAST], str(out), "being written by process",
                f"process {os.getpid()}", watch=[out])


@pytest.mark.parametrize("case, args, fragment", [
    ("lr-nan", ["--lr", "nan"], "lr (--lr) must be a finite number in (0, 10]"),
    ("device-tpu", ["--device", "tpu"], "device (--device) must be auto, cpu"),
])
def test_nonsense_settings_on_the_command_line(store, tmp_path, case, args, fragment):
    refused(["pretrain", "--data", store, "--out", tmp_path / "run", *FAST, *args], fragment, watch=[tmp_path])
    assert not (tmp_path / "run").exists()


# ---- library: the same checks, in-process ------------------------------------------------------------------

@pytest.mark.parametrize("case, kw, fragment", [
    ("patience-0", dict(patience=0), "patience"),
    ("checkpoint-every-negative", dict(checkpoint_every=-3), "checkpoint_every"),
    ("epochs-0", dict(epochs=0), "epochs"),
    ("lr-decay-nan", dict(lr_decay=math.nan), "lr_decay"),
    ("seed-negative", dict(seed=-1), "seed"),
])
def test_bad_train_config_is_refused(case, kw, fragment):
    with pytest.raises(HepfmError, match=fragment):
        TrainConfig(**kw)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e30, -1.0, 0.0])
def test_bad_learning_rates_are_refused(value):
    with pytest.raises(HepfmError, match="must be a finite number"):
        check_learning_rate(value)
    with pytest.raises(HepfmError, match="lr"):
        prepare(create_model("graphnet", 2, share_blocks=True), "scratch", 2, lr=value)


@pytest.mark.parametrize("case, kw, fragment", [
    ("max-events-0", dict(max_events=0), "max_events"),
    ("max-events-negative", dict(max_events=-5), "max_events"),
    ("device-tpu", dict(device="tpu"), "device"),
    ("backbone-lr-negative", dict(backbone_lr=-1.0), "backbone_lr"),
    ("n-blocks-negative", dict(model_config={"n_blocks": -1}), "n_blocks"),
])
def test_bad_run_options_leave_nothing(store, tmp_path, case, kw, fragment):
    if "backbone_lr" in kw:
        call = lambda: workflows.finetune(store / "hard", store / "soft", tmp_path / "run", "scratch",  # noqa: E731
                                          cfg=TrainConfig(**CFG), **kw)
    else:
        call = lambda: workflows.pretrain(store, tmp_path / "run", cfg=TrainConfig(**CFG), **kw)  # noqa: E731
    with pytest.raises(HepfmError, match=fragment):
        call()
    assert not (tmp_path / "run").exists()


def test_non_finite_model_is_not_saved_and_an_unimproved_one_is_flagged(tmp_path):
    model = create_model("graphnet", 2, share_blocks=True)
    worse = FitResult(history=[], best_epoch=1, best_val_loss=0.70, train_time_s=0.0, stopped_early=False,
                      initial_val_loss=0.69)
    with pytest.warns(workflows.NotImprovedWarning, match="never improved on the untrained model"):
        workflows._check_trained(model, worse, tmp_path)
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    better = FitResult(history=[], best_epoch=1, best_val_loss=0.5, train_time_s=0.0, stopped_early=False,
                       initial_val_loss=0.69)
    with pytest.raises(HepfmError, match="non-finite weights"):
        workflows._check_trained(model, better, tmp_path)


def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing(store, tmp_path, monkeypatch):
    def full(path, data):
        def write(tmp):
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic.atomic_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    with pytest.raises(HepfmError, match=r"no space left on the device holding .*checkpoint\.pt$"):
        _pretrain(store, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no history.csv, stream.json, tensorboard/ nor temporary files


def test_stale_checkpoint_temporaries_are_removed(store, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt.abc123.tmp").write_bytes(b"x" * 100)
    _pretrain(store, out)
    assert not list(out.glob("*.tmp")) and (out / "model.safetensors").exists()


@pytest.mark.parametrize("case, error", [
    ("interrupt", KeyboardInterrupt()),
    ("os-error", OSError(errno.EIO, "Input/output error")),
    ("bug", RuntimeError("boom")),
])
def test_any_failure_removes_partial_outputs(store, tmp_path, monkeypatch, case, error):
    def failing_fit(*args, **kwargs):
        (args[6] / "history.csv").write_text("epoch\n1\n")  # fit(model, task, train, val, groups, cfg, run_dir)
        raise error

    monkeypatch.setattr(lifecycle, "fit", failing_fit)  # the one training call under every workflow
    with pytest.raises(type(error)):
        _pretrain(store, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(type(error)):
        _pretrain(store, existing)
    assert snapshot(existing) == {str(existing / "notes.txt"): 4}


def test_read_only_output_is_one_line_and_leaves_nothing(store, tmp_path, monkeypatch):
    # Tests run as root, where chmod does not stop writes: the writer fails as on a read-only mount.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(HepfmError, match="is on a read-only file system"):
        _pretrain(store, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_interrupted_run_keeps_its_checkpoint_only(store, tmp_path):
    cfg = TrainConfig(**CFG, checkpoint_every=1, stop_after_batches=2)  # after a mid-epoch checkpoint
    with pytest.raises(SimulatedKill):
        workflows.pretrain(store, tmp_path / "run", model_config={"share_blocks": True}, cfg=cfg, lr=1e-3,
                           device="cpu")
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == \
        ["checkpoint.pt", "stream.json"]


# ---- streamed runs: checkpoints change nothing -------------------------------------------------------------

def test_stream_checkpoints_and_resume_change_no_weight_byte(tmp_path, one_thread):
    from hepfm.data import streaming

    small = toy_store(tmp_path / "store", n_per_class=120, shards=2)
    train, held, names = streaming.stream_pretraining_split(small, "multiclass", buffer_size=100, chunk_size=40)
    task = Task("multiclass", names)

    def run(folder, **kw):
        torch.manual_seed(0)
        model = create_model("transformer", 2, dim=16, heads=2, layers=1, dropout=0.2)  # dropout: global RNG
        groups = prepare(model, "scratch", 2, lr=1e-3)
        cfg = TrainConfig(**{**CFG, "epochs": 2}, seed=5, patience=10, **kw)
        fit(model, task, train, held["val"], groups, cfg, folder)
        return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()

    plain = run(tmp_path / "plain")
    assert run(tmp_path / "every2", checkpoint_every=2) == plain
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", checkpoint_every=2, stop_after_batches=len(train) // 64 + 3)
    assert checkpoint.load_checkpoint(tmp_path / "killed")["state"]["batch"] == 2
    assert run(tmp_path / "killed", checkpoint_every=2) == plain


# ---- evaluate: the verdict does not depend on the current directory ----------------------------------------

def test_evaluate_held_out_verdict_does_not_depend_on_cwd(tmp_path, monkeypatch):
    toy_store(tmp_path / "data", n_per_class=120)
    monkeypatch.chdir(tmp_path)
    workflows.finetune("data/hard", "data/soft", "run", "scratch", model_config={"share_blocks": True},
                       cfg=TrainConfig(**CFG), lr=1e-3, device="cpu")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = workflows.evaluate_run(tmp_path / "run", tmp_path / "data" / "hard", tmp_path / "data" / "soft",
                                 device="cpu")
    assert res["held_out"] is True
