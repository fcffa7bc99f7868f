"""Training on event stores larger than memory: shards read in chunks through a seeded shuffle buffer.

:class:`StreamingEvents` is a training source for :func:`hepfm.train.trainer.fit` (like
:class:`~hepfm.data.datasets.EventData`, but it holds at most a shuffle buffer and one chunk of events):

* **Split.** Every event gets a split (train/validation/test) from
  :func:`hepfm.data.identity.assign_splits`, a hash of (split seed, shard identity, row in the shard), the
  same as the in-memory path's, so no split needs the whole store in memory and the assignment does not
  depend on the chunking, the other shards, ``max_events`` or streaming. The train
  source yields train events only; :func:`held_out_splits` loads the (small) validation and test events
  into memory. ``len()`` is exact: the hash is computed from the manifest's counts, without reading.
* **Order.** Each epoch, the read units (chunks of at most ``chunk_size`` rows of one shard, and at most
  ``buffer_size / (2 x processes)`` rows, so the buffer always holds units of every process) are visited
  in a seeded order that interleaves the processes: round after round, one unit of each process that has
  units left, in a seeded order within the round. A store written process by process (one process per
  shard) therefore gives class-mixed batches; see ``benchmarks/stream_mixing.py``. A buffer of
  ``buffer_size`` events is filled, then every incoming event replaces a
  randomly drawn buffered event, which is emitted; at the end the buffer is emitted in a random order.
  Batches are consecutive runs of ``batch_size`` emitted events; process ``rank`` of ``world`` takes
  ``[rank::world]`` of each (every process reads all the data). Everything depends on (seed, epoch) only.
* **Resume.** ``start=k`` replays the shuffle on event ids only (hashes and random draws, no reads) up to
  batch k, then reads the events still buffered at that point (about ``buffer_size`` events, from the
  units they came from) and goes on reading normally: batches k.. equal those of an uninterrupted pass.
* **Memory.** At most ``buffer_size`` buffered events plus one chunk, plus the batch being assembled.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import h5py
import numpy as np
import torch

from hepfm.data.datasets import (
    NO_TARGET,
    EventData,
    check_heads,
    head_fields,
    head_names,
    head_targets,
    open_for_training,
    open_source,
    read_shard,
)
from hepfm.data.identity import TEST, TRAIN, VAL, assign_splits, pretraining_record, shard_identity
from hepfm.data.pretraining import EVENT_PRETRAINING_TASKS, MULTI_TASK
from hepfm.errors import HepfmError
from hepfm.io.schema import FEATURES
from hepfm.physics.truth import LABEL_NAMES


def _take(data: dict, index) -> dict:
    return {k: v[index] for k, v in data.items()}


def _put(buf: dict, index, data: dict) -> None:
    for k, v in data.items():
        buf[k][index] = v


def _cat(parts: list[dict]) -> dict:
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class _Layout:
    """The used shards of a store, cut into read units of at most ``chunk_size`` rows, and their labels."""

    def __init__(self, path, task: str, split_seed: int, fractions, max_events: int | None, chunk_size: int,
                 heads=()):
        if task not in (*EVENT_PRETRAINING_TASKS, MULTI_TASK):
            raise HepfmError(f"unknown pretraining task {task!r}; choose {', '.join(EVENT_PRETRAINING_TASKS)}")
        self.heads = check_heads(heads) if task == MULTI_TASK else []
        if chunk_size <= 0:
            raise HepfmError(f"chunk size must be positive, got {chunk_size}")
        assign_splits(0, "", [], fractions)  # validate the fractions early
        self.store, self.processes, used = open_for_training(path, max_events)
        self.task, self.split_seed, self.fractions = task, split_seed, tuple(fractions)
        self.names = list(LABEL_NAMES) if task == "multilabel" else list(self.processes)
        if task == "multiclass" and len(self.names) < 2:
            raise HepfmError(f"{path}: multiclass pretraining needs at least two processes, found {self.names}")
        self.fields = ("objects", "n_objects") + (("truth",) if task == "multilabel" else ())
        if self.heads:
            self.names = head_names(path, self.store, self.processes, used, self.heads)
            self.fields = ("objects", "n_objects") + head_fields(self.heads)
        self.shards, self.used, units = [s for s, _ in used], used, []
        self.keys = [shard_identity(self.store, s) for s in self.shards]
        for i, (_, n) in enumerate(used):
            units += [(i, a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
        if not units:
            raise HepfmError(f"{path}: the event store holds no events")
        self.units = np.array(units, np.int64)
        self.first_id = np.concatenate([[0], np.cumsum(self.units[:, 2] - self.units[:, 1])])
        first = self.store.root / self.shards[0]["path"]
        with h5py.File(first, "r") as f:
            shape = f["objects"].shape
            if task == "multilabel" and "truth" not in f:
                raise HepfmError(f"{path}: the store has no truth labels (real data?), so it cannot be used for "
                                 "multilabel pretraining")
            if task == "multilabel" and f["truth"].shape[1:] != (len(LABEL_NAMES),):
                raise HepfmError(f"{path}: truth has {f['truth'].shape[1]} labels, expected {len(LABEL_NAMES)}")
        if len(shape) != 3 or shape[2] != len(FEATURES):
            raise HepfmError(f"{first}: objects have shape {shape}, expected [n, M, {len(FEATURES)}]")
        self.width = shape[1]

    def process(self, u: int) -> str:
        return self.shards[self.units[u, 0]]["process"]

    def codes(self, u: int) -> np.ndarray:
        """Split codes of the rows of unit ``u``."""
        shard, a, b = self.units[u]
        return assign_splits(self.split_seed, self.keys[shard], np.arange(a, b), self.fractions)

    def record(self) -> list[dict]:
        """The identity record of this layout's train+validation events."""
        return pretraining_record(self.store, self.used, self.split_seed, self.fractions)

    def empty(self, n: int) -> dict:
        y = np.zeros((n, len(LABEL_NAMES)), np.float32) if self.task == "multilabel" else np.zeros(n, np.int64)
        out = {"x": np.zeros((n, self.width, len(FEATURES)), np.float32), "n": np.zeros(n, np.int64), "y": y}
        if not self.heads:
            return out
        shapes = {"multiclass": ((n,), np.int64), "multilabel": ((n, len(LABEL_NAMES)), np.float32),
                  "origin": ((n, self.width), np.int64), "heavy": ((n, len(self.names.get("heavy", ()))), np.float32)}
        for head in self.heads:
            if head in shapes:
                shape, dtype = shapes[head]
                out[_TARGET + head] = np.full(shape, NO_TARGET if head == "origin" else 0, dtype)
        return out

    def read(self, u: int, rows: np.ndarray) -> dict:
        """x, n and y of ``rows`` (positions in unit ``u``, any order), reading one span of the shard."""
        shard, a, _ = self.units[u]
        s = self.shards[shard]
        lo = int(rows.min())
        raw = read_shard(self.store, s, self.fields, a + lo, a + int(rows.max()) + 1)
        take = rows - lo
        x = raw["objects"][take].astype(np.float32, copy=False)
        if x.shape[1] > self.width:
            raise HepfmError(f"{self.store.root}/{s['path']}: {x.shape[1]} object rows per event, but earlier "
                             f"shards have {self.width}; shards of one store must agree")
        if x.shape[1] < self.width:
            x = np.pad(x, ((0, 0), (0, self.width - x.shape[1]), (0, 0)))
        n = raw["n_objects"][take].astype(np.int64)
        if self.heads:
            y = np.full(len(take), self.processes.index(s["process"]), np.int64)
            arrays = {k: v[take] for k, v in raw.items()}
            if "origin" in arrays:
                arrays["origin"] = np.pad(arrays["origin"], ((0, 0), (0, self.width - arrays["origin"].shape[1])),
                                          constant_values=NO_TARGET)
            arrays["objects"] = x
            targets = head_targets(f"{self.store.root}/{s['path']}", arrays, y, self.heads, self.names)
            return {"x": x, "n": n, "y": y, **{_TARGET + k: v for k, v in targets.items()}}
        if self.task == "multilabel":
            y = raw["truth"][take].astype(np.float32)
        else:
            y = np.full(len(take), self.names.index(s["process"]), np.int64)
        return {"x": x, "n": n, "y": y}


