"""pretrain / finetune / evaluate from the command line: a full small workflow, torchrun DDP against a
single process, and one-line errors (exit code 2) that leave no model behind."""

from __future__ import annotations

import sys

import torch
from cli_runner import hepfm
from safetensors.torch import load_file

FAST = ["--batch-size", "64", "--no-progress"]


TOY_STORE = {"n_per_class": 256}


def test_pretrain_finetune_evaluate(store, downstream, tmp_path):
    r = hepfm("pretrain", "--data", store, "--out", tmp_path / "pre", "--epochs", 2, "--lr", "1e-3",
              "--model-option", "share_blocks=true", *FAST)
    assert r.returncode == 0, r.stderr
    assert "held-out test: loss" in r.stdout and (tmp_path / "pre" / "model.safetensors").exists()
    assert not (tmp_path / "pre" / "checkpoint.pt").exists()
    r = hepfm("finetune", "--signal", downstream / "hard", "--background", downstream / "soft", "--from",
              tmp_path / "pre", "--train-size", 100, "--epochs", 2, "--lr", "1e-3", "--out", tmp_path / "ft", *FAST)
    assert r.returncode == 0, r.stderr
    r = hepfm("evaluate", tmp_path / "ft", "--signal", downstream / "hard", "--background", downstream / "soft",
              "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    assert "ROC AUC" in r.stdout and "not the stores" not in r.stdout
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000


def test_torchrun_ddp_equals_single_process(store, tmp_path):
    # SGD: Adam divides by the gradient's running RMS, which turns float-rounding noise in near-zero
    # gradients into full-size steps; SGD keeps the comparison at the level of that noise. Augmentation
    # on: each event must get the same transformation whichever process holds it.
    common = ["pretrain", "--data", store, "--epochs", 2, "--lr", "1e-2", "--optimizer", "sgd", "--seed", 3,
              "--batch-size", 128, "--model-option", "share_blocks=true", "--no-progress",
              "--augment", "phi", "--augment", "eta_flip", "--augment", "boost"]
    single = hepfm(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    ddp = hepfm(*common, "--out", tmp_path / "ddp", launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr + ddp.stdout
    a = load_file(str(tmp_path / "single" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert a.keys() == b.keys()
    # Rounding noise only: the 2-rank sum adds the same terms in another order (measured up to 2.6e-6 on weights
    # of ~0.1 with mean aggregation and residual blocks); a wrong normalisation or slicing differs by >1e-3.
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    assert '"world_size": 2' in (tmp_path / "ddp" / "config.json").read_text()


def test_bad_inputs_give_one_line_errors_and_no_model(store, tmp_path):
    out = tmp_path / "x"
    cases = [
        (["finetune", "--signal", store / "hard", "--background", store / "soft", "--train-size", 100000,
          "--strategy", "scratch", "--out", out], "are left"),
        (["finetune", "--signal", store / "hard", "--background", store / "soft", "--from", tmp_path / "nothing",
          "--out", out], "no such model folder"),
        (["finetune", "--signal", store / "nope", "--background", store / "soft", "--strategy", "scratch",
          "--out", out], "no such event store"),
        (["pretrain", "--data", store, "--task", "regression", "--out", out], "unknown pretraining task"),
        (["pretrain", "--data", store, "--optimizer", "lion", "--out", out], "unknown optimizer"),
        (["pretrain", "--data", store, "--model", "resnet", "--out", out], "unknown model"),
        (["pretrain", "--data", store, "--task", "multilabel", "--augment", "phi", "--out", out],
         "augmentation phi with the multilabel task"),
        (["finetune", "--signal", store, "--background", store / "soft", "--strategy", "scratch", "--out", out],
         "share the process(es) soft"),
        (["finetune", "--signal", store / "hard", "--background", store / "soft", "--strategy", "warm",
          "--out", out], "unknown strategy"),
    ]
    for args, message in cases:
        r = hepfm(*args, *FAST)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not out.exists()


def test_wrong_schema_store_is_refused(store, tmp_path):
    import shutil

    import h5py

    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    for shard in bad.glob("*/shard-*.h5"):
        with h5py.File(shard, "a") as f:
            f.attrs["features"] = '["pt", "eta", "phi"]'
    from hepfm.io.store import write_manifest

    write_manifest(bad)  # a store made so, not a damaged one: its manifest matches its shards
    r = hepfm("pretrain", "--data", bad, "--out", tmp_path / "o", *FAST)
    assert r.returncode == 2 and "stored features" in r.stderr, r.stderr


def test_models_lists_both_graphnet_parameter_counts():
    r = hepfm("models")
    assert r.returncode == 0, r.stderr
    assert "372,556" in r.stdout and "135,628" in r.stdout and "transformer" in r.stdout
