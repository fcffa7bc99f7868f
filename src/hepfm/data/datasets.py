"""Labelled, split, in-memory datasets built from event stores.

* :func:`open_source` accepts an event store folder or one process sub-folder of it (``DIR/wh``).
* :func:`pretraining_split` — all events of a store, labelled by process (multiclass) or by the 41 truth
  labels (multilabel), split into disjoint train/validation/test parts by the per-event hash of
  :func:`hepfm.data.identity.assign_splits` (the same split as the streamed path).
* :func:`multi_task_split` — the same split, with the targets of several heads (process, truth labels,
  per-object origins, heavy-particle kinematics) as named targets of :class:`EventData`.
* :func:`binary_split` — a signal and a background source; per class a fixed test set and a validation
  set (drawn with ``split_seed`` only, so every training seed and size sees the same test events) and
  a training subset of ``train_size`` events drawn with ``seed`` from the rest (or, with ``block = k``,
  the k-th run of validation + training events, so different blocks never share an event).

Every store opened here is checked first (:mod:`hepfm.data.integrity`: shard sizes and checksums, and
non-finite values in the events read).

An :class:`EventData` holds ``x`` [N, M, 7], ``n_objects`` [N] and targets ``y`` as tensors, so the
training loop indexes them directly (on the GPU when they fit) without per-event Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hepfm.data.identity import DEFAULT_FRACTIONS, TEST, TRAIN, VAL, assign_splits, seen_in_pretraining, shard_identity
from hepfm.data.integrity import DamagedStoreError, check_finite, verify_shards
from hepfm.data.pretraining import EVENT_PRETRAINING_TASKS, HEADS
from hepfm.errors import HepfmError
from hepfm.io.schema import FEATURES, READABLE_SCHEMA_VERSIONS
from hepfm.io.store import MANIFEST, SHARD_GLOB, EventStore, read_attrs
from hepfm.physics.truth import LABEL_NAMES


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training events in ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def trimmed(x: torch.Tensor, n: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``index`` of padded sets ``x`` [N, width, F] with ``n`` [N] real entries, cut to the longest of them,
    and their mask."""
    n = n[index]
    width = max(int(n.max()), 1) if len(index) else 1
    rows = x[index, :width]
    return rows, torch.arange(width, device=x.device)[None, :] < n[:, None]


#: Value of an object slot without a per-object target (padding): per-object losses and metrics skip it.
NO_TARGET = -1


@dataclass
class EventData:
    """Events as tensors: stored rows, object counts and targets (long classes or float labels).

    A multi-head task's data also hold named ``targets``: per-event tensors [N, ...] and per-object tensors
    [N, width] aligned with the object slots of ``x`` (names in ``object_targets``, :data:`NO_TARGET` on
    padding). Batches of such data give the dict {name: that head's targets}, per-object ones trimmed with the
    objects; without named targets batches give ``y``.
    """

    x: torch.Tensor
    n_objects: torch.Tensor
    y: torch.Tensor
    seen: np.ndarray | None = None  # per event: trained or validated on by the pretrained model (when checked)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    object_targets: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.n_objects)

    def _with(self, x, n_objects, y, seen, targets) -> EventData:
        return EventData(x, n_objects, y, seen, targets, self.object_targets)

    def subset(self, index) -> EventData:
        """The events at ``index`` (a tensor or array of positions)."""
        index = torch.as_tensor(index, device=self.x.device)
        seen = None if self.seen is None else self.seen[index.cpu().numpy()]
        return self._with(self.x[index], self.n_objects[index], self.y[index], seen,
                          {k: v[index] for k, v in self.targets.items()})

    def to(self, device) -> EventData:
        """A copy on ``device``."""
        return self._with(self.x.to(device), self.n_objects.to(device), self.y.to(device), self.seen,
                          {k: v.to(device) for k, v in self.targets.items()})

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | dict]:
        """(x, mask, targets) for the events at ``index``, trimmed to the largest multiplicity among them; the
        targets are ``y`` or, with named targets, their dict."""
        x, mask = trimmed(self.x, self.n_objects, index)
        if not self.targets:
            return x, mask, self.y[index]
        width = x.shape[1]
        return x, mask, {k: v[index, :width] if k in self.object_targets else v[index]
                         for k, v in self.targets.items()}

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
        seen = None if any(p.seen is None for p in parts) else np.concatenate([p.seen for p in parts])
        first = parts[0]
        targets = {k: torch.cat([pad_slots(p.targets[k], width) if k in first.object_targets else p.targets[k]
                                 for p in parts]) for k in first.targets}
        return EventData(torch.cat(xs), torch.cat([p.n_objects for p in parts]), torch.cat([p.y for p in parts]),
                         seen, targets, first.object_targets)


