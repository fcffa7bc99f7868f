"""The 41 multilabel truth targets of arXiv:2412.10665, computed from the generator record.

Definitions (the one place they live; the names are also written into every shard):

* 5 counts (regression): ``n_higgs`` (h, PDG 25), ``n_tops``, ``n_W``, ``n_Z`` (Z/gamma*, PDG 23) and
  ``n_V = n_W + n_Z``. Each physical particle is counted once, at its last copy in the record (after
  shower recoils, right before it decays), so W bosons from top and Higgs decays are counted too.
* For the leading Higgs, the leading top and the subleading top (by pT): an existence flag, one-hot pT
  bins (Higgs 0-30, 30-200, >200 GeV; tops 0-30, 30-300, >300 GeV), one-hot eta bins (edges -1.5, 0,
  1.5) and one-hot phi bins (edges -pi/2, 0, pi/2). All zeros when the particle is absent.

The truth flavour of every reconstructed jet (:func:`jet_flavours`, stored with jet constituents) is
defined here too.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepfm.physics import kinematics as kin
from hepfm.physics.objects import ETA, PHI, is_type, same_event_pairs
from hepfm.physics.record import FlatRecord

COUNT_LABELS: tuple[str, ...] = ("n_higgs", "n_tops", "n_V", "n_W", "n_Z")

HIGGS_PT_EDGES = (30.0, 200.0)
TOP_PT_EDGES = (30.0, 300.0)
ETA_EDGES = (-1.5, 0.0, 1.5)
PHI_EDGES = (-np.pi / 2, 0.0, np.pi / 2)

_PT_SUFFIX = {HIGGS_PT_EDGES: ("pt_0_30", "pt_30_200", "pt_200_inf"),
              TOP_PT_EDGES: ("pt_0_30", "pt_30_300", "pt_300_inf")}
_ETA_SUFFIX = ("eta_lt_m1.5", "eta_m1.5_0", "eta_0_1.5", "eta_gt_1.5")
_PHI_SUFFIX = ("phi_lt_mpi/2", "phi_mpi/2_0", "phi_0_pi/2", "phi_gt_pi/2")

_KINEMATIC_OBJECTS = (("higgs", HIGGS_PT_EDGES), ("top1", TOP_PT_EDGES), ("top2", TOP_PT_EDGES))


def _kinematic_names() -> list[str]:
    names = []
    for prefix, pt_edges in _KINEMATIC_OBJECTS:
        names.append(f"{prefix}_exists")
        names += [f"{prefix}_{s}" for s in _PT_SUFFIX[pt_edges]]
        names += [f"{prefix}_{s}" for s in _ETA_SUFFIX]
        names += [f"{prefix}_{s}" for s in _PHI_SUFFIX]
    return names


LABEL_NAMES: tuple[str, ...] = COUNT_LABELS + tuple(_kinematic_names())
#: "regression" (MSE) for the counts, "binary" (BCE) for the rest.
LABEL_KINDS: tuple[str, ...] = tuple("regression" if n in COUNT_LABELS else "binary" for n in LABEL_NAMES)
N_LABELS = len(LABEL_NAMES)
assert N_LABELS == 41


def _one_hot(values: np.ndarray, edges, present: np.ndarray) -> np.ndarray:
    bins = np.digitize(values, edges)
    out = np.zeros((len(values), len(edges) + 1), dtype=np.float32)
    out[np.arange(len(values)), bins] = 1.0
    out[~present] = 0.0
    return out


def _kinematic_block(pt_, eta_, phi_, present, pt_edges) -> np.ndarray:
    return np.concatenate(
        [present[:, None].astype(np.float32),
         _one_hot(pt_, pt_edges, present),
         _one_hot(eta_, ETA_EDGES, present),
         _one_hot(phi_, PHI_EDGES, present)],
        axis=1,
    )


def _nth_by_pt(ev, px, py, pz, n: int, n_events: int):
    """pT, eta, phi of the n-th hardest entry per event (zeros when absent) and a presence mask."""
    pts = kin.pt(px, py)
    order = np.lexsort((-pts, ev))
    ev, px, py, pz = ev[order], px[order], py[order], pz[order]
    rank = np.arange(len(ev)) - np.searchsorted(ev, ev)
    pick = rank == n
    present = np.zeros(n_events, dtype=bool)
    present[ev[pick]] = True
    x, y, z = (np.zeros(n_events) for _ in range(3))
    x[ev[pick]], y[ev[pick]], z[ev[pick]] = px[pick], py[pick], pz[pick]
    return kin.pt(x, y), kin.eta(x, y, z), kin.phi(x, y), present


def truth_labels(prt: ak.Array | FlatRecord) -> np.ndarray:
    """The [n_events, 41] float32 truth-label matrix for a batch of generator records."""
    rec = FlatRecord.from_batch(prt)
    n_events, ev = rec.n_events, rec.ev
    aid = np.abs(rec.pid)
    last = rec.last_copy() & np.isin(aid, (6, 23, 24, 25))

    def count(code):
        return np.bincount(ev[last & (aid == code)], minlength=n_events)

    n_h, n_t, n_w, n_z = count(25), count(6), count(24), count(23)
    blocks = [np.stack([n_h, n_t, n_w + n_z, n_w, n_z], axis=1).astype(np.float32)]

    px, py, pz = rec.px, rec.py, rec.pz
    for code, n, edges in ((25, 0, HIGGS_PT_EDGES), (6, 0, TOP_PT_EDGES), (6, 1, TOP_PT_EDGES)):
        sel = last & (aid == code)
        pt_, eta_, phi_, present = _nth_by_pt(ev[sel], px[sel], py[sel], pz[sel], n, n_events)
        blocks.append(_kinematic_block(pt_, eta_, phi_, present, edges))
    out = np.concatenate(blocks, axis=1)
    assert out.shape[1] == N_LABELS
    return out


# --------------------------------------------------------------------------------------- jet flavour

#: Truth flavour codes of the ``jet_flavour`` dataset [n, M] (aligned with the object slots). 0 marks a
#: slot that holds no jet; 1 a jet no parton of the record lies close to (rare: soft jets made of the
#: underlying event's remnants).
JET_FLAVOURS: dict[str, int] = {"none": 0, "unmatched": 1, "light": 2, "gluon": 3, "c": 4, "b": 5, "top": 6,
                                "wz": 7, "higgs": 8}
#: Partons with less transverse momentum do not give a jet its flavour (as for the b-tagging truth).
FLAVOUR_PARTON_MIN_PT = 1.0
_QUARK_OR_GLUON = (1, 2, 3, 4, 5, 21)


def _follow_copies(rec: FlatRecord, rows: np.ndarray, max_steps: int = 100) -> np.ndarray:
    """The last copy of each entry: Pythia lists a recoiling copy as the single daughter of the same id."""
    rows = rows.copy()
    for _ in range(max_steps):
        d = rec.daughter1[rows]
        target = rec.first[rows] + d
        step = (d > 0) & (d < rec.size[rows])
        step &= rec.pid[np.where(step, target, 0)] == rec.pid[rows]
        if not step.any():
            break
        rows[step] = target[step]
    return rows


def _hadronic_decays(rec: FlatRecord, code: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Last copies of particle ``code`` that decay to quarks/gluons, and the record rows of the decay
    products whose directions define containment (for a top: its b and its W's two quarks)."""
    rows = np.flatnonzero((np.abs(rec.pid) == code) & rec.last_copy())
    parent, child = rec.daughter_rows(rows)
    products = []
    if code == 6:
        is_b = np.abs(rec.pid[child]) == 5
        is_w = np.abs(rec.pid[child]) == 24
        ok = ((np.bincount(parent[is_b], minlength=len(rows)) == 1)
              & (np.bincount(parent[is_w], minlength=len(rows)) == 1))
        b_row = np.zeros(len(rows), dtype=np.int64)
        w_row = np.zeros(len(rows), dtype=np.int64)
        b_row[parent[is_b]], w_row[parent[is_w]] = child[is_b], child[is_w]
        w_last = _follow_copies(rec, w_row[ok])
        w_parent, w_child = rec.daughter_rows(w_last)
        hadronic = np.bincount(w_parent[np.isin(np.abs(rec.pid[w_child]), _QUARK_OR_GLUON)],
                               minlength=len(w_last)) == 2
        q = np.zeros((len(w_last), 2), dtype=np.int64)
        order = np.argsort(w_parent, kind="stable")
        w_parent, w_child = w_parent[order], w_child[order]
        n_d = np.bincount(w_parent, minlength=len(w_last))
        two = hadronic & (n_d == 2)
        start = np.cumsum(n_d) - n_d
        q[two, 0], q[two, 1] = w_child[start[two]], w_child[start[two] + 1]
        rows = rows[ok][two]
        products = [b_row[ok][two], q[two, 0], q[two, 1]]
        return rows, products
    aid = np.abs(rec.pid[child])
    n_d = np.bincount(parent, minlength=len(rows))
    n_had = np.bincount(parent[np.isin(aid, _QUARK_OR_GLUON)], minlength=len(rows))
    two = (n_d == 2) & (n_had == 2)
    order = np.argsort(parent, kind="stable")
    parent, child = parent[order], child[order]
    start = np.cumsum(n_d) - n_d
    return rows[two], [child[start[two]], child[start[two] + 1]]


