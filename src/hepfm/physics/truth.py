"""The 41 multilabel truth targets of arXiv:2412.10665, computed from the generator record.

Definitions (the one place they live; the names are also written into every shard):

* 5 counts (regression): ``n_higgs`` (h, PDG 25), ``n_tops``, ``n_W``, ``n_Z`` (Z/gamma*, PDG 23) and
  ``n_V = n_W + n_Z``. Each physical particle is counted once, at its last copy in the record (after
  shower recoils, right before it decays), so W bosons from top and Higgs decays are counted too.
* For the leading Higgs, the leading top and the subleading top (by pT): an existence flag, one-hot pT
  bins (Higgs 0-30, 30-200, >200 GeV; tops 0-30, 30-300, >300 GeV), one-hot eta bins (edges -1.5, 0,
  1.5) and one-hot phi bins (edges -pi/2, 0, pi/2). All zeros when the particle is absent.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepfm.physics import kinematics as kin
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