def pad_slots(t: torch.Tensor, width: int) -> torch.Tensor:
    """Per-object targets [N, w] padded with :data:`NO_TARGET` to ``width`` object slots."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=NO_TARGET)


def open_source(path: str | Path) -> tuple[EventStore, list[str] | None]:
    """An event store and the processes to use: a store folder (all processes) or one process sub-folder."""
    path = Path(path)
    if not path.exists():
        raise HepfmError(f"{path}: no such event store folder")
    if not (path / MANIFEST).exists() and any(path.glob(SHARD_GLOB)):
        store = EventStore(path.parent)
        return store, [path.name]
    return EventStore(path), None


def check_sources(signal: str | Path, background: str | Path) -> None:
    """Refuse a signal and a background that share a process of the same store (e.g. ``S`` and ``S/zh``)."""
    (s_store, s_proc), (b_store, b_proc) = open_source(signal), open_source(background)
    if s_store.root.resolve() != b_store.root.resolve():
        return
    shared = set(s_proc or s_store.process_names) & set(b_proc or b_store.process_names)
    if shared:
        raise HepfmError(f"signal {signal} and background {background} share the process(es) "
                         f"{', '.join(sorted(shared))} of {s_store.root}; give disjoint process folders (DIR/NAME)")


def check_schema(store: EventStore) -> None:
    """Refuse stores whose schema version or feature columns differ from what the models expect."""
    attrs = store.attrs()
    version = attrs.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise HepfmError(f"{store.root}: event-store schema version {version}, this hepfm reads "
                         f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}")
    features = attrs.get("features")
    if list(features or []) != list(FEATURES):
        raise HepfmError(f"{store.root}: stored features {features} differ from the expected {list(FEATURES)}")


def used_shards(store: EventStore, processes: list[str], max_events: int | None) -> list[tuple[dict, int]]:
    """(shard, rows used) of the used processes, in manifest order: the first ``max_events`` of each process."""
    left = {p: max_events if max_events else math.inf for p in processes}
    out = []
    for s in store.shards:
        n = min(s["n_events"], left.get(s["process"], 0))
        if n > 0:
            left[s["process"]] -= n
            out.append((s, int(n)))
    return out


def open_for_training(path: str | Path, max_events: int | None = None):
    """(store, processes, used shards) of a store or process folder, schema and shard checksums verified."""
    store, processes = open_source(path)
    check_schema(store)
    processes = list(processes or store.process_names)
    used = used_shards(store, processes, max_events)
    verify_shards(store, [s for s, _ in used])
    return store, processes, used


def read_shard(store: EventStore, shard: dict, fields, start: int = 0, stop: int | None = None) -> dict:
    """Rows [start, stop) of one shard, as a damaged-store error naming the file when unreadable or non-finite."""
    path = store.root / shard["path"]
    try:
        arrays = store.read_rows(shard, fields, start, stop)
    except (OSError, KeyError, ValueError) as exc:
        raise DamagedStoreError(f"{path}: unreadable shard ({exc}); delete it and regenerate it") from None
    check_finite(path, arrays, start)
    return arrays


def read_events(path: str | Path, fields: tuple[str, ...],
                max_events: int | None = None) -> tuple[dict, EventStore, list, list[str]]:
    """Arrays of ``fields`` for every used process of a store or process folder (at most ``max_events`` each),
    with the store, the process list and the shard identities; schema, checksums and shapes checked.

    The arrays also hold each event's ``shard`` (index into the identities) and ``row`` in its shard.
    """
    store, processes, used = open_for_training(path, max_events)
    parts, keys = [], []
    for s, n in used:
        arrays = read_shard(store, s, fields, 0, n)
        if arrays["objects"].ndim != 3 or arrays["objects"].shape[2] != len(FEATURES):
            raise HepfmError(f"{store.root / s['path']}: objects have shape {arrays['objects'].shape}, "
                             f"expected [n, M, {len(FEATURES)}]")
        arrays["shard"] = np.full(n, len(keys), np.int32)
        arrays["row"] = np.arange(n, dtype=np.int64)
        keys.append(shard_identity(store, s))
        parts.append(arrays)
    if not parts:
        raise HepfmError(f"{path}: the event store holds no events")
    width = max(a["objects"].shape[1] for a in parts)
    for a in parts:
        if a["objects"].shape[1] < width:
            a["objects"] = np.pad(a["objects"], ((0, 0), (0, width - a["objects"].shape[1]), (0, 0)))
        if "origin" in a and a["origin"].shape[1] < width:
            a["origin"] = np.pad(a["origin"], ((0, 0), (0, width - a["origin"].shape[1])), constant_values=NO_TARGET)
    out = {k: np.concatenate([a[k] for a in parts]) for k in parts[0]}
    return out, store, processes, keys


def split_codes(arrays: dict, keys: list[str], split_seed: int, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """The hash split code of every event read by :func:`read_events`."""
    codes = np.empty(len(arrays["row"]), np.int8)
    for i, k in enumerate(keys):
        at = np.flatnonzero(arrays["shard"] == i)
        codes[at] = assign_splits(split_seed, k, arrays["row"][at], fractions)
    return codes


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
                      fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                      max_events: int | None = None) -> tuple[dict[str, EventData], list[str]]:
    """Train/val/test datasets of a store for ``task`` and the class/label names.

    'multiclass' and 'masked' label events by process ('masked' ignores the labels: its targets are made
    at batch time, so a one-process store, e.g. converted real data, is fine); 'multilabel' by the 41 truth
    labels.
    """
    if task not in EVENT_PRETRAINING_TASKS:
        raise HepfmError(f"unknown pretraining task {task!r}; choose {', '.join(EVENT_PRETRAINING_TASKS)}")
    assign_splits(0, "", [], fractions)  # validate the fractions before reading
    fields = ("objects", "n_objects", "process") + (("truth",) if task == "multilabel" else ())
    arrays, store, processes, keys = read_events(path, fields, max_events)
    if task != "multilabel":  # multiclass and masked label events by process
        # Class indices follow the processes actually used, whatever the store's full list is.
        remap = np.array([processes.index(n) if n in processes else -1 for n in store.process_names])
        y = remap[arrays["process"]].astype(np.int64)
        names = list(processes)
        if len(names) < 2 and task == "multiclass":
            raise HepfmError(f"{path}: multiclass pretraining needs at least two processes, found {names}")
    else:
        if "truth" not in arrays:
            raise HepfmError(f"{path}: the store has no truth labels (real data?), so it cannot be used for "
                             "multilabel pretraining")
        y = arrays["truth"].astype(np.float32)
        names = list(LABEL_NAMES)
        if y.shape[1] != len(names):
            raise HepfmError(f"{path}: truth has {y.shape[1]} labels, expected {len(names)}")
    data = _tensors(arrays, y)
    codes = split_codes(arrays, keys, split_seed, fractions)
    parts = {"train": TRAIN, "val": VAL, "test": TEST}
    return {k: data.subset(np.flatnonzero(codes == c)) for k, c in parts.items()}, names


#: Shard attribute naming the codes of the ``origin`` dataset, and of the columns of ``heavy``, for each head.
TRUTH_TABLES = {"origin": "origin_names", "heavy": "heavy_names"}


def truth_names(store: EventStore, used: list, head: str) -> list[str]:
    """The origin codes or heavy-particle columns of the used shards (their attribute, the same in all); a store
    written before they existed is refused, naming it."""
    key, found = TRUTH_TABLES[head], set()
    for s, _ in used:
        names = read_attrs(store.root / s["path"]).get(key)
        if not isinstance(names, list) or not names:
            what = "per-object origins" if head == "origin" else "heavy-particle kinematics"
            raise HepfmError(f"{store.root}: shard {s['path']} has no {what} (a store written before schema "
                             f"version 2); the {head} head needs them: regenerate the store with this hepfm")
        found.add(tuple(map(str, names)))
    if len(found) > 1:
        raise HepfmError(f"{store.root}: its shards name their {key} differently; regenerate them alike")
    return list(found.pop())


def check_heads(heads) -> list[str]:
    """``heads`` as a list, refused unless distinct names of :data:`HEADS`."""
    heads = list(heads)
    unknown = [h for h in heads if h not in HEADS]
    if unknown or not heads or len(set(heads)) != len(heads):
        raise HepfmError(f"multi-task heads must be distinct names from {', '.join(HEADS)}, got {heads}")
    return heads


def head_fields(heads) -> tuple[str, ...]:
    """The shard datasets the targets of ``heads`` are read from (besides objects and counts)."""
    return tuple(f for h, f in (("multilabel", "truth"), ("origin", "origin"), ("heavy", "heavy")) if h in heads)


def head_names(path, store: EventStore, processes: list[str], used: list, heads) -> dict[str, list[str]]:
    """Each head's class, label or column names (the masked head's are chosen by the workflow)."""
    names: dict[str, list[str]] = {h: truth_names(store, used, h) for h in heads if h in TRUTH_TABLES}
    if "multiclass" in heads:
        if len(processes) < 2:
            raise HepfmError(f"{path}: the multiclass head needs at least two processes, found {processes}")
        names["multiclass"] = list(processes)
    if "multilabel" in heads:
        names["multilabel"] = list(LABEL_NAMES)
    return names


def head_targets(path, arrays: dict, process: np.ndarray, heads, names: dict) -> dict[str, np.ndarray]:
    """Each head's targets of events read as ``arrays`` (with :func:`head_fields`) whose process indices are
    ``process``: see :func:`multi_task_split`. Origin codes beyond an event's objects become :data:`NO_TARGET`."""
    out: dict[str, np.ndarray] = {}
    for head in heads:
        if head == "multiclass":
            out[head] = process.astype(np.int64)
        elif head == "multilabel":
            if "truth" not in arrays or arrays["truth"].shape[1:] != (len(LABEL_NAMES),):
                raise HepfmError(f"{path}: the multilabel head needs the {len(LABEL_NAMES)} truth labels, and this "
                                 "store has none (real data?) or others")
            out[head] = arrays["truth"].astype(np.float32)
        elif head == "origin":
            origin = arrays["origin"]
            if origin.shape != arrays["objects"].shape[:2]:
                raise HepfmError(f"{path}: origin has shape {origin.shape}, expected {arrays['objects'].shape[:2]}")
            if origin.max(initial=0) >= len(names[head]) or origin.min(initial=0) < NO_TARGET:
                raise HepfmError(f"{path}: origin codes outside [-1, {len(names[head]) - 1}]")
            real = np.arange(origin.shape[1])[None, :] < arrays["n_objects"][:, None]
            out[head] = np.where(real, origin, NO_TARGET).astype(np.int64)
        elif head == "heavy":
            heavy = arrays["heavy"]
            if heavy.ndim != 2 or heavy.shape[1] != len(names[head]) or not np.isfinite(heavy).all():
                raise HepfmError(f"{path}: heavy has shape {heavy.shape} (expected [n, {len(names[head])}]) or "
                                 "non-finite values")
            out[head] = heavy.astype(np.float32)
    return out


