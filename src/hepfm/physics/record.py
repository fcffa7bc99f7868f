"""Generator records as flat numpy arrays (one row per record entry, with an event index).

Pythia's ``nextBatch`` gives a jagged awkward array of event records; the detector and the truth
labels both work on the flattened form, which is built once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np


def flatten(a) -> np.ndarray:
    """One level of a jagged awkward array as a flat numpy array."""
    return ak.to_numpy(ak.flatten(a, axis=1))


@dataclass
class FlatRecord:
    """Flat record entries of a batch; ``ev`` is the event index, ``first`` the event's first row."""

    n_events: int
    ev: np.ndarray
    first: np.ndarray
    size: np.ndarray  # entries of the entry's event
    pid: np.ndarray
    status: np.ndarray
    daughter1: np.ndarray
    daughter2: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray

    @classmethod
    def from_batch(cls, prt) -> FlatRecord:
        """Flatten an awkward batch of records (fields id, status, daughter1/2, p.{px,py,pz,e})."""
        if isinstance(prt, cls):
            return prt
        counts = ak.to_numpy(ak.num(prt.id, axis=1)).astype(np.int64)
        n_events = len(counts)
        p = prt.p
        return cls(
            n_events=n_events,
            ev=np.repeat(np.arange(n_events), counts),
            first=np.repeat(np.cumsum(counts) - counts, counts),
            size=np.repeat(counts, counts),
            pid=flatten(prt.id), status=flatten(prt.status),
            daughter1=flatten(prt.daughter1), daughter2=flatten(prt.daughter2),
            px=flatten(p.px), py=flatten(p.py), pz=flatten(p.pz), e=flatten(p.e),
        )

    def daughter_rows(self, rows: np.ndarray, max_daughters: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(parent position in ``rows``, daughter row) pairs for the daughter range d1..d2 of each row.

        Pythia lists a decay's products contiguously from daughter1 to daughter2 (daughter2 = 0 or
        daughter1 means one daughter); indices outside the event are dropped.
        """
        d1, d2 = self.daughter1[rows], self.daughter2[rows]
        d2 = np.where(d2 > d1, d2, d1)
        parents, daughters = [], []
        for k in range(max_daughters):
            d = d1 + k
            ok = (d1 > 0) & (d <= d2) & (d < self.size[rows])
            parents.append(np.flatnonzero(ok))
            daughters.append(self.first[rows][ok] + d[ok])
        return np.concatenate(parents), np.concatenate(daughters)

    def last_copy(self) -> np.ndarray:
        """True for entries that are the last copy of their particle (no daughter with the same id).

        Index 0 is Pythia's "system" entry, so a daughter index of 0 never matches a real copy;
        out-of-range indices (incomplete records) are treated the same way. Computed once per record (the
        detector and every truth block ask for it).
        """
        cached = self.__dict__.get("_last_copy")
        if cached is not None:
            return cached
        same = np.zeros(len(self.pid), dtype=bool)
        for d in (self.daughter1, self.daughter2):
            valid = (d > 0) & (d < self.size)
            target = np.where(valid, self.first + d, 0)
            same |= valid & (self.pid[target] == self.pid)
        self.__dict__["_last_copy"] = ~same
        return ~same
