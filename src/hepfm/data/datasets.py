"""Labelled, split, in-memory datasets built from event stores.

* :func:`open_source` accepts an event store folder or one process sub-folder of it (``DIR/wh``).
* :func:`pretraining_split` — all events of a store, labelled by process (multiclass) or by the 41 truth
  labels (multilabel), split into disjoint train/validation/test parts with a seeded permutation.
* :func:`binary_split` — a signal and a background source; per class a fixed test set and a validation
  set (drawn with ``split_seed`` only, so every training seed and size sees the same test events) and
  a training subset of ``train_size`` events drawn with ``seed`` from the rest.

An :class:`EventData` holds ``x`` [N, M, 7], ``n_objects`` [N] and targets ``y`` as tensors, so the
training loop indexes them directly (on the GPU when they fit) without per-event Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hepfm.errors import HepfmError
from hepfm.io.schema import FEATURES, SCHEMA_VERSION
from hepfm.io.store import MANIFEST, SHARD_GLOB, EventStore
from hepfm.physics.truth import LABEL_NAMES


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training events in ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


@dataclass
class EventData:
    """Events as tensors: stored rows, object counts and targets (long classes or float labels)."""

    x: torch.Tensor
    n_objects: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.n_objects)

    def subset(self, index) -> EventData:
        """The events at ``index`` (a tensor or array of positions)."""
        index = torch.as_tensor(index, device=self.x.device)
        return EventData(self.x[index], self.n_objects[index], self.y[index])

    def to(self, device) -> EventData:
        """A copy on ``device``."""
        return EventData(self.x.to(device), self.n_objects.to(device), self.y.to(device))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, mask, y) for the events at ``index``, trimmed to the largest multiplicity among them."""
        n = self.n_objects[index]
        width = max(int(n.max()), 1) if len(index) else 1
        x = self.x[index, :width]
        mask = torch.arange(width, device=x.device)[None, :] < n[:, None]
        return x, mask, self.y[index]

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1,
                      start: int = 0):
        """Yield (global batch size, x, mask, y) for this process's slice of each batch of ``epoch``.

        The order is a function of (seed, epoch) only, so batch ``start`` of a resumed run is the batch
        the interrupted run would have seen. Process ``rank`` of ``world`` takes every world-th event.
        """
        perm = epoch_permutation(len(self), seed, epoch).to(self.x.device)
        for b in range(start, math.ceil(len(self) / batch_size)):
            index = perm[b * batch_size:(b + 1) * batch_size]
            yield (len(index), *self.batch(index[rank::world]))

    @staticmethod
    def concat(parts: list[EventData]) -> EventData:
        """Events of several datasets, in order."""
        width = max(p.x.shape[1] for p in parts)
        xs = [torch.nn.functional.pad(p.x, (0, 0, 0, width - p.x.shape[1])) for p in parts]
        return EventData(torch.cat(xs), torch.cat([p.n_objects for p in parts]), torch.cat([p.y for p in parts]))


def open_source(path: str | Path) -> tuple[EventStore, list[str] | None]:
    """An event store and the processes to use: a store folder (all processes) or one process sub-folder."""
    path = Path(path)
    if not path.exists():
        raise HepfmError(f"{path}: no such event store folder")
    if not (path / MANIFEST).exists() and any(path.glob(SHARD_GLOB)):
        store = EventStore(path.parent)
        return store, [path.name]
    return EventStore(path), None


def check_schema(store: EventStore) -> None:
    """Refuse stores whose schema version or feature columns differ from what the models expect."""
    attrs = store.attrs()
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HepfmError(f"{store.root}: event-store schema version {version}, this hepfm reads {SCHEMA_VERSION}")
    features = attrs.get("features")
    if list(features or []) != list(FEATURES):
        raise HepfmError(f"{store.root}: stored features {features} differ from the expected {list(FEATURES)}")


def read_events(path: str | Path, fields: tuple[str, ...],
                max_events: int | None = None) -> tuple[dict, EventStore, list]:
    """Arrays of ``fields`` for every used process of a store or process folder (at most ``max_events`` each),
    with the store and the process list; schema and shapes checked."""
    store, processes = open_source(path)
    check_schema(store)
    processes = processes or store.process_names
    parts = []
    for p in processes:
        arrays = store.head(max_events, [p], fields) if max_events else store.arrays([p], fields)
        if not arrays or len(arrays["objects"]) == 0:
            continue
        if arrays["objects"].ndim != 3 or arrays["objects"].shape[2] != len(FEATURES):
            raise HepfmError(f"{store.root}/{p}: objects have shape {arrays['objects'].shape}, "
                             f"expected [n, M, {len(FEATURES)}]")
        parts.append(arrays)
    if not parts:
        raise HepfmError(f"{path}: the event store holds no events")
    out = {k: np.concatenate([a[k] for a in parts]) for k in parts[0]}
    return out, store, processes


def _tensors(arrays: dict, y: np.ndarray) -> EventData:
    return EventData(torch.from_numpy(np.ascontiguousarray(arrays["objects"], dtype=np.float32)),
                     torch.from_numpy(arrays["n_objects"].astype(np.int64)), torch.from_numpy(y))


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Sizes of (train, validation, test) parts of ``n`` events for the given fractions."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    n_test = round(n * fractions[2])
    n_val = round(n * fractions[1])
    return n - n_val - n_test, n_val, n_test


