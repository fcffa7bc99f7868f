"""The reconstructed-object record shared by the simulated detector and the real-data readers.

One definition of what an object is (the feature columns and type codes of the event store), of the
flat per-collection arrays the reconstruction works on (:class:`Objects`), of the within-event pairings
(isolation cones, overlap removal, matching) and of the final step that orders objects by type then
pT, truncates to M objects (softest jets first) and pads (:func:`assemble`). The detector
(:mod:`hepfm.physics.detector`) and the NanoAOD/Delphes readers (:mod:`hepfm.io`) both build on it, so
the two paths cannot drift apart; nothing here depends on :mod:`hepfm.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hepfm.physics import kinematics as kin

#: Columns of the ``objects`` array, in order. Energies are massless: E = pT cosh(eta).
FEATURES: tuple[str, ...] = ("pt", "eta", "phi", "energy", "btag", "charge", "type")
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}

#: Column indices of the ``objects`` array, by name: ``objects[..., BTAG]`` rather than a bare 4.
PT, ETA, PHI, ENERGY, BTAG, CHARGE, TYPE = (FEATURE_INDEX[k] for k in
                                            ("pt", "eta", "phi", "energy", "btag", "charge", "type"))

#: Object type codes stored in the ``type`` column; 0 marks padding rows (all-zero rows).
TYPE_CODES: dict[str, int] = {"padding": 0, "jet": 1, "electron": 2, "muon": 3, "photon": 4, "tau": 5, "met": 6}
TYPE_NAMES: dict[int, str] = {v: k for k, v in TYPE_CODES.items()}
#: A jet is b-tagged when its ``btag`` column exceeds this.
BTAG_THRESHOLD = 0.5

#: Default maximum number of objects per event (the M of x[B, M, F]).
DEFAULT_MAX_OBJECTS = 20

#: Columns of the optional ``constituents`` array [n, M, K, F] of jet constituents, in order: pT and E
#: [GeV] of the particle, its eta and phi minus the jet axis' (phi wrapped to [-pi, pi]), its electric
#: charge and its particle class.
CONSTITUENT_FEATURES: tuple[str, ...] = ("pt", "deta", "dphi", "energy", "charge", "class")
CONSTITUENT_INDEX = {name: i for i, name in enumerate(CONSTITUENT_FEATURES)}
#: Column index of the particle class in the ``constituents`` array (0 marks padding).
CONSTITUENT_CLASS = CONSTITUENT_INDEX["class"]
#: Particle class codes of the ``class`` column; 0 marks padding rows (all-zero rows).
CONSTITUENT_CLASSES: dict[str, int] = {"padding": 0, "charged_hadron": 1, "neutral_hadron": 2, "photon": 3,
                                       "electron": 4, "muon": 5}


def is_type(objects, *kinds: str):
    """Boolean [...]: which rows of ``objects`` [..., F] (NumPy or torch; F may extend the record) are of one
    of the named ``kinds`` (keys of :data:`TYPE_CODES`)."""
    kind = objects[..., TYPE]
    out = kind == TYPE_CODES[kinds[0]]
    for name in kinds[1:]:
        out = out | (kind == TYPE_CODES[name])
    return out


def b_tagged(objects):
    """Boolean [...]: which rows of ``objects`` [..., F] carry a b tag (:data:`BTAG_THRESHOLD`)."""
    return objects[..., BTAG] > BTAG_THRESHOLD


def constituent_counts(constituents):
    """Number of real constituents per jet of ``constituents`` [..., K, F] (padding rows have class 0)."""
    return (constituents[..., CONSTITUENT_CLASS] > 0).sum(-1)


def offsets(ev: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and counts per event of an event-sorted index array."""
    counts = np.bincount(ev, minlength=n_events)
    return np.cumsum(counts) - counts, counts


