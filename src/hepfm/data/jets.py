"""Jets for jet tagging: the stored jets' constituents as tensors, labelled by truth flavour and split.

:func:`jet_tagging_data` reads every stored jet (object slots of type jet) of a store generated with
``--constituents K``, with its constituents [K, 6] and truth flavour, and splits the jets into train,
validation and test by their *event*, with the per-event hash of :func:`hepfm.data.identity.assign_splits`
(the split of the event-level tasks), so that jets of one event never sit on both sides. The classes are
the flavours present in the store (unmatched jets are left out).

Padding: a :class:`JetData` is sorted by constituent count, and a training epoch shuffles the jets, cuts
the permutation into groups of ``BUCKET_BATCHES`` batches, sorts each group by count, batches it and
shuffles the batch order; every batch is trimmed to its largest count. The padded slots of such batches
are a few percent of the real ones (:func:`padding_fraction`), and the DeepSets model packs the real
constituents and computes no padding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hepfm.data.datasets import epoch_permutation, open_for_training, read_shard, trimmed
from hepfm.data.identity import TEST, TRAIN, VAL, assign_splits, shard_identity
from hepfm.errors import HepfmError
from hepfm.io.schema import JET_FLAVOURS, is_type
from hepfm.io.store import read_attrs

#: Batches whose jets are sorted by constituent count together (bucketing window).
BUCKET_BATCHES = 16
_FLAVOUR_NAMES = {v: k for k, v in JET_FLAVOURS.items()}
_NOT_CLASSES = (JET_FLAVOURS["none"], JET_FLAVOURS["unmatched"])


@dataclass
class JetData:
    """Jets as tensors: constituents ``x`` [N, K, 6], counts ``n_constituents`` [N], class index ``y`` [N]."""

    x: torch.Tensor
    n_constituents: torch.Tensor
    y: torch.Tensor
    seen: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.n_constituents)

    def sorted_by_count(self) -> JetData:
        """The same jets ordered by constituent count (contiguous batches then carry little padding)."""
        order = torch.argsort(self.n_constituents, stable=True)
        return JetData(self.x[order], self.n_constituents[order], self.y[order])

    def to(self, device) -> JetData:
        """A copy on ``device``."""
        return JetData(self.x.to(device), self.n_constituents.to(device), self.y.to(device))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, mask, y) of the jets at ``index``, trimmed to their largest constituent count."""
        return (*trimmed(self.x, self.n_constituents, index), self.y[index])

    def batch_indices(self, epoch: int, seed: int, batch_size: int) -> list[torch.Tensor]:
        """The batches of ``epoch`` (a function of seed and epoch only), bucketed by constituent count."""
        perm = epoch_permutation(len(self), seed, epoch).to(self.x.device)
        window = batch_size * BUCKET_BATCHES
        batches = []
        for start in range(0, len(perm), window):
            group = perm[start:start + window]
            group = group[torch.argsort(self.n_constituents[group], stable=True)]
            batches += list(torch.split(group, batch_size))
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed * 7_919 + epoch + 1))
        return [batches[i] for i in order.tolist()]

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1, start: int = 0):
        """Yield (global batch size, x, mask, y) for this process's slice of each batch (see the module doc)."""
        for index in self.batch_indices(epoch, seed, batch_size)[start:]:
            yield (len(index), *self.batch(index[rank::world]))


def padding_fraction(data: JetData, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Padded slots per real constituent in one training epoch: (bucketed batches, unsorted batches)."""
    n = data.n_constituents
    real = float(n.sum())
    bucketed = sum(len(b) * int(n[b].max()) for b in data.batch_indices(0, seed, batch_size))
    perm = epoch_permutation(len(data), seed, 0)
    plain = sum(len(b) * int(n[b].max()) for b in torch.split(perm, batch_size))
    return (bucketed - real) / real, (plain - real) / real


def _read_jets(store, shard: dict, rows: int, split_seed: int, chunk: int = 4096):
    """Constituents, counts, flavours and split codes of the flavoured jets in the first ``rows`` events of a
    shard, read ``chunk`` events at a time (a 50k-event shard's dense constituents would take ~0.75 GB)."""
    key = shard_identity(store, shard)
    out = []
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        arrays = read_shard(store, shard, ("objects", "constituents", "n_constituents", "jet_flavour"), start, stop)
        is_jet = is_type(arrays["objects"], "jet")
        flavour = arrays["jet_flavour"]
        ev, slot = np.nonzero(is_jet & ~np.isin(flavour, _NOT_CLASSES))
        split = assign_splits(split_seed, key, np.arange(start, stop))[ev]
        out.append((arrays["constituents"][ev, slot], arrays["n_constituents"][ev, slot], flavour[ev, slot], split))
    return tuple(np.concatenate(a) for a in zip(*out, strict=True))


def jet_tagging_data(path: str | Path, split_seed: int = 0, max_events: int | None = None,
                     classes: list[str] | None = None) -> tuple[dict[str, JetData], list[str]]:
    """Train/val/test :class:`JetData` of every stored jet of a store with constituents, and the class names.

    ``classes`` (flavour names, e.g. ``["light", "b"]``) restricts the jets to those flavours; by default
    every flavour present. ``max_events`` reads at most that many events per process.
    """
    store, _, used = open_for_training(path, max_events)
    missing = [s["path"] for s, _ in used if "max_constituents" not in read_attrs(store.root / s["path"])]
    if missing:
        raise HepfmError(f"{store.root}: jet tagging needs jet constituents, and {missing[0]} has none; "
                         "generate (or convert from Delphes) the store with K constituents per jet")
    parts = [_read_jets(store, s, n, split_seed) for s, n in used]
    widths = {p[0].shape[1] for p in parts}
    if len(widths) > 1:
        raise HepfmError(f"{store.root}: its shards keep different numbers of constituents per jet ({sorted(widths)})")
    x, n, flavour, split = (np.concatenate(a) for a in zip(*parts, strict=True))
    present = sorted(set(np.unique(flavour).tolist()))
    if classes is None:
        codes = present
    else:
        unknown = [c for c in classes if c not in JET_FLAVOURS or JET_FLAVOURS[c] in _NOT_CLASSES]
        if unknown:
            raise HepfmError(f"unknown jet flavour(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(k for k, v in JET_FLAVOURS.items() if v not in _NOT_CLASSES)}")
        codes = sorted(JET_FLAVOURS[c] for c in classes)
        absent = [_FLAVOUR_NAMES[c] for c in codes if c not in present]
        if absent:
            raise HepfmError(f"{store.root}: no jets of flavour {', '.join(absent)}")
    if len(codes) < 2:
        raise HepfmError(f"{store.root}: jet tagging needs jets of two flavours or more, found "
                         f"{', '.join(_FLAVOUR_NAMES[c] for c in codes) or 'none'}")
    keep = np.isin(flavour, codes)
    lookup = np.full(max(JET_FLAVOURS.values()) + 1, -1, dtype=np.int64)
    lookup[codes] = np.arange(len(codes))
    x, n, y, split = x[keep], n[keep], lookup[flavour[keep]], split[keep]
    splits = {}
    for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        sel = split == code
        splits[name] = JetData(torch.from_numpy(np.ascontiguousarray(x[sel])),
                               torch.from_numpy(n[sel].astype(np.int64)), torch.from_numpy(y[sel])).sorted_by_count()
    return splits, [_FLAVOUR_NAMES[c] for c in codes]