def multi_task_split(path: str | Path, heads, split_seed: int = 0,
                     fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                     max_events: int | None = None) -> tuple[dict[str, EventData], dict[str, list[str]]]:
    """Train/val/test datasets of a store with the targets of each of ``heads`` (:data:`HEADS`), and each head's
    class, label or column names; the split is :func:`pretraining_split`'s.

    Targets: ``multiclass`` the process index, ``multilabel`` the 41 truth labels, ``origin`` the origin code of
    each object slot (per object; :data:`NO_TARGET` on padding), ``heavy`` the heavy particles' existence flags
    and kinematics; ``masked`` has none here (its targets are made at batch time). ``y`` holds the process index.
    """
    heads = check_heads(heads)
    assign_splits(0, "", [], fractions)
    store, processes, used = open_for_training(path, max_events)
    names = head_names(path, store, processes, used, heads)
    arrays, store, processes, keys = read_events(path, ("objects", "n_objects", "process") + head_fields(heads),
                                                 max_events)
    remap = np.array([processes.index(n) if n in processes else -1 for n in store.process_names])
    process = remap[arrays["process"]].astype(np.int64)
    targets = {k: torch.from_numpy(v) for k, v in head_targets(path, arrays, process, heads, names).items()}
    data = EventData(torch.from_numpy(np.ascontiguousarray(arrays["objects"], dtype=np.float32)),
                     torch.from_numpy(arrays["n_objects"].astype(np.int64)), torch.from_numpy(process),
                     targets=targets, object_targets=frozenset({"origin"} & set(targets)))
    codes = split_codes(arrays, keys, split_seed, fractions)
    parts = {"train": TRAIN, "val": VAL, "test": TEST}
    return {k: data.subset(np.flatnonzero(codes == c)) for k, c in parts.items()}, names


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