def pretraining_split(path: str | Path, task: str, split_seed: int = 0,
                      fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                      max_events: int | None = None) -> tuple[dict[str, EventData], list[str]]:
    """Train/val/test datasets of a store for ``task`` ('multiclass' or 'multilabel') and the class/label names."""
    fields = ("objects", "n_objects", "process") + (("truth",) if task == "multilabel" else ())
    arrays, store, processes = read_events(path, fields, max_events)
    if task == "multiclass":
        # Class indices follow the processes actually used, whatever the store's full list is.
        remap = np.array([processes.index(n) if n in processes else -1 for n in store.process_names])
        y = remap[arrays["process"]].astype(np.int64)
        names = list(processes)
        if len(names) < 2:
            raise HepfmError(f"{path}: multiclass pretraining needs at least two processes, found {names}")
    elif task == "multilabel":
        if "truth" not in arrays:
            raise HepfmError(f"{path}: the store has no truth labels (real data?), so it cannot be used for "
                             "multilabel pretraining")
        y = arrays["truth"].astype(np.float32)
        names = list(LABEL_NAMES)
        if y.shape[1] != len(names):
            raise HepfmError(f"{path}: truth has {y.shape[1]} labels, expected {len(names)}")
    else:
        raise HepfmError(f"unknown pretraining task {task!r}; choose multiclass or multilabel")
    data = _tensors(arrays, y)
    n_train, n_val, _ = split_counts(len(data), fractions)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(split_seed))
    parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {k: data.subset(v) for k, v in parts.items()}, names


@dataclass(frozen=True)
class BinarySplitPlan:
    """How a binary (signal vs background) task is split; stored with every fine-tuned model."""

    train_size: int | None = None  # per class; None = everything left after test and validation
    test_fraction: float = 0.2
    test_size: int | None = None  # per class; overrides test_fraction
    val_fraction: float = 0.25  # validation events per class, as a fraction of the training size
    split_seed: int = 0
    seed: int = 0
    # Disjoint subsets per seed: block k takes the k-th run of (validation + training) events after the test
    # events, in the split_seed order, so blocks 0, 1, 2... never share an event. None: a random subset (seed).
    block: int | None = None


def _binary_classes(signal, background, plan: BinarySplitPlan, max_events):
    classes = [read_events(p, ("objects", "n_objects"), max_events)[0] for p in (background, signal)]
    sizes = [len(c["objects"]) for c in classes]
    n_test = plan.test_size if plan.test_size is not None else int(min(sizes) * plan.test_fraction)
    if n_test < 1:
        raise HepfmError(f"too few events for a test set: {sizes[1]} signal, {sizes[0]} background")
    if n_test >= min(sizes):
        raise HepfmError(f"a test set of {n_test} events per class leaves no events for training "
                         f"({sizes[1]} signal, {sizes[0]} background)")
    data = [_tensors(a, np.full(len(a["objects"]), label, dtype=np.float32)) for label, a in enumerate(classes)]
    orders = [torch.randperm(len(d), generator=torch.Generator().manual_seed(plan.split_seed + label))
              for label, d in enumerate(data)]
    return data, orders, n_test


def binary_test_set(signal: str | Path, background: str | Path, plan: BinarySplitPlan,
                    max_events: int | None = None) -> EventData:
    """Only the fixed test set of :func:`binary_split` (it depends on ``split_seed`` and the test size only)."""
    data, orders, n_test = _binary_classes(signal, background, plan, max_events)
    return EventData.concat([d.subset(o[:n_test]) for d, o in zip(data, orders, strict=True)])


def binary_split(signal: str | Path, background: str | Path, plan: BinarySplitPlan,
                 max_events: int | None = None) -> dict[str, EventData]:
    """Train/val/test datasets for signal (label 1) against background (label 0), balanced per class."""
    data, orders, n_test = _binary_classes(signal, background, plan, max_events)
    pools = [len(d) - n_test for d in data]
    if plan.train_size is not None:
        n_train = plan.train_size
        n_val = max(1, math.ceil(n_train * plan.val_fraction))
    else:
        n_val = max(1, int(min(pools) * plan.val_fraction / (1 + plan.val_fraction)))
        n_train = min(pools) - n_val
    if n_train < 1:
        raise HepfmError(f"empty training split: {len(data[1])} signal and {len(data[0])} background events "
                         f"leave none for training after {n_test} test events per class")
    for source, pool in ((signal, pools[1]), (background, pools[0])):
        if n_train + n_val > pool:
            raise HepfmError(f"{source}: --train-size {n_train} per class (+ {n_val} validation) needs "
                             f"{n_train + n_val} events besides the {n_test} test events, but only {pool} are left "
                             f"({pool + n_test} in all)")
    out: dict[str, list[EventData]] = {"train": [], "val": [], "test": []}
    if plan.block is not None:
        end = n_test + (plan.block + 1) * (n_train + n_val)
        for source, d in ((signal, data[1]), (background, data[0])):
            if end > len(d):
                raise HepfmError(f"{source}: block {plan.block} of {n_train} training + {n_val} validation events "
                                 f"per class needs {end} events, only {len(d)} exist")
    for label, (d, order) in enumerate(zip(data, orders, strict=True)):
        if plan.block is not None:
            start = n_test + plan.block * (n_train + n_val)
            out["test"].append(d.subset(order[:n_test]))
            out["val"].append(d.subset(order[start:start + n_val]))
            out["train"].append(d.subset(order[start + n_val:start + n_val + n_train]))
            continue
        test, val, pool = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        choice = torch.randperm(len(pool), generator=torch.Generator().manual_seed(plan.seed * 2 + label))
        out["test"].append(d.subset(test))
        out["val"].append(d.subset(val))
        out["train"].append(d.subset(pool[choice[:n_train]]))
    return {k: EventData.concat(v) for k, v in out.items()}
