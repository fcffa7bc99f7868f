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
from hepfm.physics.objects import ETA, PHI, TYPE, is_type, same_event_pairs
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


# ---------------------------------------------------------------------------------------- object origin

#: What each stored object came from (the ``origin`` dataset, int8 [n, M], -1 on padding slots). The code is
#: also the precedence: when an object descends from several heavy particles, the highest code wins, so a
#: Higgs beats the W/Z it decays to (H -> WW -> l nu: ``higgs``), a top beats its W (t -> W -> tau -> l:
#: ``top_w_lv``), and any Standard Model top, W, Z or H beats a BSM resonance above it (Z' -> tt: top roles).
#: Taus are folded into their parent's role: everything a tau from a W decays to is ``w_lv`` or ``top_w_lv``.
ORIGIN_NAMES: tuple[str, ...] = (
    "none",       # ISR/FSR, underlying event, hadron decays: no heavy ancestor
    "bsm",        # daughter of a BSM particle (Z', W', H2/A/H+-, sparticles) and of no SM heavy one below it
    "w_qq",       # quark from a W that is not from a top or a Higgs
    "w_lv",       # charged lepton, tau or neutrino from such a W
    "z_qq",       # quark from a Z/gamma* (PDG 23) not from a Higgs
    "z_ll",       # charged lepton, tau or neutrino from such a Z
    "top_b",      # the quark a top decays to directly (its b; the c of t -> H c)
    "top_w_qq",   # quark from the W of a top
    "top_w_lv",   # charged lepton, tau or neutrino from the W of a top (MET from its neutrino)
    "higgs",      # any decay product of an h (PDG 25), through its W, Z or taus too
)
ORIGIN_CODES: dict[str, int] = {name: i for i, name in enumerate(ORIGIN_NAMES)}
N_ORIGINS = len(ORIGIN_NAMES)



def _is_bsm(aid: np.ndarray) -> np.ndarray:
    return ((aid >= 32) & (aid <= 37)) | (aid == 42) | ((aid >= 1_000_000) & (aid < 3_000_000))


def _is_quark_or_gluon(aid: np.ndarray) -> np.ndarray:
    return ((aid >= 1) & (aid <= 5)) | (aid == 21)


def _is_sm_heavy(aid: np.ndarray) -> np.ndarray:
    return (aid == 6) | ((aid >= 23) & (aid <= 25))


def _is_lepton_or_photon(aid: np.ndarray) -> np.ndarray:
    return ((aid >= 11) & (aid <= 16)) | (aid == 22)


def _last_daughters(rec: FlatRecord, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, daughter row) of the decay products of each row's last copy."""
    return rec.daughter_rows(_follow_copies(rec, rows))


def _seed_origins(rec: FlatRecord) -> np.ndarray:
    """Per record row, the origin code its heavy parent gives it directly (before propagation); 0 elsewhere."""
    aid = np.abs(rec.pid)
    label = np.zeros(len(aid), dtype=np.int8)
    last = rec.last_copy()
    quark = _is_quark_or_gluon(aid)

    def put(rows, code):
        np.maximum.at(label, rows, np.int8(code))

    _, d = rec.daughter_rows(np.flatnonzero(last & _is_bsm(aid)))
    put(d, ORIGIN_CODES["bsm"])
    for code, qq, lv in ((24, "w_qq", "w_lv"), (23, "z_qq", "z_ll")):
        _, d = rec.daughter_rows(np.flatnonzero(last & (aid == code)))
        put(d[quark[d]], ORIGIN_CODES[qq])
        put(d[~quark[d]], ORIGIN_CODES[lv])
    _, d = rec.daughter_rows(np.flatnonzero(last & (aid == 6)))
    put(d[quark[d]], ORIGIN_CODES["top_b"])
    _, wd = _last_daughters(rec, d[aid[d] == 24])
    put(wd[quark[wd]], ORIGIN_CODES["top_w_qq"])
    put(wd[~quark[wd]], ORIGIN_CODES["top_w_lv"])
    _, d = rec.daughter_rows(np.flatnonzero(last & (aid == 25)))
    put(d, ORIGIN_CODES["higgs"])
    return label


def record_origins(prt: ak.Array | FlatRecord, max_steps: int = 400) -> np.ndarray:
    """The origin code (:data:`ORIGIN_NAMES`) of every entry of the record, int8.

    Each heavy particle's last copy labels its decay products; labels then flow down the record, keeping the
    highest code: from a lepton or photon to all its daughters (its QED radiation too), from a top, W, Z, H or
    BSM particle to its next copy and, from its last copy, to its decay products. Quarks and gluons pass no
    label on (their showers and hadronisation mix with the rest of the event: jets are matched to them by
    Delta R instead), nor do hadrons (leptons from b or c hadron decays have no heavy origin).
    """
    rec = FlatRecord.from_batch(prt)
    label = _seed_origins(rec)
    aid = np.abs(rec.pid)
    heavy = _is_sm_heavy(aid) | _is_bsm(aid)
    passes_all = _is_lepton_or_photon(aid) | (heavy & rec.last_copy())
    frontier = np.flatnonzero(label > 0)
    for _ in range(max_steps):
        frontier = frontier[passes_all[frontier] | heavy[frontier]]
        if len(frontier) == 0:
            break
        pos, d = rec.daughter_rows(frontier)
        parent = frontier[pos]
        ok = passes_all[parent] | (rec.pid[d] == rec.pid[parent])
        ok &= label[d] < label[parent]
        parent, d = parent[ok], d[ok]
        np.maximum.at(label, d, label[parent])
        frontier = np.unique(d)
    return label


