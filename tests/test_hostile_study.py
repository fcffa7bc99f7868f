"""Hostile and careless input to studies, scaling, predict and detector configurations: one line naming the
file and the problem, exit code 2, nothing written (docs/safety.md)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hostile import refused, snapshot

from hepfm.errors import HepfmError
from hepfm.inference.predict import predict_file
from hepfm.io.locking import FolderLockedError
from hepfm.models.registry import create_model
from hepfm.models.saving import save_model
from hepfm.physics.detector import DetectorConfig
from hepfm.study.config import parse_config, read_yaml
from hepfm.study.scaling import run_scaling

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
BASE = {"tasks": ["hplus_vs_ttbar"], "sizes": [100], "strategies": ["scratch"], "seeds": 1, "test_size": 100,
        "generation": {"downstream_events": 1000}, "pretrain": {"lr": 1e-3}}


TOY_STORE = {"n_per_class": 100}


def test_yaml_bomb_is_refused_in_one_short_line(tmp_path):
    """yaml_bomb: nested aliases once expanded to a 522 MB error message (1.4 GB of memory)."""
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB + "sizes: *i\n")
    r = refused(["study", str(config), "--out", str(tmp_path / "o")], "bomb.yaml", "aliases", watch=[tmp_path])
    assert len(r.stderr) < 1000
    with pytest.raises(HepfmError, match="aliases"):
        read_yaml(config)


def test_oversized_and_deeply_nested_yaml(tmp_path):
    """yaml_huge, yaml_deep: a file larger than 1 MB, or nested past the parser's recursion, is one line."""
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * 1_100_000 + "\n")
    with pytest.raises(HepfmError, match=r"big\.yaml: larger than 1 MB"):
        read_yaml(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(HepfmError, match=r"deep\.yaml: (nested too deeply|not valid YAML)"):
        read_yaml(deep)


TYPE_CASES = {
    "seeds_abc": ({"seeds": "abc"}, "'seeds' must be an integer"),
    "seeds_huge": ({"seeds": 10**12}, "'seeds' must be an integer >= 1 and at most"),
    "epochs_x": ({"finetune": {"epochs": "x"}}, "'finetune.epochs' must be an integer"),
    "sizes_scalar": ({"sizes": 100}, "'sizes' must be a list"),
    "model_options_list": ({"model_options": [1, 2]}, "'model_options' must be a mapping"),
    "tasks_scalar": ({"tasks": 5}, "'tasks' must be a list"),
    "task_unhashable": ({"tasks": [{"a": 1}]}, "task name must be a string"),
    "generation_list": ({"generation": [1]}, "'generation' must be a mapping"),
    "workers_text": ({"generation": {"downstream_events": 1000, "workers": "two"}}, "'generation.workers'"),
    "generation_typo": ({"generation": {"downstream_event": 1000}}, "unknown key(s)"),
    "by_size_key": ({"finetune": {"by_size": {"abc": {"epochs": 1}}}}, "is not a training size"),
    "by_size_value": ({"finetune": {"by_size": {100: [1]}}}, "'finetune.by_size.100' must be a mapping"),
    "lr_text": ({"pretrain": {"lr": "fast"}}, "'pretrain.lr' must be a positive number"),
    "optimizer_list": ({"finetune": {"optimizer": ["adam"]}}, "'finetune.optimizer' must be one of"),
    "non_string_key": ({1: 2}, "has a key that is not a name"),
    "cka_events": ({"cka": {"events": "many"}}, "'cka.events'"),
    "strategy_list": ({"strategies": "scratch"}, "'strategies' must be a list"),
    "huge_value_bounded": ({"sizes": ["x" * 10_000]}, "..."),
    # a task name becomes cells/<task> and tuning/<task>: it must not climb out of the study folder
    "task_traversal": ({"tasks": {"../../../x": {"signal": "ttbar", "background": "qcd"}}}, "not a valid name"),
}


@pytest.mark.parametrize("case", TYPE_CASES)
def test_study_configuration_type_errors_are_one_line(case):
    extra, fragment = TYPE_CASES[case]
    raw = {**BASE, **extra}
    with pytest.raises(HepfmError) as info:
        parse_config(raw, "study.yaml")
    message = str(info.value)
    assert message.startswith("study.yaml: ") and fragment in message and "\n" not in message, message
    assert len(message) < 600, len(message)


def test_scaling_configuration_errors(tmp_path):
    """scaling_types: a scaling study's configuration is a mapping with a mapping 'pretrain', checked first."""
    for raw, fragment in (([1, 2], "must be a mapping"), ({**BASE, "pretrain": [1]}, "'pretrain' must be a mapping"),
                          ({**BASE, "tasks": {"../x": {"signal": "ttbar", "background": "qcd"}},
                            "pretrain": {"lr": 1e-3, "data": str(tmp_path)}}, "not a valid name")):
        with pytest.raises(HepfmError, match=r"scaling\.yaml"):
            try:
                run_scaling(raw, tmp_path / "out", [100], source="scaling.yaml", progress=False)
            except HepfmError as exc:
                assert fragment in str(exc), exc
                raise
    assert not (tmp_path / "out").exists()


def test_report_only_on_a_missing_folder(tmp_path):
    """report_only_missing: was a traceback."""
    config = tmp_path / "s.yaml"
    config.write_text("tasks: [hplus_vs_ttbar]\nsizes: [100]\nstrategies: [scratch]\nseeds: 1\ntest_size: 100\n"
                      "generation: {downstream_events: 1000}\npretrain: {lr: 1.0e-3}\n")
    refused(["study", str(config), "--out", str(tmp_path / "nothing"), "--report-only"], "nothing",
            "no such study folder", watch=[tmp_path])
    assert not (tmp_path / "nothing").exists()


def test_a_running_study_locks_its_folder(tmp_path):
    """study_locked: a second study into a folder another process is writing is refused at once."""
    from hepfm.study.run import run_study

    out = tmp_path / "study"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hepfm.io.locking import exclusive_lock\n"
                               f"with exclusive_lock({str(out)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        with pytest.raises(FolderLockedError, match=r"study folder is being written by process"):
            run_study(parse_config(BASE, "s.yaml"), out, progress=False)
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_read_only_study_folder_is_one_line(tmp_path, monkeypatch):
    """study_read_only: the folder cannot be created (read-only file system, a file in the way)."""
    from hepfm.study.run import run_study

    cfg = parse_config(BASE, "s.yaml")
    (tmp_path / "file").write_text("")
    with pytest.raises(HepfmError, match="cannot create the study folder"):
        run_study(cfg, tmp_path / "file" / "study", progress=False)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(HepfmError, match="read-only file system"):
        run_study(cfg, tmp_path / "ro", progress=False)


# ------------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, store):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(create_model("graphnet", 2, share_blocks=True), folder, {"task": "multiclass", "names": ["a", "b"]})
    return folder


def test_predict_refuses_to_write_over_an_input(store, model_dir, tmp_path):
    """predict_out_is_shard, predict_out_in_store, predict_out_is_root_input, predict_out_exists."""
    shard = next(store.rglob("*.h5"))
    before = snapshot(store)
    with pytest.raises(HepfmError, match="lies inside the input store"):
        predict_file(model_dir, store, shard, progress=False)
    with pytest.raises(HepfmError, match="lies inside the input store"):
        predict_file(model_dir, store, store / "scores.parquet", progress=False, overwrite=True)
    assert snapshot(store) == before
    root = tmp_path / "mydata.root"
    root.write_bytes(b"not really ROOT")
    with pytest.raises(HepfmError, match="is an input of the prediction"):
        predict_file(model_dir, [str(root)], root, progress=False, overwrite=True)
    assert root.read_bytes() == b"not really ROOT"
    existing = tmp_path / "old.h5"
    existing.write_bytes(b"old scores")
    with pytest.raises(HepfmError, match=r"already exists; .*--overwrite"):
        predict_file(model_dir, store, existing, progress=False)
    assert existing.read_bytes() == b"old scores"
    rep = predict_file(model_dir, store, existing, progress=False, overwrite=True)
    assert rep.n_events == 200 and existing.stat().st_size > 100


def test_predict_cli_out_is_input(store, model_dir):
    """predict_cli_out_is_input: hepfm predict M --data STORE --out STORE/.../shard.h5 replaced the shard."""
    shard = next(store.rglob("*.h5"))
    refused(["predict", str(model_dir), "--data", str(store), "--out", str(shard), "--no-progress"],
            "inside the input store", watch=[store])


@pytest.mark.parametrize("suffix", [".h5", ".parquet", ".root"])
def test_predict_disk_full_leaves_nothing(store, model_dir, tmp_path, monkeypatch, suffix):
    """predict_disk_full: a full disk while writing .h5 crashed HDF5; now one line naming the output."""
    import hepfm.io.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hepfm.io.atomic.os, "fsync", full)
    out = tmp_path / f"scores{suffix}"
    with pytest.raises(HepfmError, match=f"no space left on the device holding .*scores{suffix}"):
        predict_file(model_dir, store, out, progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ detector

DETECTOR_CASES = {
    "max_objects_negative": ({"max_objects": -3}, "'max_objects' must be an integer from 1 to 1000"),
    "max_objects_huge": ({"max_objects": 100_000_000}, "'max_objects' must be an integer from 1 to 1000"),
    "max_objects_float": ({"max_objects": 20.5}, "'max_objects'"),
    "jet_radius_negative": ({"jet_radius": -1}, "'jet_radius' must be a distance"),
    "jet_radius_text": ({"jet_radius": "abc"}, "'jet_radius'"),
    "pt_list": ({"jet_pt_min": [1, 2]}, "'jet_pt_min' must be a number >= 0"),
    "pt_negative": ({"electron_pt_min": -5}, "'electron_pt_min'"),
    "efficiency_above_one": ({"btag_efficiency_b": 1.5}, "'btag_efficiency_b' must be a probability"),
    "efficiency_table_bad": ({"photon_efficiency": [[1.5, 2.0]]}, "'photon_efficiency'"),
    "efficiency_table_text": ({"muon_efficiency": "high"}, "'muon_efficiency'"),
    "resolution_rows": ({"jet_resolution": [[1.0, 0.1]]}, "'jet_resolution' must be a list"),
    "edges_decrease": ({"track_efficiency": [[2.5, 0.9], [1.5, 0.9]]}, "edges increase"),
    "crack_reversed": ({"crack_eta": [1.6, 1.3]}, "'crack_eta'"),
    "tau_tagging_text": ({"tau_tagging": "yes"}, "'tau_tagging' must be true or false"),
    "eta_nan": ({"jet_eta_max": float("nan")}, "'jet_eta_max'"),
    "huge_value_bounded": ({"jet_radius": "r" * 100_000}, "..."),
}


@pytest.mark.parametrize("case", DETECTOR_CASES)
def test_detector_values_are_checked(case, tmp_path):
    values, fragment = DETECTOR_CASES[case]
    with pytest.raises(HepfmError) as info:
        DetectorConfig.from_dict(values, source="det.json")
    assert str(info.value).startswith("det.json: ") and fragment in str(info.value), info.value
    assert len(str(info.value)) < 500
    with pytest.raises(HepfmError, match="detector configuration: detector parameter"):
        DetectorConfig(**values)  # the library's constructor checks too


def test_detector_file_and_model_schema(tmp_path):
    """detector_file_list, detector_cli: a file holding a list, or a bad value, is one line naming the file."""
    bad = tmp_path / "det.json"
    bad.write_text("[1, 2]")
    with pytest.raises(HepfmError, match=r"det\.json: a detector configuration must be a mapping"):
        DetectorConfig.from_file(bad)
    bad.write_text('{"max_objects": -3}')
    refused(["predict", "m", "--data", "x.root", "--out", str(tmp_path / "s.h5"), "--detector-config", str(bad)],
            "det.json", "max_objects", watch=[tmp_path])
    # a model's recorded detector goes through the same check
    with pytest.raises(HepfmError, match="model data schema: detector parameter 'jet_radius'"):
        DetectorConfig.from_dict({"jet_radius": -1}, source="model data schema")


def test_shipped_default_is_valid():
    assert DetectorConfig.from_dict(DetectorConfig().to_dict()).to_dict() == DetectorConfig().to_dict()
