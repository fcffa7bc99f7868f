import json

import numpy as np
import pytest

from hepfm.errors import HepfmError
from hepfm.io import store
from hepfm.io.store import EventStore


def fake_arrays(n, seed=0, m=4):
    rng = np.random.default_rng(seed)
    return {
        "objects": rng.normal(size=(n, m, 7)).astype(np.float32),
        "n_objects": rng.integers(1, m, n).astype(np.int32),
        "n_dropped": np.zeros(n, np.int32),
        "process": np.zeros(n, np.int32),
        "truth": rng.random((n, 41)).astype(np.float32),
        "weight": np.ones(n, np.float32),
        "event_id": np.arange(n, dtype=np.int64),
    }


def make_store(root, sizes):
    for proc, ns in sizes.items():
        (root / proc).mkdir(parents=True)
        for i, n in enumerate(ns):
            store.write_shard(root / proc / store.shard_name(i), fake_arrays(n, seed=i + 10 * len(proc)),
                              {"process_name": proc, "process_names": [proc], "shard_index": i, "seed": i})
    return store.write_manifest(root)


def test_public_import_paths():
    import hepfm
    import hepfm.io

    assert hepfm.io.EventStore is EventStore and hepfm.EventStore is EventStore


def test_roundtrip_counts_arrays_and_chunks(tmp_path):
    manifest = make_store(tmp_path, {"ttbar": [30, 20], "tth": [25]})
    assert manifest["processes"] == {"ttbar": 50, "tth": 25}
    es = EventStore(tmp_path)
    assert es.counts() == {"ttbar": 50, "tth": 25} and len(es) == 75
    data = es.arrays()
    assert data["objects"].shape == (75, 4, 7) and data["truth"].shape == (75, 41)
    # process indices follow the store's process list, not the per-shard lists
    np.testing.assert_array_equal(data["process"], [0] * 50 + [1] * 25)
    assert es.process_names == ["ttbar", "tth"]
    tth = es.arrays(processes=["tth"])
    np.testing.assert_array_equal(tth["process"], 1)
    chunks = list(es.iter_chunks(8, fields=("objects", "process")))
    assert all(len(c["objects"]) <= 8 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c["objects"] for c in chunks]), data["objects"])
    np.testing.assert_array_equal(np.concatenate([c["process"] for c in chunks]), data["process"])
    assert es.verify() == []
    assert es.attrs("tth")["process_name"] == "tth"
    head = es.head(33, fields=("objects", "process"))
    np.testing.assert_array_equal(head["objects"], data["objects"][:33])
    assert len(es.head(1000, processes=["tth"])["objects"]) == 25


def test_checksums_detect_changed_shards(tmp_path):
    make_store(tmp_path, {"ttbar": [10]})
    path = tmp_path / "ttbar" / store.shard_name(0)
    good = path.read_bytes()
    store.write_shard(path, fake_arrays(10, seed=99), {"process_name": "ttbar"})
    with pytest.raises(store.DamagedStoreError, match="damaged shard"):  # refused on opening: its size changed
        EventStore(tmp_path)
    data = bytearray(good)
    data[-100] ^= 0xFF  # same size: opened, and caught by its checksum
    path.write_bytes(bytes(data))
    assert EventStore(tmp_path).verify() == ["ttbar/shard-00000.h5"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / store.shard_name(0)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.h5py.File, "create_dataset", boom, raising=False)
    monkeypatch.setattr(store.h5py.Group, "create_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard(path, fake_arrays(5), {})
    assert list(tmp_path.iterdir()) == []


def test_mismatched_lengths_rejected(tmp_path):
    arrays = fake_arrays(5)
    arrays["weight"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="weight"):
        store.write_shard(tmp_path / "x.h5", arrays, {})
    assert list(tmp_path.iterdir()) == []


def test_missing_manifest_is_rebuilt_and_bad_folders_rejected(tmp_path):
    make_store(tmp_path / "s", {"zjets": [7]})
    (tmp_path / "s" / store.MANIFEST).unlink()
    assert EventStore(tmp_path / "s").counts() == {"zjets": 7}
    with pytest.raises(HepfmError, match="no such event store"):
        EventStore(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HepfmError, match="not an event store"):
        EventStore(tmp_path / "empty")
    (tmp_path / "s" / store.MANIFEST).write_text("{not json")
    with pytest.raises(HepfmError, match="corrupt manifest"):
        EventStore(tmp_path / "s")


def test_manifest_lists_checksums(tmp_path):
    make_store(tmp_path, {"wh": [3]})
    manifest = json.loads((tmp_path / store.MANIFEST).read_text())
    (entry,) = manifest["shards"]
    assert entry["sha256"] == store.file_sha256(tmp_path / entry["path"])
    assert entry["n_events"] == 3


def test_manifest_reuses_checksums_of_unchanged_shards(tmp_path, monkeypatch):
    make_store(tmp_path, {"ttbar": [5, 5]})

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(store, "file_sha256", no_hashing)
    assert store.write_manifest(tmp_path)["n_events"] == 10


def test_shards_finished_after_the_manifest_are_picked_up(tmp_path):
    """Concurrent batch jobs can overwrite each other's manifest; the reader notices extra shards."""
    make_store(tmp_path, {"ttbar": [5]})
    store.write_shard(tmp_path / "ttbar" / store.shard_name(1), fake_arrays(7), {"process_name": "ttbar"})
    assert EventStore(tmp_path).counts() == {"ttbar": 12}
    assert json.loads((tmp_path / store.MANIFEST).read_text())["n_events"] == 12
