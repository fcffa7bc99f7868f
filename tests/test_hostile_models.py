"""Hostile and careless model folders, model listing, publish, export and CKA (docs/safety.md): one line
naming the file and the problem, exit code 2, nothing half-written, no traceback and no unbounded memory.

Every hostile folder is a shipped model copied into tmp_path and then damaged."""

from __future__ import annotations

import errno
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from cli_runner import hepfm
from hostile import refused, snapshot
from safetensors.torch import load_file, save_file

from hepfm.errors import HepfmError
from hepfm.models.pretrained import available, weights_dir
from hepfm.models.saving import CONFIG, WEIGHTS, load_model

SHIPPED = "graphnet-pythia12-multiclass"


def _copy(tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    shutil.copytree(weights_dir() / SHIPPED, folder)
    return folder


def _edit_config(folder: Path, edit) -> Path:
    config = json.loads((folder / CONFIG).read_text())
    edit(config)
    (folder / CONFIG).write_text(json.dumps(config))
    return folder


def _transformer(config, **options):
    config["architecture"] = {"model": "transformer", "n_outputs": 12, "config": options}


def _graphnet(config, **options):
    config["architecture"]["config"].update(options)


def _set_outputs(config, n):
    config["architecture"]["n_outputs"] = n


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[:len(data) // 2])


def _garbage(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"\x00" * 3 + b"not a safetensors file" * 10)


def _huge_header(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", 1 << 60) + data[8:])


def _wrong_shape(folder: Path) -> None:
    state = load_file(folder / WEIGHTS)
    state["head.weight"] = torch.zeros(12, 32)
    save_file(state, folder / WEIGHTS)


def _extra_big_tensor(folder: Path) -> None:
    """A header whose offsets promise more bytes than the file holds."""
    data = (folder / WEIGHTS).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header["head.weight"]["shape"] = [12, 64_000_000]
    start = header["head.weight"]["data_offsets"][0]
    header["head.weight"]["data_offsets"] = [start, start + 12 * 64_000_000 * 4]
    raw = json.dumps(header).encode()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


# case id -> damage done to a copy of a shipped model -> fragment of the one-line error
LOAD_CASES = {
    "config_dim_16384": (lambda f: _edit_config(f, lambda c: _transformer(c, dim=16384)),
                         "dim must be between 1 and 4096"),
    "config_dim_2048": (lambda f: _edit_config(f, lambda c: _transformer(c, dim=2048)),
                        "do not match the architecture"),
    "config_layers_1e6": (lambda f: _edit_config(f, lambda c: _transformer(c, layers=10**6)),
                          "architecture.config.layers = 1000000 is out of range"),
    "config_blocks_times_depth": (lambda f: _edit_config(f, lambda c: _graphnet(c, n_blocks=200, depth=200)),
                                  "builds too many layers"),
    "config_n_outputs_1e12": (lambda f: _edit_config(f, lambda c: _set_outputs(c, 10**12)),
                              "n_outputs must be a whole number"),
    "config_n_outputs_float": (lambda f: _edit_config(f, lambda c: _set_outputs(c, 1e12)),
                               "n_outputs must be a whole number"),
    "config_negative_dim": (lambda f: _edit_config(f, lambda c: _transformer(c, dim=-64)), "out of range"),
    "config_missing_names": (lambda f: _edit_config(f, lambda c: c.pop("names")), "'names'"),
    "config_names_not_list": (lambda f: _edit_config(f, lambda c: c.update(names=5)), "'names'"),
    "weights_wrong_shape": (_wrong_shape, "head.weight has shape [12, 32]"),
    "weights_header_beyond_file": (_extra_big_tensor, "bad header entry, or the file is truncated"),
    # Also refused before (by safetensors); kept as guards on the header reader that now runs first.
    "weights_truncated": (_truncate, "unreadable weights"),
    "weights_garbage": (_garbage, "unreadable weights"),
    "weights_header_2e60": (_huge_header, "unreadable weights"),
}


@pytest.mark.parametrize("case", LOAD_CASES)
def test_hostile_model_folder_is_refused_before_allocating(tmp_path, case):
    damage, fragment = LOAD_CASES[case]
    folder = _copy(tmp_path)
    damage(folder)
    with pytest.raises(HepfmError) as info:  # the old code allocated the declared sizes (tens of GB) instead
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and fragment in message, message


def test_memory_bomb_folder_is_refused_by_export_on_the_command_line(tmp_path):
    folder = _edit_config(_copy(tmp_path), lambda c: _transformer(c, dim=2048))
    out = tmp_path / "out"
    out.mkdir()
    refused(["export", folder, "--onnx", out / "m.onnx"], str(folder / WEIGHTS), "do not match the architecture",
            watch=[tmp_path])


def test_models_listing_never_cuts_names_or_card_paths(tmp_path):
    r = hepfm("models", env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name, folder in available().items():
        assert any(line.strip() == name for line in lines), r.stdout
        assert str(folder / "MODEL_CARD.md") in r.stdout, r.stdout
    assert "…" not in r.stdout.split("pretrained models")[1]


def test_a_broken_folder_on_the_model_path_is_marked_and_the_rest_listed(tmp_path):
    shelf = tmp_path / "shelf"
    _copy(shelf, "good-model")
    (shelf / "broken-model").mkdir()
    (shelf / "broken-model" / CONFIG).write_text("{not json")
    before = snapshot(shelf)
    r = hepfm("models", env={"HEPFM_MODEL_PATH": str(shelf)})
    assert r.returncode == 0, r.stderr
    assert "good-model" in r.stdout and SHIPPED in r.stdout
    assert "broken-model  unreadable" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "broken-model" in errors[0] and "Traceback" not in r.stderr
    assert snapshot(shelf) == before


@pytest.mark.parametrize(("case", "name", "fragment"), [
    ("publish_shipped_name", SHIPPED, "a model shipped with hepfm has this name"),
    ("publish_name_too_long", "a" * 200, "is not a valid name"),
])
def test_publish_refuses_names_that_cannot_be_loaded(tmp_path, case, name, fragment):
    from hepfm.models.card import publish

    run = _copy(tmp_path, "run")
    dest = tmp_path / "shelf"
    with pytest.raises(HepfmError, match=fragment):
        publish(run, name, dest)
    assert not dest.exists() or not any(dest.iterdir())


def test_publish_overwrite_keeps_the_old_model_when_the_swap_fails(tmp_path, monkeypatch):
    from hepfm.models.card import publish

    run = _copy(tmp_path, "run")
    dest = tmp_path / "shelf"
    target = publish(run, "toy", dest)
    before = snapshot(target)
    _edit_config(run, lambda c: c.update(lr=0.5))  # the new version differs

    real_rename = Path.rename

    def failing_rename(self, new):
        if self.name == ".toy.partial":
            raise OSError(errno.ENOSPC, "No space left on device", str(new))
        return real_rename(self, new)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(HepfmError, match="no space left"):
        publish(run, "toy", dest, overwrite=True)
    monkeypatch.undo()
    assert snapshot(target) == before
    assert json.loads((target / CONFIG).read_text())["lr"] != 0.5
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".hepfm.lock")) == ["toy"]

    publish(run, "toy", dest, overwrite=True)  # and a swap that succeeds leaves only the new model
    assert json.loads((target / CONFIG).read_text())["lr"] == 0.5
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".hepfm.lock")) == ["toy"]


