"""hepfm.testing: the stores that tests and benchmarks share are valid event stores, reproducible from their seeds."""

from __future__ import annotations

import numpy as np

from hepfm.io.store import EventStore
from hepfm.testing import one_shard_per_process_store, synthetic_store, toy_store


def _arrays(root):
    store = EventStore(root)
    return store, store.arrays()


def test_toy_store_is_a_valid_reproducible_store(tmp_path):
    store, a = _arrays(toy_store(tmp_path / "a", n_per_class=50, seed=3, shards=2))
    assert store.counts() == {"soft": 50, "hard": 50} and len(store.shards) == 4
    assert (a["objects"][np.arange(100), a["n_objects"] - 1, 6] == 6).all()  # the MET row closes every event
    _, again = _arrays(toy_store(tmp_path / "b", n_per_class=50, seed=3, shards=2))
    assert all(np.array_equal(a[k], again[k]) for k in a)
    _, other = _arrays(toy_store(tmp_path / "c", n_per_class=50, seed=4, shards=2))
    assert not np.array_equal(a["objects"], other["objects"])


def test_synthetic_and_one_shard_per_process_stores_open(tmp_path):
    store, a = _arrays(synthetic_store(tmp_path / "s", n_per_process=40))
    assert store.counts() == {"soft": 40, "hard": 40}
    assert (a["objects"][:, 0, 6] == 6).all() and (a["n_objects"] >= 3).all()  # MET first, at least 3 objects
    store = EventStore(one_shard_per_process_store(tmp_path / "p", processes=3, events=20))
    assert store.counts() == {"p00": 20, "p01": 20, "p02": 20} and len(store.shards) == 3
