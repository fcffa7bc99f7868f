"""Past one machine: generation and a study as tasks of a real Dask cluster (a ``distributed.LocalCluster`` of two
single-threaded worker processes) give the local run's bytes and results; a worker killed mid-shard has its task
rerun and leaves a store that verifies; an unreachable scheduler is a one-line error; torchrun through the c10d
rendezvous (the multi-node launch, on one machine) trains a streamed store as one process does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from cli_runner import SRC, hepfm, one_line_error
from safetensors.torch import load_file

from hepfm.errors import HepfmError
from hepfm.executors import LOCAL, Executor, read_cluster_file, session
from hepfm.io.store import EventStore
from hepfm.study.config import parse_config
from hepfm.study.layout import StudyLayout
from hepfm.study.run import run_study

TOY_STORE = {"n_per_class": 256}
SHARDS = 2
SHARD_EVENTS = 150  # long enough for a worker to be killed while it simulates


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes, each restarted by its nanny when killed."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


def _on(cluster) -> Executor:
    return Executor("dask", scheduler=cluster.scheduler_address)


def _generate(out: Path, executor: Executor = LOCAL):
    from hepfm.io.generate import catalog_source, generate

    return generate([catalog_source("ttbar")], out, SHARDS * SHARD_EVENTS, seed=11, shard_size=SHARD_EVENTS,
                    progress=False, executor=executor)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """The store generated on this machine: the reference for every cluster run."""
    out = tmp_path_factory.mktemp("local") / "events"
    _generate(out)
    return out


def _same_store(a: Path, b: Path) -> None:
    """Every shard byte for byte; the manifests equal but for the files' modification times."""
    shards = sorted(p.relative_to(a) for p in a.rglob("*.h5"))
    assert len(shards) == SHARDS and shards == sorted(p.relative_to(b) for p in b.rglob("*.h5"))
    for p in shards:
        assert (a / p).read_bytes() == (b / p).read_bytes(), p

    def manifest(root):
        m = json.loads((root / "manifest.json").read_text())
        for s in m["shards"]:
            s.pop("mtime_ns")
        return m

    assert manifest(a) == manifest(b)
    assert EventStore(b).verify() == [] and not list(b.rglob("*.tmp"))


@pytest.mark.pythia
def test_generation_on_a_dask_cluster_equals_the_local_run(cluster, local_store, tmp_path):
    report = _generate(tmp_path / "events", _on(cluster))
    assert len(report.written) == SHARDS and report.n_events == SHARDS * SHARD_EVENTS
    _same_store(local_store, tmp_path / "events")
    assert len(_generate(tmp_path / "events", _on(cluster)).skipped) == SHARDS  # a rerun resumes: nothing to do


