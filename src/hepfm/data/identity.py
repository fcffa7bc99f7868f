"""Event identity, the one per-event split, and pretraining/test overlap.

* **Identity.** An event is (shard identity, row in the shard). A generated shard's identity is a hash of
  what determines its events: process, Pythia seed (derived from base seed, process and shard index),
  shard index, generator settings, LHE file and detector configuration; so two stores generated with the
  same seed share identities (and events), whatever their folder or other processes. Shards without a
  seed (converted real data) are identified by their content hash from the manifest.
* **Split.** :func:`assign_splits` maps (split seed, shard identity, row) to train/validation/test with
  a hash, for in-memory and streamed pretraining alike: an event's split does not depend on
  ``max_events``, on other shards or on how the store is read.
* **Record.** A pretrained model stores, per used shard, (identity, rows used, split seed, fractions):
  its training and validation events are the rows below ``rows`` whose split is not test. A few lines per
  shard, not one entry per event. :func:`seen_in_pretraining` checks events against such a record.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hepfm.io.store import EventStore, read_attrs

TRAIN, VAL, TEST = 0, 1, 2
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
_SPLITMIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_IDENTITY_ATTRS = ("process_name", "seed", "shard_index", "generator", "generator_settings", "lhe_file", "detector")
_CACHE: dict[tuple, str] = {}


def shard_identity(store: EventStore, shard: dict) -> str:
    """The identity of a shard's events (see the module docstring)."""
    path = store.root / shard["path"]
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        attrs = read_attrs(path)
        if attrs.get("seed") is not None:
            ident = {k: attrs.get(k) for k in _IDENTITY_ATTRS}
            if attrs.get("mixture_settings"):  # two-instance processes (fcnc_thq): their settings too
                ident["mixture_settings"] = attrs["mixture_settings"]
            text = json.dumps(ident, sort_keys=True, default=str)
            _CACHE[key] = "gen:" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        else:
            _CACHE[key] = "sha256:" + str(shard.get("sha256"))
    return _CACHE[key]


def assign_splits(split_seed: int, shard_key: str, positions,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Split code (0 train, 1 validation, 2 test) of the events at ``positions`` (rows) of one shard.

    SplitMix64 of (a BLAKE2 key of the split seed and shard identity) + row, mapped to [0, 1) and compared
    with the cumulative fractions.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    key = hashlib.blake2b(f"{split_seed}\0{shard_key}".encode(), digest_size=8).digest()
    gamma, m1, m2 = _SPLITMIX
    with np.errstate(over="ignore"):
        z = np.uint64(int.from_bytes(key, "little")) + (np.asarray(positions, np.uint64) + np.uint64(1)) * gamma
        z = (z ^ (z >> np.uint64(30))) * m1
        z = (z ^ (z >> np.uint64(27))) * m2
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return np.searchsorted(np.cumsum(fractions[:2]), u, side="right").astype(np.int8)


def pretraining_record(store: EventStore, used: list[tuple[dict, int]], split_seed: int, fractions) -> list[dict]:
    """The record of a pretraining run's train+validation events: one entry per (shard, rows used)."""
    return [{"shard": shard_identity(store, s), "path": str(store.root / s["path"]), "process": s["process"],
             "rows": int(n), "split_seed": int(split_seed), "fractions": [float(f) for f in fractions]}
            for s, n in used]


def seen_in_pretraining(record: list[dict], keys: list[str], shard: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Mask of the events (shard identity ``keys[shard]``, ``row``) that a pretraining ``record`` trained or
    validated on."""
    seen = np.zeros(len(row), bool)
    by_key: dict[str, list[dict]] = {}
    for entry in record:
        by_key.setdefault(entry["shard"], []).append(entry)
    for i, k in enumerate(keys):
        if k not in by_key:
            continue
        at = np.flatnonzero(shard == i)
        for entry in by_key[k]:
            r = row[at]
            inside = r < entry["rows"]
            codes = assign_splits(entry["split_seed"], k, r, tuple(entry["fractions"]))
            seen[at[inside & (codes != TEST)]] = True
    return seen
