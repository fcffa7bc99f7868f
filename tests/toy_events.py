"""Toy events in the store's layout, for model and training tests that must not depend on Pythia.

Rows are (pT, eta, phi, E, btag, charge, type), sorted by type then descending pT, padding rows zero at
the end, one MET row per event. ``toy_store`` writes two classes that differ in jet multiplicity and
hardness, so a classifier can learn them quickly but not trivially.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepfm.io.store import shard_name, write_manifest, write_shard
from hepfm.physics.truth import LABEL_NAMES


def toy_events(n: int, seed: int = 0, max_objects: int = 20, mean_jets: float = 5.0, pt_scale: float = 40.0):
    """(objects [n, M, 7] float32, n_objects [n]) with jets, leptons and one MET row per event."""
    rng = np.random.default_rng(seed)
    objects = np.zeros((n, max_objects, 7), np.float32)
    counts = np.zeros(n, np.int64)
    for k in range(n):
        n_jets = min(rng.poisson(mean_jets), max_objects - 3)
        n_lep = rng.integers(0, 3)
        rows = []
        for typ, m in ((1, n_jets), (2 + rng.integers(0, 2), n_lep)):
            pts = np.sort(pt_scale * (1 + rng.exponential(1.0, m)))[::-1]
            for p in pts:
                eta = rng.uniform(-2.4, 2.4)
                rows.append([p, eta, rng.uniform(-np.pi, np.pi), p * np.cosh(eta),
                             float(typ == 1 and rng.random() < 0.2), 0.0 if typ == 1 else rng.choice([-1.0, 1.0]), typ])
        met = rng.exponential(30.0)
        rows.append([met, 0.0, rng.uniform(-np.pi, np.pi), met, 0.0, 0.0, 6])
        objects[k, :len(rows)] = np.array(rows, np.float32)
        counts[k] = len(rows)
    return objects, counts


def toy_store(root: Path, n_per_class: int = 600, seed: int = 0, shards: int = 1, specs: dict | None = None) -> Path:
    """A two-process store ('soft', 'hard' unless ``specs`` maps other names to toy_events settings) with random
    truth labels; returns ``root``."""
    root = Path(root)
    specs = specs or {"soft": dict(mean_jets=3.0, pt_scale=30.0), "hard": dict(mean_jets=6.0, pt_scale=45.0)}
    for p, (name, spec) in enumerate(specs.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        objects, counts = toy_events(n_per_class, seed + p, **spec)
        rng = np.random.default_rng(seed + 10 + p)
        truth = (rng.random((n_per_class, len(LABEL_NAMES))) < 0.3).astype(np.float32)
        truth[:, :5] = rng.integers(0, 3, (n_per_class, 5))
        for s, part in enumerate(np.array_split(np.arange(n_per_class), shards)):
            arrays = {"objects": objects[part], "n_objects": counts[part], "n_dropped": np.zeros(len(part), np.int32),
                      "process": np.zeros(len(part), np.int32), "truth": truth[part],
                      "weight": np.ones(len(part), np.float32), "event_id": part.astype(np.int64)}
            write_shard(folder / shard_name(s), arrays, {"process_name": name, "process_names": [name], "seed": seed,
                                                        "shard_index": s})
    write_manifest(root)
    return root
