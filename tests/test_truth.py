import awkward as ak
import numpy as np
import pytest

from hepfm.physics import truth


def _event(particles):
    """A generator record from (id, daughter1, daughter2, px, py, pz, e) rows; row 0 is the system."""
    rows = [(90, 0, 0, 0.0, 0.0, 0.0, 13000.0)] + particles
    return {
        "id": [r[0] for r in rows], "status": [-11] * len(rows),
        "daughter1": [r[1] for r in rows], "daughter2": [r[2] for r in rows],
        "p": [{"px": r[3], "py": r[4], "pz": r[5], "e": r[6]} for r in rows],
    }


def test_label_names_are_41_unique_and_typed():
    assert truth.N_LABELS == 41
    assert len(set(truth.LABEL_NAMES)) == 41
    assert truth.LABEL_KINDS.count("regression") == 5


def test_last_copies_counted_once_and_kinematic_bins():
    # t (copy chain 1 -> 2), tbar, H, the W from the top decay; a W copy chain (5 -> 6).
    ev = _event([
        (6, 2, 2, 10.0, 0.0, 0.0, 175.0),        # 1: top, first copy
        (6, 5, 7, 400.0, 0.0, 100.0, 450.0),     # 2: top, last copy: pT 400, eta > 0, phi = 0
        (-6, 8, 9, 0.0, -50.0, -200.0, 270.0),   # 3: anti-top, pT 50, eta < -1.5, phi = -pi/2
        (25, 10, 11, -20.0, -1.0, 0.0, 127.0),   # 4: Higgs pT ~20, eta 0, phi ~ -pi
        (24, 6, 6, 100.0, 0.0, 0.0, 130.0),      # 5: W+ first copy
        (24, 12, 13, 100.0, 0.0, 0.0, 130.0),    # 6: W+ last copy
        (5, 0, 0, 1.0, 0.0, 0.0, 5.0),           # 7
        (-24, 14, 15, 1.0, 1.0, 1.0, 90.0),      # 8: W- from the anti-top
        (-5, 0, 0, 1.0, 0.0, 0.0, 5.0),          # 9
        (5, 0, 0, 1.0, 0.0, 0.0, 5.0),           # 10
        (-5, 0, 0, 1.0, 0.0, 0.0, 5.0),          # 11
    ])
    prt = ak.Array([ev, _event([])])
    labels = truth.truth_labels(prt)
    assert labels.shape == (2, 41)
    named = dict(zip(truth.LABEL_NAMES, labels[0], strict=True))
    assert (named["n_higgs"], named["n_tops"], named["n_W"], named["n_Z"], named["n_V"]) == (1, 2, 2, 0, 2)
    assert named["top1_exists"] == 1 and named["top1_pt_300_inf"] == 1 and named["top1_eta_0_1.5"] == 1
    assert named["top1_phi_0_pi/2"] == 1
    assert named["top2_pt_30_300"] == 1 and named["top2_eta_lt_m1.5"] == 1 and named["top2_phi_mpi/2_0"] == 1
    assert named["higgs_pt_0_30"] == 1 and named["higgs_phi_lt_mpi/2"] == 1
    # one-hot groups sum to the existence flag
    for prefix in ("higgs", "top1", "top2"):
        for group in ("pt", "eta", "phi"):
            total = sum(v for k, v in named.items() if k.startswith(f"{prefix}_{group}"))
            assert total == named[f"{prefix}_exists"]
    np.testing.assert_array_equal(labels[1], 0.0)  # no heavy particles: all zero


@pytest.mark.parametrize("phi_value, expected", [(-2.0, "phi_lt_mpi/2"), (-1.0, "phi_mpi/2_0"),
                                                 (1.0, "phi_0_pi/2"), (2.0, "phi_gt_pi/2")])
def test_phi_bins(phi_value, expected):
    ev = _event([(25, 0, 0, 100 * np.cos(phi_value), 100 * np.sin(phi_value), 0.0, 160.0)])
    named = dict(zip(truth.LABEL_NAMES, truth.truth_labels(ak.Array([ev]))[0], strict=True))
    assert named[f"higgs_{expected}"] == 1


def _flavour(particles, jets):
    """Jet flavours of one record against jets given as (eta, phi) axes (type-jet object slots)."""
    from hepfm.io.schema import FEATURE_INDEX

    objects = np.zeros((1, 4, 7), dtype=np.float32)
    for i, (eta, phi) in enumerate(jets):
        objects[0, i, [FEATURE_INDEX["pt"], FEATURE_INDEX["eta"], FEATURE_INDEX["phi"], FEATURE_INDEX["type"]]] = \
            (50.0, eta, phi, 1)
    names = {v: k for k, v in truth.JET_FLAVOURS.items()}
    return [names[int(c)] for c in truth.jet_flavours(ak.Array([_event(particles)]), objects, 0.4)[0]]


def _p(pid, d1, d2, pt, eta, phi, m=0.0):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return (pid, d1, d2, px, py, pz, float(np.sqrt(px * px + py * py + pz * pz + m * m)))


def test_jet_flavour_precedence_b_over_c_over_the_hardest_parton():
    particles = [_p(21, 0, 0, 80.0, 0.0, 0.0), _p(1, 0, 0, 20.0, 0.1, 0.0),   # jet 0: gluon leads
                 _p(2, 0, 0, 80.0, 1.0, 2.0), _p(21, 0, 0, 10.0, 1.1, 2.0),   # jet 1: light quark leads
                 _p(21, 0, 0, 80.0, -1.0, -2.0), _p(4, 0, 0, 3.0, -1.1, -2.0), _p(5, 0, 0, 2.0, -0.9, -2.0),
                 _p(4, 0, 0, 0.5, 2.0, -1.0)]                                 # too soft to flavour jet 3
    assert _flavour(particles, [(0.0, 0.0), (1.0, 2.0), (-1.0, -2.0), (2.0, -1.0)]) == \
        ["gluon", "light", "b", "unmatched"]


def test_jet_flavour_resonances_need_every_decay_product_inside():
    # a W -> q q' whose quarks fall in one jet; a Z whose quarks are split over two jets; a top whose b and
    # W quarks all lie in one jet; rows are 1-based (row 0 is the system)
    particles = [
        _p(24, 2, 3, 300.0, 0.0, 0.0, 80.0),                                 # 1: W, last copy
        _p(2, 0, 0, 150.0, 0.1, 0.05), _p(-1, 0, 0, 150.0, -0.1, -0.05),     # 2, 3
        _p(23, 5, 6, 100.0, 1.5, 2.0, 91.0),                                 # 4: Z
        _p(5, 0, 0, 50.0, 1.5, 1.5), _p(-5, 0, 0, 50.0, 1.5, 2.5),           # 5, 6: 1.0 apart
        _p(6, 8, 9, 900.0, -1.0, -2.0, 173.0),                               # 7: top, last copy
        _p(5, 0, 0, 300.0, -1.05, -2.05),                                    # 8: its b
        _p(24, 10, 10, 600.0, -0.98, -1.98, 80.0),                           # 9: its W, first copy
        _p(24, 11, 12, 600.0, -0.98, -1.98, 80.0),                           # 10: the W, last copy
        _p(3, 0, 0, 300.0, -0.95, -1.95), _p(-4, 0, 0, 300.0, -1.0, -2.0),   # 11, 12
    ]
    assert _flavour(particles, [(0.0, 0.0), (1.5, 1.5), (1.5, 2.5), (-1.0, -2.0)]) == ["wz", "b", "b", "top"]