@pytest.mark.pythia
def test_a_worker_killed_mid_shard_has_its_task_rerun(cluster, local_store, tmp_path):
    from distributed import Client

    killed = []
    with Client(cluster.scheduler_address, set_as_default=False) as watcher:

        def kill_the_first_busy_worker():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                busy = [w for w, keys in watcher.processing().items() if any("produce_shard" in str(k) for k in keys)]
                if busy:
                    time.sleep(0.5)  # into the shard: Pythia initialised, events being simulated
                    pid = watcher.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_the_first_busy_worker)
        killer.start()
        report = _generate(tmp_path / "events", _on(cluster))
        killer.join()
        assert killed, "no worker was seen running a shard"
        assert killed[0] not in watcher.run(os.getpid).values()  # that process is gone: its task ran again elsewhere
    assert len(report.written) == SHARDS
    _same_store(local_store, tmp_path / "events")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_one_line_error(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    fast = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    r = hepfm("generate", "ttbar", "-n", 10, "-o", tmp_path / "events", "--executor", "dask", "--scheduler", address,
              env=fast)
    one_line_error(r, "cannot reach the Dask scheduler", address)
    assert not (tmp_path / "events").exists()
    (tmp_path / "study.yaml").write_text("tasks: [wh_vs_zh]\nsizes: [100]\nstrategies: [scratch]\n")
    r = hepfm("study", tmp_path / "study.yaml", "-o", tmp_path / "study", "--executor", "dask", "--scheduler",
              address, env=fast)
    one_line_error(r, "cannot reach the Dask scheduler", address)
    r = hepfm("generate", "ttbar", "-n", 10, "-o", tmp_path / "events", "--scheduler", address)
    one_line_error(r, "--scheduler and --cluster need --executor dask")
    r = hepfm("generate", "ttbar", "-n", 10, "-o", tmp_path / "events", "--executor", "ray")
    one_line_error(r, "unknown executor 'ray'")


def test_cluster_files_are_checked(tmp_path):
    good = tmp_path / "slurm.yaml"
    good.write_text("kind: slurm\njobs: 20\noptions: {cores: 1, memory: 4GB, walltime: '04:00:00'}\n")
    assert read_cluster_file(good) == ("slurm", 20, {"cores": 1, "memory": "4GB", "walltime": "04:00:00"})
    for text, problem in [("kind: mesos\n", "kind must be one of"), ("kind: slurm\njobs: 0\n", "jobs must be"),
                          ("kind: slurm\nqueue: short\n", "unknown key(s) queue"), ("[1, 2]\n", "a mapping")]:
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(HepfmError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            read_cluster_file(tmp_path / "bad.yaml")
    with pytest.raises(HepfmError, match="not both"):
        Executor("dask", scheduler="tcp://x:1", cluster=str(good))


def test_a_cluster_file_of_kind_local_starts_its_workers(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text("kind: local\njobs: 1\n")
    with session(Executor("dask", cluster=str(path))) as client:
        assert len(client.scheduler_info()["workers"]) == 1


@pytest.mark.pythia
def test_the_local_path_never_imports_dask(tmp_path):
    code = ("import sys; import hepfm, hepfm.cli, hepfm.study.run; from hepfm.io.generate import catalog_source, "
            f"generate; generate([catalog_source('ttbar')], {str(tmp_path / 'e')!r}, 20, progress=False); "
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_jobqueue')]; "
            "assert not loaded, loaded")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                       "PYTHONPATH": SRC}, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def stores(toy_stores):
    return toy_stores(n_per_class=300, seed=1), toy_stores(n_per_class=300, seed=2)


def test_a_study_on_a_dask_cluster_equals_the_local_one(cluster, stores, tmp_path):
    """The tuning points and parts of the grid as Dask tasks: every cell's scores and model are the serial
    study's byte for byte (one PyTorch thread each, as in the parallel study's test)."""
    pre, down = stores
    cfg = parse_config({"tasks": {"toy": {"signal": str(down / "hard"), "background": str(down / "soft")}},
                        "sizes": [40], "seeds": 2, "test_size": 60, "strategies": ["scratch", "finetune_multiclass"],
                        "model_options": {"share_blocks": True},
                        "pretrain": {"data": str(pre), "epochs": 1, "batch_size": 128, "lr": 1e-3},
                        "finetune": {"epochs": 2, "batch_size": 32, "lr_grid": [1e-3, 3e-3]}, "cka": {"events": 60}})
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the pretraining here, and every task's runs there, in one thread
    try:
        serial = run_study(cfg, tmp_path / "serial", progress=False)
        on_dask = run_study(cfg, tmp_path / "dask", progress=False, threads=1, executor=_on(cluster))
    finally:
        torch.set_num_threads(before)
    assert serial.failures == [] and on_dask.failures == []

    def cells(root):
        out = {}
        for result in (root / "cells").rglob(StudyLayout.RESULT):
            r = json.loads(result.read_text())
            out[(r["strategy"], r["seed"])] = (r["accuracy"], r["auc"], r["lr"], r["epochs_run"], r["point"],
                                               (result.parent / StudyLayout.SCORES).read_bytes(),
                                               (root / r["run"] / "model.safetensors").read_bytes())
        return out

    assert len(cells(tmp_path / "serial")) == 4
    assert cells(tmp_path / "dask") == cells(tmp_path / "serial")


def test_torchrun_c10d_rendezvous_on_a_streamed_store_equals_one_process(store, tmp_path):
    """The multi-node launch (c10d rendezvous endpoint, --nnodes) with two Gloo processes on this machine; each
    rank reads the whole streamed store and trains on its slice of every batch."""
    common = ["pretrain", "--data", store, "--stream", "--epochs", 2, "--lr", "1e-2", "--optimizer", "sgd",
              "--seed", 3, "--batch-size", 128, "--model-option", "share_blocks=true", "--no-progress"]
    single = hepfm(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1:1", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{_free_port()}", "--rdzv-id", "hepfm-test",
                "-m"]
    ddp = hepfm(*common, "--out", tmp_path / "ddp", launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr + ddp.stdout
    a = load_file(str(tmp_path / "single" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # rounding noise only, as in the standalone DDP test
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    record = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert record["training"]["world_size"] == 2 and record["training"].get("streamed", True)
