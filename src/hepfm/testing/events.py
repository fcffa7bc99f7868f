"""Events in the store's layout for tests and benchmarks that must not depend on Pythia.

Rows are (pT, eta, phi, E, btag, charge, type), padding rows zero at the end. Two families:

* :func:`toy_events` / :func:`toy_store`: jets and leptons sorted by type then descending pT, one MET row
  last; the two classes of ``toy_store`` differ in jet multiplicity and hardness, so a classifier learns
  them quickly but not trivially (the model and training tests).
* :func:`multi_task_store`: a ``toy_store`` whose shards also hold per-object ``origin`` codes (a function of
  each object's type, b tag and pT, so a per-object head can learn them) and ``heavy`` truth kinematics, with
  their ``origin_names`` and ``heavy_names`` attributes, as generated stores of schema version 2 have;
* :func:`synthetic_events` / :func:`synthetic_store`: vectorised, MET first, 3 + Poisson(7) objects (the
  throughput benchmarks, which need many events fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from hepfm.io.schema import DEFAULT_MAX_OBJECTS, TYPE, TYPE_CODES
from hepfm.io.store import EventStore, shard_name, shard_paths, write_manifest, write_shard
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


def synthetic_events(n: int, rng: np.random.Generator, max_objects: int = DEFAULT_MAX_OBJECTS,
                     extra_mean: float = 7.0, jet_pt: float = 35.0, btag_rate: float = 0.15,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Stored-layout events: ``objects`` [n, M, 7] float32 and ``n_objects`` [n].

    Multiplicity is 3 + Poisson(``extra_mean``) clipped to [3, M] (mean ~10 by default): one MET, up to
    two leptons, sometimes a photon or tau, jets for the rest; pT falling, eta Gaussian, phi uniform,
    massless energies; a fraction ``btag_rate`` of jets b-tagged; padding rows all zero at the end.
    """
    counts = np.clip(3 + rng.poisson(extra_mean, n), 3, max_objects)
    objects = np.zeros((n, max_objects, 7), dtype=np.float32)
    rows = np.arange(max_objects)[None, :]
    real = rows < counts[:, None]
    n_lep = rng.choice(3, size=n, p=[0.5, 0.35, 0.15])
    kind = np.full((n, max_objects), TYPE_CODES["jet"])
    kind[:, 0] = TYPE_CODES["met"]
    lep = (rows >= 1) & (rows <= n_lep[:, None])
    kind[lep] = rng.choice([TYPE_CODES["electron"], TYPE_CODES["muon"]], size=int(lep.sum()))
    other = (rows == n_lep[:, None] + 1) & (rng.random(n) < 0.2)[:, None]
    kind[other] = rng.choice([TYPE_CODES["photon"], TYPE_CODES["tau"]], size=int(other.sum()))
    pt = 20.0 + rng.exponential(jet_pt, (n, max_objects))
    pt[:, 0] = rng.exponential(30.0, n)
    eta = np.clip(rng.normal(0.0, 1.6, (n, max_objects)), -4.7, 4.7)
    eta = np.where(kind == TYPE_CODES["jet"], eta, np.clip(eta, -2.5, 2.5))
    eta[:, 0] = 0.0
    phi = rng.uniform(-np.pi, np.pi, (n, max_objects))
    charged = np.isin(kind, [TYPE_CODES["electron"], TYPE_CODES["muon"], TYPE_CODES["tau"]])
    charge = np.where(charged, rng.choice([-1.0, 1.0], (n, max_objects)), 0.0)
    btag = ((kind == TYPE_CODES["jet"]) & (rng.random((n, max_objects)) < btag_rate)).astype(float)
    cols = (pt, eta, phi, pt * np.cosh(eta), btag, charge, kind)
    for k, col in enumerate(cols):
        objects[..., k] = np.where(real, col, 0.0)
    return objects, counts.astype(np.int64)


def synthetic_store(root: Path, n_per_process: int, seed: int = 7) -> Path:
    """A two-process event store of :func:`synthetic_events` (``soft``: fewer, softer jets; ``hard``); returns
    ``root``."""
    root = Path(root)
    specs = {"soft": dict(extra_mean=5.0, jet_pt=30.0), "hard": dict(extra_mean=8.0, jet_pt=45.0)}
    for p, (name, spec) in enumerate(specs.items()):
        rng = np.random.default_rng(seed + p)
        objects, counts = synthetic_events(n_per_process, rng, **spec)
        (root / name).mkdir(parents=True, exist_ok=True)
        arrays = {"objects": objects, "n_objects": counts.astype(np.int64),
                  "n_dropped": np.zeros(n_per_process, np.int32), "process": np.zeros(n_per_process, np.int32),
                  "truth": np.zeros((n_per_process, len(LABEL_NAMES)), np.float32),
                  "weight": np.ones(n_per_process, np.float32), "event_id": np.arange(n_per_process, dtype=np.int64)}
        write_shard(root / name / shard_name(0), arrays, {"process_name": name, "process_names": [name],
                                                          "seed": seed + p, "shard_index": 0})
    write_manifest(root)
    return root