#: Prefix of the buffer arrays holding a multi-task head's targets.
_TARGET = "target:"


def _targets(data: dict) -> dict[str, np.ndarray]:
    return {k[len(_TARGET):]: v for k, v in data.items() if k.startswith(_TARGET)}


def _event_data(parts: list[dict], layout: _Layout) -> EventData:
    data = _cat(parts) if parts else layout.empty(0)
    targets = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _targets(data).items()}
    return EventData(torch.from_numpy(np.ascontiguousarray(data["x"])), torch.from_numpy(data["n"]),
                     torch.from_numpy(data["y"]), targets=targets, object_targets=frozenset({"origin"} & set(targets)))


class StreamingEvents:
    """The train split of an event store, streamed from disk (see the module docstring).

    ``peak_buffered`` (events in the shuffle buffer) and ``peak_held`` (buffered events plus the chunk
    being read) record the largest values seen, for checking the memory bound.
    """

    def __init__(self, path: str | Path, task: str = "multiclass", split_seed: int = 0,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), buffer_size: int = 200_000,
                 chunk_size: int = 65_536, max_events: int | None = None, device="cpu", heads=()):
        if buffer_size < 1:
            raise HepfmError(f"shuffle buffer size must be positive, got {buffer_size}")
        if chunk_size <= 0:
            raise HepfmError(f"chunk size must be positive, got {chunk_size}")
        n_proc = len(open_source(path)[1] or open_source(path)[0].process_names)
        chunk_size = max(1, min(chunk_size, buffer_size // (2 * n_proc)))
        self.layout = _Layout(path, task, split_seed, fractions, max_events, chunk_size, heads)
        self.names = self.layout.names
        self.buffer_size, self.chunk_size = buffer_size, chunk_size
        self.device = torch.device(device)
        self._n = int(sum(np.count_nonzero(self.layout.codes(u) == TRAIN) for u in range(len(self.layout.units))))
        self.peak_buffered = self.peak_held = 0

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"StreamingEvents({str(self.layout.store.root)!r}, train events={self._n}, "
                f"buffer={self.buffer_size}, chunk={self.chunk_size})")

    def to(self, device) -> StreamingEvents:
        """The same source, delivering its batches on ``device``."""
        out = copy.copy(self)
        out.device = torch.device(device)
        return out

    def _note(self, buffered: int, chunk: int) -> None:
        self.peak_buffered = max(self.peak_buffered, buffered)
        self.peak_held = max(self.peak_held, buffered + chunk)

    def _materialise(self, ids: np.ndarray, count: int) -> dict:
        """Buffer arrays holding the events ``ids[:count]``, read unit by unit."""
        lay, buf = self.layout, self.layout.empty(len(ids))
        if count == 0:
            return buf
        held = ids[:count]
        units = np.searchsorted(lay.first_id, held, side="right") - 1
        order = np.argsort(units, kind="stable")
        for where in np.split(order, np.flatnonzero(np.diff(units[order])) + 1):
            u = int(units[where[0]])
            _put(buf, where, lay.read(u, held[where] - lay.first_id[u]))
            self._note(count, len(where))
        return buf

    def unit_order(self, epoch: int, seed: int) -> np.ndarray:
        """The epoch's read-unit order: processes interleaved round by round (see the module docstring)."""
        lay, rng = self.layout, np.random.default_rng([seed, epoch, 0])
        procs = np.array([lay.process(u) for u in range(len(lay.units))])
        queues = [rng.permutation(np.flatnonzero(procs == p)) for p in lay.processes]
        rank = np.empty(len(lay.units), np.float64)
        for q in queues:  # unit k of a process goes to round k, at a random place within the round
            rank[q] = np.arange(len(q)) + rng.random(len(q))
        return np.argsort(rank, kind="stable")

    def _stream(self, epoch: int, seed: int, batch_size: int, skip: int):
        """The epoch's train events in pieces of at most ``batch_size``, from stream position ``skip`` on."""
        lay = self.layout
        order = self.unit_order(epoch, seed)
        rng = np.random.default_rng([seed, epoch, 1])
        cap = max(1, min(self.buffer_size, len(self)))
        step = min(batch_size, cap)
        ids = np.zeros(cap, np.int64)  # which events are buffered, kept even while skipping
        count = pos = 0
        buf = self._materialise(ids, 0) if skip == 0 else None  # the events themselves, once not skipping
        for u in order:
            rows = np.flatnonzero(lay.codes(u) == TRAIN)
            if not len(rows):
                continue
            new = lay.first_id[u] + rows
            chunk = lay.read(u, rows) if buf is not None else None
            fill = min(cap - count, len(rows))
            ids[count:count + fill] = new[:fill]
            if buf is not None:
                _put(buf, slice(count, count + fill), _take(chunk, slice(0, fill)))
            count += fill
            self._note(count if buf is not None else 0, len(rows) if chunk is not None else 0)
            for a in range(fill, len(rows), step):
                b = min(a + step, len(rows))
                slots = rng.choice(cap, b - a, replace=False)
                if buf is None and pos + b - a > skip:
                    buf = self._materialise(ids, count)
                    chunk = lay.read(u, rows)
                    self._note(count, len(rows))
                if buf is not None:
                    yield _take(buf, slots[max(0, skip - pos):])
                    _put(buf, slots, _take(chunk, slice(a, b)))
                ids[slots] = new[a:b]
                pos += b - a
            chunk = None
        perm = rng.permutation(count)
        if buf is None and pos + count > skip:
            buf = self._materialise(ids, count)
        for a in range(max(0, skip - pos), count, step):
            yield _take(buf, perm[a:a + step])

    def _deliver(self, batch: dict, rank: int, world: int):
        n = batch["n"][rank::world]
        width = max(int(n.max()), 1) if len(n) else 1
        arrays = (batch["x"][rank::world, :width], n, batch["y"][rank::world])
        x, n, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        if self.device.type == "cuda":
            x, n, y = (t.pin_memory().to(self.device, non_blocking=True) for t in (x, n, y))
        elif self.device.type != "cpu":
            x, n, y = (t.to(self.device) for t in (x, n, y))
        mask = torch.arange(width, device=x.device)[None, :] < n[:, None]
        if self.layout.heads:
            y = {k: self._on_device(torch.from_numpy(np.ascontiguousarray(v[rank::world, :width] if k == "origin"
                                                                           else v[rank::world])))
                 for k, v in _targets(batch).items()}
        return len(batch["n"]), x, mask, y

    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t if self.device.type == "cpu" else t.to(self.device)

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1,
                      start: int = 0):
        """Yield (global batch size, x, mask, y) for this process's slice of each batch of ``epoch``.

        The sequence is a function of (seed, epoch) only; ``start`` skips batches (see the module
        docstring for what skipping costs).
        """
        pending, have = [], 0
        for piece in self._stream(epoch, seed, batch_size, start * batch_size):
            pending.append(piece)
            have += len(piece["n"])
            if have >= batch_size:
                data = _cat(pending)
                yield self._deliver(_take(data, slice(0, batch_size)), rank, world)
                pending, have = [_take(data, slice(batch_size, None))], have - batch_size
        if have:
            yield self._deliver(_cat(pending), rank, world)

    def sample(self, n_events: int = 200_000, seed: int = 0) -> EventData:
        """At most ``n_events`` train events in memory, for fitting the feature scaling.

        Windows of about ``n_events / 16`` rows (longer when the store has few units) from units visited
        in a seeded order, so several shards and processes contribute and not much more than ``n_events``
        events are read.
        """
        lay, rng = self.layout, np.random.default_rng([seed, 2])
        per_unit = 1.5 * n_events / max(len(lay.units) * lay.fractions[0], 1e-9)
        window = int(max(1, min(self.chunk_size, math.ceil(max(n_events / 16, per_unit)))))
        parts, have = [], 0
        for u in rng.permutation(len(lay.units)):
            codes = lay.codes(u)
            a = int(rng.integers(0, max(1, len(codes) - window + 1)))
            rows = (a + np.flatnonzero(codes[a:a + window] == TRAIN))[: n_events - have]
            if len(rows):
                parts.append(lay.read(u, rows))
                have += len(rows)
            if have >= n_events:
                break
        return _event_data(parts, lay)