#: Partons (and taus) that give a jet its origin need this much transverse momentum (as for the flavour).
ORIGIN_PARTON_MIN_PT = FLAVOUR_PARTON_MIN_PT


def object_origins(prt: ak.Array | FlatRecord, objects: np.ndarray, record_rows: np.ndarray,
                   radius: float) -> np.ndarray:
    """The origin (:data:`ORIGIN_NAMES`) of every slot of ``objects`` [n, M, F]; int8 [n, M], -1 on padding.

    * electrons, muons and photons: the origin of the generator particle they were reconstructed from
      (``record_rows`` [n, M]: its row in the flat record of the batch, -1 where none; see
      :func:`record_origins`);
    * jets (and tau-tagged jets): the origin of the closest labelled quark, gluon or tau (the decay products
      of the heavy particles, before their showers, pT > 1 GeV) within ``radius`` of the jet axis; else 0;
    * missing ET: the origin of the hardest invisible final-state particle (neutrino, neutralino); 0 when the
      event has none.
    """
    from hepfm.physics.detector import INVISIBLE_IDS  # the detector defines what escapes

    rec = FlatRecord.from_batch(prt)
    label = record_origins(rec)
    n_events, m = objects.shape[:2]
    out = np.zeros((n_events, m), dtype=np.int8)
    types = objects[..., TYPE]
    out[types == 0] = -1

    linked = record_rows >= 0
    out[linked] = label[record_rows[linked]]

    ev, slot = np.nonzero(is_type(objects, "jet", "tau"))
    aid = np.abs(rec.pid)
    partons = np.flatnonzero(label > 0)
    partons = partons[_is_quark_or_gluon(aid[partons]) | ((aid[partons] == 15) & rec.last_copy()[partons])]
    partons = partons[kin.pt(rec.px[partons], rec.py[partons]) > ORIGIN_PARTON_MIN_PT]
    if len(ev) and len(partons):
        j_eta = objects[ev, slot, ETA].astype(np.float64)
        j_phi = objects[ev, slot, PHI].astype(np.float64)
        x, y, z = rec.px[partons], rec.py[partons], rec.pz[partons]
        ij, ip = same_event_pairs(ev, rec.ev[partons], n_events)
        dr = kin.delta_r(j_eta[ij], j_phi[ij], kin.eta(x, y, z)[ip], kin.phi(x, y)[ip])
        close = dr < radius
        ij, ip, dr = ij[close], ip[close], dr[close]
        order = np.lexsort((dr, ij))
        ij, ip = ij[order], ip[order]
        nearest = np.ones(len(ij), dtype=bool)
        nearest[1:] = ij[1:] != ij[:-1]
        out[ev[ij[nearest]], slot[ij[nearest]]] = label[partons[ip[nearest]]]

    inv = np.flatnonzero(rec.status > 0)
    inv = inv[np.isin(aid[inv], INVISIBLE_IDS)]
    if len(inv):
        order = np.lexsort((-kin.pt(rec.px[inv], rec.py[inv]), rec.ev[inv]))
        inv = inv[order]
        hardest = np.ones(len(inv), dtype=bool)
        hardest[1:] = rec.ev[inv][1:] != rec.ev[inv][:-1]
        met_code = np.zeros(n_events, dtype=np.int8)
        met_code[rec.ev[inv[hardest]]] = label[inv[hardest]]
        ev, slot = np.nonzero(is_type(objects, "met"))
        out[ev, slot] = met_code[ev]
    return out


# ------------------------------------------------------------------------------------ heavy kinematics

#: The heavy particles whose truth four-momenta are stored (``heavy`` dataset), leading first by pT, at their
#: last copy (as for :func:`truth_labels`; W and Z from top and Higgs decays included).
HEAVY_PARTICLES: tuple[tuple[str, int, int], ...] = (("top", 6, 2), ("w", 24, 2), ("z", 23, 2), ("h", 25, 2))
HEAVY_COLUMNS: tuple[str, ...] = ("exists", "pt", "eta", "phi", "m")
HEAVY_NAMES: tuple[str, ...] = tuple(f"{prefix}{k + 1}_{c}" for prefix, _, n in HEAVY_PARTICLES
                                     for k in range(n) for c in HEAVY_COLUMNS)


def heavy_kinematics(prt: ak.Array | FlatRecord) -> np.ndarray:
    """The [n_events, len(HEAVY_NAMES)] float32 truth kinematics (exists, pT, eta, phi, mass) of the leading
    tops, W, Z and H of every event; zeros (exists = 0) where the event has fewer."""
    rec = FlatRecord.from_batch(prt)
    n_events = rec.n_events
    aid = np.abs(rec.pid)
    last = rec.last_copy()
    blocks = []
    for _, code, n in HEAVY_PARTICLES:
        rows = np.flatnonzero(last & (aid == code))
        ev = rec.ev[rows]
        order = np.lexsort((-kin.pt(rec.px[rows], rec.py[rows]), ev))
        rows, ev = rows[order], ev[order]
        rank = np.arange(len(ev)) - np.searchsorted(ev, ev)
        for k in range(n):
            pick = rows[rank == k]
            block = np.zeros((n_events, len(HEAVY_COLUMNS)), dtype=np.float64)
            x, y, z, e = rec.px[pick], rec.py[pick], rec.pz[pick], rec.e[pick]
            block[rec.ev[pick]] = np.stack(
                [np.ones(len(pick)), kin.pt(x, y), kin.eta(x, y, z), kin.phi(x, y),
                 np.sqrt(np.maximum(e * e - x * x - y * y - z * z, 0.0))], axis=1)
            blocks.append(block)
    return np.concatenate(blocks, axis=1).astype(np.float32)