def same_event_pairs(ev_a: np.ndarray, ev_b: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with ev_a[i] == ev_b[j]; ``ev_b`` must be sorted."""
    start_b, count_b = offsets(ev_b, n_events)
    per_a = count_b[ev_a]
    ia = np.repeat(np.arange(len(ev_a)), per_a)
    first = np.repeat(np.cumsum(per_a) - per_a, per_a)
    ib = np.repeat(start_b[ev_a], per_a) + (np.arange(len(ia)) - first)
    return ia, ib


@dataclass
class Objects:
    """Flat arrays of one collection: event index, kinematics and extras (all the same length)."""

    ev: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    extra: dict = field(default_factory=dict)

    def __getitem__(self, mask) -> Objects:
        return Objects(self.ev[mask], self.pt[mask], self.eta[mask], self.phi[mask],
                       {k: v[mask] for k, v in self.extra.items()})

    def __len__(self) -> int:
        return len(self.ev)


def constituent_class(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """:data:`CONSTITUENT_CLASSES` code of particles: photon, electron and muon by PDG id, else charged or
    neutral hadron by charge."""
    aid = np.abs(np.asarray(pid, dtype=np.int64))
    hadron = np.where(np.asarray(charge) != 0, CONSTITUENT_CLASSES["charged_hadron"],
                      CONSTITUENT_CLASSES["neutral_hadron"])
    cls = hadron
    for name, code in (("photon", 22), ("electron", 11), ("muon", 13)):
        cls = np.where(aid == code, CONSTITUENT_CLASSES[name], cls)
    return cls


def jet_slots(source: np.ndarray, objects: np.ndarray, n_jets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(event, slot, row) of every jet slot of assembled ``objects``: ``source`` maps slots to rows of the
    collections given to :func:`assemble`, the jets first (``n_jets`` rows; a tau-tagged jet is another type)."""
    is_jet = (source >= 0) & (source < n_jets) & is_type(objects, "jet")
    ev, slot = np.nonzero(is_jet)
    return ev, slot, source[ev, slot]


def pack_constituents(flat_slot: np.ndarray, columns: dict[str, np.ndarray], n_events: int, m: int,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """Constituents as the store keeps them: ``constituents`` [n, M, K, F] and ``n_constituents`` [n, M].

    ``flat_slot`` (event * M + slot) names the jet slot of every constituent and ``columns`` its
    :data:`CONSTITUENT_FEATURES`; each jet keeps its ``k`` highest-pT constituents, in descending pT.
    """
    order = np.lexsort((-columns["pt"], flat_slot))
    flat_slot = flat_slot[order]
    rank = np.arange(len(flat_slot)) - np.searchsorted(flat_slot, flat_slot)
    fits = rank < k
    flat_slot, rank, order = flat_slot[fits], rank[fits], order[fits]
    cev, cslot = np.divmod(flat_slot, m)
    out = np.zeros((n_events, m, k, len(CONSTITUENT_FEATURES)), dtype=np.float32)
    for j, name in enumerate(CONSTITUENT_FEATURES):
        out[cev, cslot, rank, j] = columns[name][order]
    count = np.bincount(flat_slot, minlength=n_events * m).reshape(n_events, m).astype(np.int16)
    return out, count


def any_within(a: Objects, b: Objects, dr: float, n_events: int) -> np.ndarray:
    """Per object of ``a``: is any object of ``b`` in the same event within ``dr``?"""
    ia, ib = same_event_pairs(a.ev, b.ev, n_events)
    close = kin.delta_r(a.eta[ia], a.phi[ia], b.eta[ib], b.phi[ib]) < dr
    return np.bincount(ia[close], minlength=len(a)) > 0


def sum_pt_within(a: Objects, b: Objects, dr: float, n_events: int) -> np.ndarray:
    """Per object of ``a``: scalar pT sum of the ``b`` objects of its event within ``dr``."""
    ia, ib = same_event_pairs(a.ev, b.ev, n_events)
    close = kin.delta_r(a.eta[ia], a.phi[ia], b.eta[ib], b.phi[ib]) < dr
    return np.bincount(ia[close], weights=b.pt[ib[close]], minlength=len(a))


def in_crack(abs_eta: np.ndarray, crack) -> np.ndarray:
    """True inside the barrel-endcap transition (crack[0] < |eta| < crack[1])."""
    return (abs_eta > crack[0]) & (abs_eta < crack[1])


@dataclass
class ReconstructedEvents:
    """Detector-level objects of a batch: padded ``objects`` [n, M, F] and per-event counts.

    ``source`` [n, M] is, for every filled slot, the row of the object in the collections given to
    :func:`assemble` taken one after the other (-1 for padding); the jet constituents follow it. The
    optional constituent fields are filled by the detector when asked for (see
    :mod:`hepfm.physics.detector`).
    """

    objects: np.ndarray
    n_objects: np.ndarray
    n_dropped: np.ndarray
    source: np.ndarray | None = None
    #: [n, M] the row of the generator particle behind each electron, muon and photon slot in the batch's
    #: flat record (-1 for jets, MET and padding); set by the simulated detector.
    record_rows: np.ndarray | None = None
    constituents: np.ndarray | None = None
    n_constituents: np.ndarray | None = None


def assemble(collections: list[Objects], n_events: int, max_objects: int) -> ReconstructedEvents:
    """Order objects by type then descending pT, drop the softest jets beyond max_objects, and pad."""
    cols = {name: np.concatenate([getattr(c, name) for c in collections]) for name in ("ev", "pt", "eta", "phi")}
    for name in ("type", "btag", "charge"):
        cols[name] = np.concatenate([c.extra[name] for c in collections])
    cols["source"] = np.arange(len(cols["ev"]))
    order = np.lexsort((-cols["pt"], cols["type"], cols["ev"]))
    cols = {k: v[order] for k, v in cols.items()}
    ev, is_jet = cols["ev"], cols["type"] == TYPE_CODES["jet"]
    n_total = np.bincount(ev, minlength=n_events)

    rank = np.arange(len(ev)) - np.searchsorted(ev, ev)  # jets come first, so this is the jet rank too
    n_nonjet = np.bincount(ev[~is_jet], minlength=n_events)
    keep = ~is_jet | (rank < np.clip(max_objects - n_nonjet, 0, None)[ev])
    cols = {k: v[keep] for k, v in cols.items()}
    ev = cols["ev"]
    rank = np.arange(len(ev)) - np.searchsorted(ev, ev)
    fits = rank < max_objects  # only when an event has more than max_objects non-jet objects
    cols = {k: v[fits] for k, v in cols.items()}
    slot = rank[fits]

    objects = np.zeros((n_events, max_objects, len(FEATURES)), dtype=np.float32)
    cols["energy"] = kin.massless_energy(cols["pt"], cols["eta"])
    for j, name in enumerate(FEATURES):
        objects[cols["ev"], slot, j] = cols[name]
    source = np.full((n_events, max_objects), -1, dtype=np.int64)
    source[cols["ev"], slot] = cols["source"]
    n_objects = np.bincount(cols["ev"], minlength=n_events).astype(np.int32)
    return ReconstructedEvents(objects=objects, n_objects=n_objects, n_dropped=(n_total - n_objects).astype(np.int32),
                               source=source)
