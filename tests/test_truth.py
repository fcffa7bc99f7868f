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