def held_out_splits(source: StreamingEvents, max_events: int | None = None) -> dict[str, EventData]:
    """The validation and test events of ``source``'s store in memory, at most ``max_events`` per process each.

    One pass over the used shards, reading each unit at most once and stopping reading a process's
    shards once its quotas are full.
    """
    lay = source.layout
    left = {(p, c): max_events if max_events else math.inf for p in lay.processes for c in (VAL, TEST)}
    out: dict[int, list[dict]] = {VAL: [], TEST: []}
    for u in range(len(lay.units)):
        p = lay.process(u)
        if left[p, VAL] <= 0 and left[p, TEST] <= 0:
            continue
        codes = lay.codes(u)
        picked = {}
        for c in (VAL, TEST):
            rows = np.flatnonzero(codes == c)
            picked[c] = rows[: int(min(len(rows), left[p, c]))]
            left[p, c] -= len(picked[c])
        rows = np.concatenate([picked[VAL], picked[TEST]])
        if len(rows):
            data = lay.read(u, rows)
            out[VAL].append(_take(data, slice(0, len(picked[VAL]))))
            out[TEST].append(_take(data, slice(len(picked[VAL]), None)))
    return {"val": _event_data(out[VAL], lay), "test": _event_data(out[TEST], lay)}


def stream_pretraining_split(path: str | Path, task: str, split_seed: int = 0,
                             fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), buffer_size: int = 200_000,
                             max_events: int | None = None, *, chunk_size: int = 65_536,
                             max_eval_events: int | None = None, heads=()):
    """Like :func:`~hepfm.data.datasets.pretraining_split`, with the train split streamed from disk.

    Returns (train source, {"val": EventData, "test": EventData}, class or label names; for task ``multi``
    with ``heads``, each head's names: see :func:`~hepfm.data.datasets.multi_task_split`). ``max_events``
    caps the events used per process (the first ones, as there); ``max_eval_events`` also caps the
    validation and test events loaded per process.
    """
    train = StreamingEvents(path, task, split_seed, fractions, buffer_size, chunk_size, max_events, heads=heads)
    names = dict(train.names) if isinstance(train.names, dict) else list(train.names)
    return train, held_out_splits(train, max_eval_events), names


def pretraining_data_record(path: str | Path, split_seed: int, max_events: int | None,
                            fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[dict]:
    """The identity record of the train+validation events a pretraining run on ``path`` uses."""
    store, _, used = open_for_training(path, max_events)
    return pretraining_record(store, used, split_seed, fractions)


def in_memory_bytes(path: str | Path, max_events: int | None = None) -> tuple[int, int]:
    """(estimated bytes of the store's events as tensors: n_events x M x 7 x 4, bytes per event)."""
    store, _, used = open_for_training(path, max_events)
    n = sum(k for _, k in used)
    try:
        with h5py.File(store.root / used[0][0]["path"], "r") as f:
            per_event = int(np.prod(f["objects"].shape[1:])) * 4
    except (OSError, IndexError) as exc:
        raise HepfmError(f"{path}: cannot read the store's first shard ({exc})") from None
    return n * per_event, per_event