def one_shard_per_process_store(root: Path, processes: int, events: int) -> Path:
    """A store of ``processes`` processes ``p00``, ``p01``, ..., each one shard of ``events`` random single-object
    events (the layout of a large store generated process by process); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for p in range(processes):
        name = f"p{p:02d}"
        (root / name).mkdir(parents=True)
        objects = np.zeros((events, 2, 7), np.float32)
        objects[:, 0, :4] = rng.random((events, 4))
        objects[:, 0, TYPE] = TYPE_CODES["jet"]
        arrays = {"objects": objects, "n_objects": np.ones(events, np.int64), "n_dropped": np.zeros(events, np.int32),
                  "process": np.zeros(events, np.int32), "weight": np.ones(events, np.float32),
                  "event_id": np.arange(events, dtype=np.int64)}
        write_shard(root / name / shard_name(0), arrays, {"process_name": name, "process_names": [name],
                                                          "seed": p + 1, "shard_index": 0})
    write_manifest(root)
    return root


#: The origin codes of :func:`multi_task_store` (a generated store names its own in ``origin_names``).
TOY_ORIGIN_NAMES = ("none", "top_b", "w_from_top", "w")
#: The heavy-particle columns of :func:`multi_task_store`.
TOY_HEAVY_NAMES = tuple(f"{p}_{c}" for p in ("top1", "w1") for c in ("exists", "pt", "eta", "phi", "m"))


def toy_origins(objects: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Origin codes [n, M] (int8, -1 on padding) of toy events: b-tagged jets ``top_b``, leptons ``w_from_top``,
    other jets above 60 GeV ``w``, the rest ``none``."""
    kind, btag, pt = objects[..., TYPE], objects[..., 4], objects[..., 0]
    jet, lepton = kind == TYPE_CODES["jet"], np.isin(kind, [TYPE_CODES["electron"], TYPE_CODES["muon"]])
    origin = np.select([jet & (btag > 0.5), lepton, jet & (pt > 60.0)], [1, 2, 3], 0).astype(np.int8)
    origin[np.arange(objects.shape[1])[None, :] >= counts[:, None]] = -1
    return origin


def toy_heavy(objects: np.ndarray, counts: np.ndarray, hard: bool, rng: np.random.Generator) -> np.ndarray:
    """Heavy-particle truth [n, 10] (:data:`TOY_HEAVY_NAMES`): a 'top' in hard events, a 'W' where a lepton is."""
    n = len(objects)
    out = np.zeros((n, len(TOY_HEAVY_NAMES)), np.float32)
    lead = objects[:, 0]
    lepton = np.isin(objects[..., 6], [TYPE_CODES["electron"], TYPE_CODES["muon"]]).any(axis=1)
    for k, exists in enumerate((np.full(n, hard), lepton)):
        col = 5 * k
        out[:, col] = exists
        out[:, col + 1] = np.where(exists, lead[:, 0] * (1.5 - 0.5 * k), 0.0)
        out[:, col + 2] = np.where(exists, lead[:, 1], 0.0)
        out[:, col + 3] = np.where(exists, lead[:, 2], 0.0)
        out[:, col + 4] = np.where(exists, (172.5, 80.4)[k] + rng.normal(0, 2, n), 0.0)
    return out


def multi_task_store(root: Path, n_per_class: int = 300, seed: int = 0, shards: int = 1) -> Path:
    """A :func:`toy_store` whose shards also hold ``origin`` and ``heavy`` (see the module docstring)."""
    root = toy_store(root, n_per_class, seed, shards)
    for path in shard_paths(root):
        with h5py.File(path, "a") as f:
            objects, counts = f["objects"][:], f["n_objects"][:]
            hard = f.attrs["process_name"] == "hard"
            f.create_dataset("origin", data=toy_origins(objects, counts))
            f.create_dataset("heavy", data=toy_heavy(objects, counts, hard, np.random.default_rng(seed + hard)))
            f.attrs["origin_names"] = json.dumps(list(TOY_ORIGIN_NAMES))
            f.attrs["heavy_names"] = json.dumps(list(TOY_HEAVY_NAMES))
    write_manifest(root)
    EventStore(root)
    return root