def with_constituents(objects: np.ndarray, constituents: np.ndarray) -> np.ndarray:
    """Object rows [n, M, 7] with each slot's constituents [n, M, K, 6] appended: [n, M, 7 + 6K], the input
    of the hierarchical model (:mod:`hepfm.models.hierarchical`)."""
    n, m = objects.shape[:2]
    return np.concatenate([objects, constituents.reshape(n, m, -1)], axis=2)


def stored_constituents(path: str | Path) -> int:
    """K, the constituents per jet kept in every shard of a store or process folder; an error if none."""
    store, processes = open_source(path)
    ks = {read_attrs(store.root / s["path"]).get("max_constituents") for s in store.shards
          if processes is None or s["process"] in processes}
    if None in ks or not ks:
        raise HepfmError(f"{path}: a hierarchical model needs jet constituents, and this store keeps none; "
                         "generate (or convert from Delphes) the events with K constituents per jet")
    if len(ks) > 1:
        raise HepfmError(f"{path}: its shards keep different numbers of constituents per jet ({sorted(ks)})")
    return ks.pop()


def _binary_classes(signal, background, plan: BinarySplitPlan, max_events, record=None, constituents=False):
    classes = []
    for p in (background, signal):
        fields = ("objects", "n_objects") + (("constituents",) if constituents else ())
        arrays, _, _, keys = read_events(p, fields, max_events)
        if constituents:
            arrays["objects"] = with_constituents(arrays["objects"], arrays.pop("constituents"))
        if record is not None:
            arrays["seen"] = seen_in_pretraining(record, keys, arrays["shard"], arrays["row"])
        classes.append(arrays)
    sizes = [len(c["objects"]) for c in classes]
    n_test = plan.test_size if plan.test_size is not None else int(min(sizes) * plan.test_fraction)
    if n_test < 1:
        raise HepfmError(f"too few events for a test set: {sizes[1]} signal, {sizes[0]} background")
    if n_test >= min(sizes):
        raise HepfmError(f"a test set of {n_test} events per class leaves no events for training "
                         f"({sizes[1]} signal, {sizes[0]} background)")
    data = [_tensors(a, np.full(len(a["objects"]), label, dtype=np.float32)) for label, a in enumerate(classes)]
    for d, a in zip(data, classes, strict=True):
        d.seen = a.get("seen")
    orders = [torch.randperm(len(d), generator=torch.Generator().manual_seed(plan.split_seed + label))
              for label, d in enumerate(data)]
    return data, orders, n_test


