"""Jet constituents and jet flavours in generated stores: physics checks on small Pythia samples."""

import h5py
import numpy as np
import pytest

from hepfm.io.generate import catalog_source, generate
from hepfm.io.schema import CONSTITUENT_CLASSES, CONSTITUENT_INDEX, FEATURE_INDEX, JET_FLAVOURS, TYPE_CODES
from hepfm.io.store import CONSTITUENT_FIELDS, EventStore

pytestmark = pytest.mark.pythia
pytest.importorskip("pythia8mc")

K = 48
FIELDS = ("objects", "n_objects") + CONSTITUENT_FIELDS


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("constituents")
    sources = [catalog_source("ttbar"), catalog_source("qcd")]
    generate(sources, root / "with", events=250, seed=11, workers=2, progress=False, constituents=K)
    generate([sources[0]], root / "without", events=250, seed=11, progress=False)
    return root


def jets_of(root, process):
    """Per stored jet: its object row, its constituents, their count and its flavour."""
    a = EventStore(root).arrays([process], fields=FIELDS)
    ev, slot = np.nonzero(a["objects"][..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"])
    return (a["objects"][ev, slot], a["constituents"][ev, slot].astype(np.float64), a["n_constituents"][ev, slot],
            a["jet_flavour"][ev, slot])


def four_momentum(con, jet):
    eta = con[..., CONSTITUENT_INDEX["deta"]] + jet[:, None, FEATURE_INDEX["eta"]]
    phi = con[..., CONSTITUENT_INDEX["dphi"]] + jet[:, None, FEATURE_INDEX["phi"]]
    pt = con[..., CONSTITUENT_INDEX["pt"]]
    return (pt * np.cos(phi)).sum(1), (pt * np.sin(phi)).sum(1), (pt * np.sinh(eta)).sum(1), \
        con[..., CONSTITUENT_INDEX["energy"]].sum(1)


def test_objects_are_unchanged_and_old_readers_ignore_the_new_datasets(stores):
    plain = EventStore(stores / "without").arrays(["ttbar"])
    full = EventStore(stores / "with").arrays(["ttbar"])  # the default fields: no constituents
    assert set(plain) == set(full)
    for key in set(plain) - {"process"}:  # the index of ttbar among the store's processes differs
        np.testing.assert_array_equal(plain[key], full[key])
    with h5py.File(stores / "without" / "ttbar" / "shard-00000.h5") as f:
        assert not set(CONSTITUENT_FIELDS) & set(f)
    attrs = EventStore(stores / "with").attrs("ttbar")
    assert attrs["max_constituents"] == K and attrs["jet_flavours"] == JET_FLAVOURS


def test_every_jet_and_only_jets_have_pt_ordered_constituents(stores):
    a = EventStore(stores / "with").arrays(["ttbar"], fields=FIELDS)
    is_jet = a["objects"][..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"]
    assert a["constituents"].shape[1:] == (a["objects"].shape[1], K, len(CONSTITUENT_INDEX))
    assert (a["n_constituents"][is_jet] > 0).all() and (a["n_constituents"][~is_jet] == 0).all()
    assert (a["jet_flavour"][is_jet] > 0).all() and (a["jet_flavour"][~is_jet] == 0).all()
    _, con, n, _ = jets_of(stores / "with", "ttbar")
    real = np.arange(K) < n[:, None]
    pt = np.where(real, con[..., CONSTITUENT_INDEX["pt"]], -1.0)
    assert (np.diff(pt, axis=1) <= 0).all()
    assert (con[~real] == 0).all() and (con[real][:, CONSTITUENT_INDEX["class"]] > 0).all()


def test_constituents_add_up_to_the_jet_before_its_energy_smearing(stores):
    # The clustered (true) jet is the sum of its constituents; the stored jet has the true direction and a
    # smeared pT (HCal resolution, ~5-15% at these energies). Jets with more than K constituents are skipped.
    jet, con, n, _ = jets_of(stores / "with", "ttbar")
    full = n < K
    assert full.mean() > 0.95
    px, py, pz, _ = four_momentum(con[full], jet[full])
    pt = np.hypot(px, py)
    np.testing.assert_allclose(np.arcsinh(pz / pt), jet[full, FEATURE_INDEX["eta"]], atol=2e-4)
    dphi = np.angle(np.exp(1j * (np.arctan2(py, px) - jet[full, FEATURE_INDEX["phi"]])))
    np.testing.assert_allclose(dphi, 0.0, atol=2e-4)
    ratio = jet[full, FEATURE_INDEX["pt"]] / pt
    assert abs(np.median(ratio) - 1.0) < 0.02 and 0.03 < ratio.std() < 0.2


def test_constituents_lie_within_the_jet_radius_in_rapidity(stores):
    # anti-kt merges a particle within R (in rapidity-phi) of the growing jet, so all but a few soft ones
    # (merged before the axis moved) are within R of the final axis; none is far away
    jet, con, n, _ = jets_of(stores / "with", "ttbar")
    real = np.arange(K) < n[:, None]
    px, py, pz, e = four_momentum(con, jet)
    jet_y = 0.5 * np.log((e + pz) / (e - pz))
    eta = con[..., CONSTITUENT_INDEX["deta"]] + jet[:, None, FEATURE_INDEX["eta"]]
    cpt, ce = con[..., CONSTITUENT_INDEX["pt"]], con[..., CONSTITUENT_INDEX["energy"]]
    cpz = cpt * np.sinh(eta)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log((ce + cpz) / (ce - cpz))
    dphi = np.angle(np.exp(1j * (con[..., CONSTITUENT_INDEX["dphi"]] + jet[:, None, FEATURE_INDEX["phi"]]
                                 - np.arctan2(py, px)[:, None])))
    dr = np.hypot(y - jet_y[:, None], dphi)[real]
    assert (dr < 0.4).mean() > 0.99 and dr.max() < 0.8


def test_flavours_match_the_b_tagging_truth(stores):
    jet, _, _, flavour = jets_of(stores / "with", "ttbar")
    btag = jet[:, FEATURE_INDEX["btag"]]
    b, light = flavour == JET_FLAVOURS["b"], np.isin(flavour, [JET_FLAVOURS["light"], JET_FLAVOURS["gluon"]])
    assert b.sum() > 200 and light.sum() > 200
    assert abs(btag[b].mean() - 0.70) < 0.08  # binomial sigma ~0.03
    assert btag[light].mean() < 0.03


def test_gluon_jets_have_more_charged_constituents_and_mass_than_light_quark_jets(stores):
    jet, con, n, flavour = jets_of(stores / "with", "qcd")
    charged = ((con[..., CONSTITUENT_INDEX["class"]] == CONSTITUENT_CLASSES["charged_hadron"])
               & (np.arange(K) < n[:, None])).sum(1)
    px, py, pz, e = four_momentum(con, jet)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    g, q = flavour == JET_FLAVOURS["gluon"], flavour == JET_FLAVOURS["light"]
    assert g.sum() > 50 and q.sum() > 20

    def gap(x):  # difference of the means in units of its standard error
        return (x[g].mean() - x[q].mean()) / np.hypot(x[g].std() / np.sqrt(g.sum()), x[q].std() / np.sqrt(q.sum()))

    assert gap(charged) > 3 and gap(mass / jet[:, FEATURE_INDEX["pt"]]) > 2