def test_publish_into_a_read_only_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from hepfm.models import card

    run = _copy(tmp_path, "run")
    dest = tmp_path / "shelf"

    def read_only(src, dst, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(card.shutil, "copyfile", read_only)
    with pytest.raises(HepfmError, match="read-only file system"):
        card.publish(run, "toy", dest)
    assert [p.name for p in dest.iterdir() if not p.name.startswith(".hepfm.lock")] == []


def test_export_refuses_an_opset_the_exporter_does_not_write(tmp_path):
    refused(["export", SHIPPED, "--onnx", tmp_path / "m.onnx", "--opset", "999"], "--opset 999",
            "the installed ONNX exporter writes opsets 18 to", watch=[tmp_path])


def test_export_refuses_a_graph_written_at_another_opset(tmp_path, monkeypatch):
    import types

    import onnx

    from hepfm.inference.export import export_onnx

    def fake_export(*args, opset_version, **kwargs):  # an exporter that silently keeps opset 18
        graph = onnx.helper.make_graph([], "g", [], [])
        return types.SimpleNamespace(model_proto=onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", 18)]))

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    with pytest.raises(HepfmError, match="the exporter wrote opset 18 instead"):
        export_onnx(SHIPPED, tmp_path / "m.onnx", opset=20)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_model_without_class_names(tmp_path):
    folder = _edit_config(_copy(tmp_path), lambda c: c.pop("names"))
    out = tmp_path / "out"
    out.mkdir()
    refused(["export", folder, "--onnx", out / "m.onnx"], str(folder / CONFIG), "'names'", watch=[tmp_path])


def test_cka_labels_same_named_folders_apart_and_refuses_ambiguity():
    from hepfm.cli.study import _cka_groups

    assert list(_cka_groups(["runs/a/model", "runs/b/model", "other"])) == ["a/model", "b/model", "other"]
    assert list(_cka_groups(["x/model", "model"])) == ["x/model", "model"]
    with pytest.raises(HepfmError, match="both be labelled 'a/model'"):
        _cka_groups(["a/model", "./a/model"])
    with pytest.raises(HepfmError, match="two model groups are named 'g'"):
        _cka_groups(["g=runs/a", "g=runs/b"])
    with pytest.raises(HepfmError, match="given twice"):
        _cka_groups(["runs/a", "runs/a"])


def test_cka_on_two_folders_of_one_name_compares_both(tmp_path):
    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model
    from hepfm.testing import toy_store

    store = toy_store(tmp_path / "events", n_per_class=40, seed=1)
    for seed, where in enumerate(("a", "b")):
        torch.manual_seed(seed)
        save_model(create_model("graphnet", 1, share_blocks=True, n_blocks=1, depth=2), tmp_path / where / "model",
                   {"task": "binary", "names": ["background", "signal"]})
    r = hepfm("cka", tmp_path / "a" / "model", tmp_path / "b" / "model", "--data", store, "--events", 60,
              "--kernel", "linear", inherit_env=True)
    assert r.returncode == 0, r.stderr
    assert "a/model" in r.stdout and "b/model" in r.stdout, r.stdout


def test_cka_plot_into_a_read_only_folder_removes_the_plots_already_written(tmp_path, monkeypatch):
    from hepfm.cli import study
    from hepfm.eval import plots
    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model
    from hepfm.testing import toy_store

    store = toy_store(tmp_path / "events", n_per_class=40, seed=1)
    torch.manual_seed(0)
    model = save_model(create_model("graphnet", 1, share_blocks=True, n_blocks=1, depth=2), tmp_path / "m",
                       {"task": "binary", "names": ["background", "signal"]})
    real = plots.cka_heatmap

    def second_fails(mean, std, names, path, title):
        if "rbf" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(mean, std, names, path, title)

    monkeypatch.setattr(plots, "cka_heatmap", second_fails)
    out = tmp_path / "plots"
    out.mkdir()
    with pytest.raises(OSError, match="Read-only"):
        study.cka(models=[f"x={model}", f"y={model}"], data=store, events=60, kernel="both",
                  plot=out / "cka.png", sanity=False)
    assert list(out.iterdir()) == []