def binary_test_set(signal: str | Path, background: str | Path, plan: BinarySplitPlan,
                    max_events: int | None = None, record: list[dict] | None = None,
                    constituents: bool = False) -> EventData:
    """Only the fixed test set of :func:`binary_split` (it depends on ``split_seed`` and the test size only).

    With a pretraining ``record`` (:func:`hepfm.data.identity.pretraining_record`), ``seen`` marks the
    events that pretraining trained or validated on. ``constituents``: rows carry the jets' constituents
    (:func:`with_constituents`).
    """
    data, orders, n_test = _binary_classes(signal, background, plan, max_events, record, constituents)
    return EventData.concat([d.subset(o[:n_test]) for d, o in zip(data, orders, strict=True)])


def binary_split(signal: str | Path, background: str | Path, plan: BinarySplitPlan,
                 max_events: int | None = None, record: list[dict] | None = None,
                 constituents: bool = False) -> dict[str, EventData]:
    """Train/val/test datasets for signal (label 1) against background (label 0), balanced per class.

    With ``plan.block = k``, seed k trains and validates on the k-th run of events after the test events (in
    the ``split_seed`` order), so blocks never share an event; too small a pool is an error.
    ``record``, ``constituents``: see :func:`binary_test_set`.
    """
    data, orders, n_test = _binary_classes(signal, background, plan, max_events, record, constituents)
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
    if plan.block is not None and (plan.train_size is None or plan.block < 0):
        raise HepfmError(f"split plan: event block {plan.block} needs a training size and a block >= 0")
    for source, pool in ((signal, pools[1]), (background, pools[0])):
        if n_train + n_val > pool:
            raise HepfmError(f"{source}: a training size of {n_train} per class (+ {n_val} validation) needs "
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
        out["test"].append(d.subset(test))
        out["val"].append(d.subset(val))
        choice = torch.randperm(len(pool), generator=torch.Generator().manual_seed(plan.seed * 2 + label))
        out["train"].append(d.subset(pool[choice[:n_train]]))
    return {k: EventData.concat(v) for k, v in out.items()}