def _contained(rec: FlatRecord, jet_ev, jet_eta, jet_phi, rows, products, radius: float, n_events: int) -> np.ndarray:
    """Per jet: does some listed decay have every product within ``radius`` of the jet axis?"""
    hit = np.zeros(len(jet_ev), dtype=bool)
    if len(rows) == 0 or len(jet_ev) == 0:
        return hit
    order = np.argsort(rec.ev[rows], kind="stable")
    rows, products = rows[order], [p[order] for p in products]
    ij, ir = same_event_pairs(jet_ev, rec.ev[rows], n_events)
    inside = np.ones(len(ij), dtype=bool)
    for prod in products:
        r = prod[ir]
        x, y, z = rec.px[r], rec.py[r], rec.pz[r]
        inside &= kin.delta_r(jet_eta[ij], jet_phi[ij], kin.eta(x, y, z), kin.phi(x, y)) < radius
    hit[ij[inside]] = True
    return hit


def jet_flavours(prt: ak.Array | FlatRecord, objects: np.ndarray, radius: float) -> np.ndarray:
    """Truth flavour (:data:`JET_FLAVOURS`) of every jet slot of ``objects`` [n, M, F]; int8 [n, M].

    Matching, first rule that applies:

    * ``top``: a hadronically decaying top (last copy) whose b quark and both quarks of its W (the
      decay products, before their showers) lie within ``radius`` of the jet axis;
    * ``higgs``, ``wz``: a Higgs, W or Z (last copy) decaying to two quarks or gluons, both within ``radius``;
    * ``b``, ``c``: a b (else c) quark of the record with pT > 1 GeV within ``radius`` (the rule of the
      detector's b-tagging truth, less its |eta| < 2.5 cut on the quark, so b-flavoured jets are tagged
      at the b efficiency);
    * ``light``, ``gluon``: else the hardest (highest-pT) quark or gluon of the record with pT > 1 GeV
      within ``radius`` decides: u, d, s → light, g → gluon;
    * ``unmatched``: no such parton.
    """
    rec = FlatRecord.from_batch(prt)
    n_events, m = objects.shape[:2]
    out = np.zeros((n_events, m), dtype=np.int8)
    ev, slot = np.nonzero(is_type(objects, "jet"))
    if len(ev) == 0:
        return out
    j_eta = objects[ev, slot, ETA].astype(np.float64)
    j_phi = objects[ev, slot, PHI].astype(np.float64)

    aid = np.abs(rec.pid)
    p_pt = kin.pt(rec.px, rec.py)
    partons = np.flatnonzero(np.isin(aid, _QUARK_OR_GLUON) & (p_pt > FLAVOUR_PARTON_MIN_PT))
    p_eta = kin.eta(rec.px[partons], rec.py[partons], rec.pz[partons])
    p_phi = kin.phi(rec.px[partons], rec.py[partons])
    ij, ip = same_event_pairs(ev, rec.ev[partons], n_events)
    close = kin.delta_r(j_eta[ij], j_phi[ij], p_eta[ip], p_phi[ip]) < radius
    ij, ip = ij[close], ip[close]
    flavour = np.full(len(ev), JET_FLAVOURS["unmatched"], dtype=np.int8)
    # hardest parton within the radius: sort pairs by (jet, -pT) and take the first of each jet
    order = np.lexsort((-p_pt[partons][ip], ij))
    ij_s, ip_s = ij[order], ip[order]
    first = np.ones(len(ij_s), dtype=bool)
    first[1:] = ij_s[1:] != ij_s[:-1]
    hardest = aid[partons][ip_s[first]]
    flavour[ij_s[first]] = np.where(hardest == 21, JET_FLAVOURS["gluon"], JET_FLAVOURS["light"])
    for code, name in ((4, "c"), (5, "b")):
        has = np.bincount(ij[aid[partons][ip] == code], minlength=len(ev)) > 0
        flavour[has] = JET_FLAVOURS[name]
    for code, name in ((23, "wz"), (24, "wz"), (25, "higgs"), (6, "top")):
        rows, products = _hadronic_decays(rec, code)
        flavour[_contained(rec, ev, j_eta, j_phi, rows, products, radius, n_events)] = JET_FLAVOURS[name]
    out[ev, slot] = flavour
    return out
