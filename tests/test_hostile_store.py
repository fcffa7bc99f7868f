"""Hostile and careless event stores, LHE files and output folders (docs/safety.md): one line naming the file
and the problem, exit code 2, nothing half-written, no traceback, no unbounded memory and no write outside the
folder the user named.

Every hostile store is a small toy store built in tmp_path and then damaged or forged."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from cli_runner import SRC
from hostile import refused, snapshot

from hepfm.data.integrity import verify_shards
from hepfm.errors import HepfmError
from hepfm.io import atomic, store
from hepfm.io.convert import convert_files
from hepfm.io.generate import lhe_source
from hepfm.io.lhe import count_lhe_events
from hepfm.io.locking import FolderLockedError
from hepfm.io.schema import FEATURES
from hepfm.io.store import MANIFEST, EventStore, write_manifest
from hepfm.physics.detector import DetectorConfig
from hepfm.testing import toy_store


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return toy_store(tmp_path_factory.mktemp("hostile") / "store", n_per_class=60, shards=2)


def _copy(base: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(base, dest)
    return dest


def _cache_env(tmp_path: Path) -> dict:
    return {"XDG_CACHE_HOME": str(tmp_path / "user-cache")}


def _truncated(tmp_path, base):
    s = _copy(base, tmp_path / "s")
    shard = s / "hard" / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:8000])
    return s, shard


def _forged(tmp_path, base, n=10**9):
    """A store whose extra process holds one 10 KB shard declaring ``n`` events (unallocated datasets)."""
    s = _copy(base, tmp_path / "s")
    (s / "bomb").mkdir()
    path = s / "bomb" / "shard-00000.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("objects", shape=(n, 20, len(FEATURES)), dtype="f4", chunks=(4096, 20, len(FEATURES)))
        for name, dtype in (("n_objects", "i8"), ("n_dropped", "i4"), ("process", "i4"), ("weight", "f4"),
                            ("event_id", "i8")):
            f.create_dataset(name, shape=(n,), dtype=dtype, chunks=(4096,))
        f.attrs.update({"n_events": n, "schema_version": 1, "features": json.dumps(list(FEATURES)),
                        "process_name": "bomb"})
    write_manifest(s)  # its checksum and size are right
    return s, path


def _edit_manifest(tmp_path, base, edit):
    s = _copy(base, tmp_path / "s")
    manifest = json.loads((s / MANIFEST).read_text())
    manifest = edit(manifest)
    (s / MANIFEST).write_text(json.dumps(manifest))
    return s


def _huge_count(m):
    m["shards"][0]["n_events"] = 10**12
    return m


def _empty(m):
    m.update(shards=[], processes={}, n_events=0)
    return m


def _empty_store(tmp_path, base):
    """A store whose manifest lists no shard and that holds none (hepfm inspect printed "0 events", exit 0)."""
    import shutil

    s = _edit_manifest(tmp_path, base, _empty)
    for folder in ("hard", "soft"):
        shutil.rmtree(s / folder)
    return s, None


# ---------------------------------------------------------------------------------- command line

CLI_CASES = {
    # case id: (build(tmp_path, base) -> (store, named path), args(store, tmp_path), fragments)
    "truncated_shard_pretrain": (_truncated, lambda s, t: ["pretrain", "--data", s, "--out", t / "run",
                                                          "--no-progress"], ["damaged shard"]),
    "truncated_shard_inspect": (_truncated, lambda s, t: ["inspect", s], ["damaged shard"]),
    "forged_1e9_events_inspect": (_forged, lambda s, t: ["inspect", s], ["declares", "1,000,000,000 events"]),
    "manifest_1e12_events_inspect": (lambda t, b: (_edit_manifest(t, b, _huge_count), None),
                                     lambda s, t: ["inspect", s], ["1000000000000", "the manifest"]),
    "empty_store_inspect": (_empty_store, lambda s, t: ["inspect", s],
                            ["holds no events"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_hostile_store_on_the_command_line(case, base, tmp_path):
    build, args, fragments = CLI_CASES[case]
    s, named = build(tmp_path, base)
    refused(args(s, tmp_path), str(named or s), *fragments, watch=[s], env=_cache_env(tmp_path))
    assert not (tmp_path / "run").exists()


def test_lhe_header_declaring_two_billion_processes_is_refused(tmp_path):
    """Case lhe_nprup_bomb: NPRUP = 2e9 in a 200-byte file drove Pythia to 23 GB; now one line, nothing made."""
    lhe = tmp_path / "bomb.lhe"
    lhe.write_text('<LesHouchesEvents version="1.0">\n<init>\n2212 2212 6500 6500 0 0 0 0 3 2000000000\n'
                   "</init>\n<event>\n1 1 1 1 1 1\n21 -1 0 0 0 0 0 0 1 1 1 0 9\n</event>\n</LesHouchesEvents>\n")
    refused(["generate", "--lhe", lhe, "--label", "ttw", "-o", tmp_path / "out", "--no-progress"], str(lhe),
            "declares 2,000,000,000 process lines", watch=[tmp_path])
    assert not (tmp_path / "out").exists()
    event_bomb = tmp_path / "nup.lhe"  # an event declaring a billion particles is refused the same way
    event_bomb.write_text(lhe.read_text().replace("3 2000000000", "3 1\n1 0 1 1").replace("1 1 1 1 1 1",
                                                                                       "1000000000 1 1 1 1 1"))
    with pytest.raises(HepfmError, match=r"nup\.lhe: line 6: the <event> block declares 1,000,000,000 particle"):
        count_lhe_events(event_bomb)


@pytest.mark.parametrize("command,label", [("nanoaod", ".."), ("delphes", ".")])
def test_convert_label_outside_the_store_is_refused(command, label, tmp_path):
    """Cases convert_label_dotdot / convert_label_dot: `--label ..` wrote its shard into the parent folder."""
    root = tmp_path / "store"
    root.mkdir()
    dummy = tmp_path / "in.root"
    dummy.write_bytes(b"not read")
    refused(["convert", command, dummy, "-o", root / "inner", "--label", label, "--no-progress"],
            f"{label!r} is not a valid name", watch=[tmp_path])


def test_second_generate_into_a_locked_store_is_refused(tmp_path):
    """Case generate_locked: two runs with seeds 1 and 2 into one folder mixed their shards."""
    from hepfm.io.locking import exclusive_lock

    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out, "event store"):
        refused(["generate", "ttbar", "-n", "10", "--seed", "2", "-o", out, "--no-progress"], str(out),
                "being written by process", watch=[tmp_path])


# -------------------------------------------------------------------------------------- in process


def _relative_out(m):
    m["shards"][0]["path"] = "../x.h5"
    return m


def _absolute(m):
    m["shards"][0]["path"] = "/etc/hepfm/shard-00000.h5"
    return m


def _no_size(m):
    del m["shards"][0]["size"]
    return m


def _no_sha(m):
    del m["shards"][1]["sha256"]
    return m


MANIFEST_CASES = {
    "manifest_object_empty": (lambda m: {}, "not a valid event-store manifest"),
    "manifest_list": (lambda m: [], "not a valid event-store manifest"),
    "manifest_without_size": (_no_size, "has no valid 'size' \\(missing\\)"),
    "manifest_without_sha256": (_no_sha, "has no valid 'sha256' \\(missing\\)"),
    "manifest_path_dotdot": (_relative_out, "shard path '../x.h5' is not a PROCESS/shard-NNNNN.h5 path inside"),
    "manifest_path_absolute": (_absolute, "is not a PROCESS/shard-NNNNN.h5 path inside"),
    "manifest_1e12_events": (_huge_count, "the shard says it holds 30 events, the manifest 1000000000000"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_hostile_manifest_is_refused_on_opening(case, base, tmp_path):
    edit, message = MANIFEST_CASES[case]
    s = _edit_manifest(tmp_path, base, edit)
    with pytest.raises(HepfmError, match=f"^{s}.*{message}"):
        EventStore(s)


def test_symlink_out_of_the_store_is_refused(base, tmp_path):
    """Case manifest_symlink_out: a listed shard that is a symlink to a file outside the store."""
    s = _copy(base, tmp_path / "s")
    outside = tmp_path / "elsewhere.h5"
    shard = s / "hard" / "shard-00000.h5"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(HepfmError, match=r"shard path 'hard/shard-00000.h5' is not .* inside the store"):
        EventStore(s)


def test_forged_shard_is_refused_before_anything_allocates(base, tmp_path):
    """Case forged_1e9_events_finetune: a 10 KB shard declaring 1e9 events made finetune allocate 522 GiB."""
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import finetune

    s, path = _forged(tmp_path, base)
    assert path.stat().st_size < 100_000
    with pytest.raises(HepfmError, match=f"{path}: dataset 'objects' declares"):
        finetune(s / "bomb", s / "soft", tmp_path / "ft", "scratch", cfg=TrainConfig(epochs=1, progress=False))
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("change,message", [
    ("short_dataset", "dataset 'weight' has shape \\(29,\\), but the shard holds 30 events"),
    ("wrong_dtype", "dataset 'n_objects' has type float32, expected integers"),
    ("external", "dataset .weight. refers to data outside the file"),
])
def test_shard_datasets_must_agree(change, message, base, tmp_path):
    """Cases shard_short_dataset / shard_wrong_dtype / shard_external_storage: checked against each other."""
    s = _copy(base, tmp_path / "s")
    path = s / "soft" / "shard-00000.h5"
    with h5py.File(path, "a") as f:
        if change == "short_dataset":
            w = f["weight"][:29]
            del f["weight"]
            f["weight"] = w
        elif change == "wrong_dtype":
            n = f["n_objects"][...].astype("f4")
            del f["n_objects"]
            f["n_objects"] = n
        else:
            (tmp_path / "secret").write_bytes(b"\0" * 4 * 30)
            del f["weight"]
            f.create_dataset("weight", shape=(30,), dtype="f4", external=[(str(tmp_path / "secret"), 0, 120)])
    write_manifest(s)
    with pytest.raises(HepfmError, match=f"{path}: {message}"):
        EventStore(s)


def test_verification_cache_lives_in_the_user_cache_not_the_store(base, tmp_path, monkeypatch):
    """Case verified_cache_location: training wrote .hepfm-verified.json into the (input) store."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    s = _copy(base, tmp_path / "s")
    before = snapshot(s)
    es = EventStore(s)
    verify_shards(es)
    assert snapshot(s) == before
    (cache,) = (tmp_path / "cache" / "hepfm" / "verified").glob("*.json")
    assert set(json.loads(cache.read_text())) == {e["path"] for e in es.shards}


def test_full_disk_while_writing_a_shard_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Case shard_disk_full: a full disk mid-shard ended in a segmentation fault after h5py tracebacks."""
    from test_store import fake_arrays

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    path = tmp_path / "p" / "shard-00000.h5"
    path.parent.mkdir()
    with pytest.raises(HepfmError, match=f"^no space left on the device holding {path}$"):
        store.write_shard(path, fake_arrays(50), {"process_name": "p"})
    assert list(path.parent.iterdir()) == []


def test_conversion_into_a_locked_store_is_refused(tmp_path):
    """Case convert_locked: a conversion while another process writes the same store."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hepfm.io.locking import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'event store'):\n print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"{out}: this event store is being written by process "
                                                    f"{holder.pid}"):
            convert_files([], out, "data", source_format="nanoaod", tree_name="Events", detector=DetectorConfig(),
                          attrs={})
        assert not (out / "data").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lhe_label_must_be_a_plain_name(tmp_path):
    """Case lhe_label_space: a label with a space (it names the process folder) was accepted."""
    lhe = Path(__file__).resolve().parents[1] / "no-such.lhe"
    with pytest.raises(HepfmError, match="label \\(--label\\) 'my sample' is not a valid name"):
        lhe_source(lhe, "my sample")

