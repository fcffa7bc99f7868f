"""What each object came from (``origin``) and the heavy particles' truth kinematics (``heavy``)."""

import awkward as ak
import h5py
import numpy as np
import pytest

from hepfm.errors import HepfmError
from hepfm.io import store
from hepfm.io.schema import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION
from hepfm.io.store import EventStore
from hepfm.physics import truth
from hepfm.physics.truth import HEAVY_NAMES, ORIGIN_CODES, ORIGIN_NAMES

# ------------------------------------------------------------------------------ hand-made records


def _record(rows):
    """A one-event record from (id, status, daughter1, daughter2, pt, eta, phi, m) rows; row 0 is the system."""
    rows = [(90, -11, 0, 0, 0.0, 0.0, 0.0, 0.0)] + rows
    p = []
    for _, _, _, _, pt, eta, phi, m in rows:
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        p.append({"px": px, "py": py, "pz": pz, "e": float(np.sqrt(px * px + py * py + pz * pz + m * m))})
    return ak.Array([{"id": [r[0] for r in rows], "status": [r[1] for r in rows],
                      "daughter1": [r[2] for r in rows], "daughter2": [r[3] for r in rows], "p": p}])


def test_origin_codes_are_unique_with_none_first():
    assert ORIGIN_NAMES[0] == "none" and len(set(ORIGIN_NAMES)) == truth.N_ORIGINS
    assert len(set(HEAVY_NAMES)) == len(HEAVY_NAMES) and HEAVY_NAMES[:5] == (
        "top1_exists", "top1_pt", "top1_eta", "top1_phi", "top1_m")
    assert SCHEMA_VERSION == 2 and READABLE_SCHEMA_VERSIONS == (1, 2)


def test_nested_chains_take_the_highest_precedence():
    # 1 t -> 2 W+ 3 b; 2 W -> 4 tau+ 5 nu; 4 tau -> 6 mu 7 nu 8 nu; 6 mu -> 9 mu 10 gamma (QED radiation)
    # 11 h -> 12 W 13 W; 12 W -> 14 e 15 nu; 13 W -> 16 u 17 d; 18 gluon (ISR)
    rows = [(6, -22, 2, 3, 100, 0.0, 0.0, 172.5), (24, -22, 4, 5, 60, 0.3, 0.2, 80.4),
            (5, -23, 0, 0, 50, -0.5, -0.5, 4.8), (-15, -22, 6, 8, 40, 0.4, 0.3, 1.8),
            (12, 1, 0, 0, 20, 0.1, 0.1, 0.0), (-13, -91, 9, 10, 30, 0.4, 0.3, 0.1),
            (14, 1, 0, 0, 5, 0.4, 0.3, 0.0), (-16, 1, 0, 0, 5, 0.4, 0.3, 0.0),
            (-13, 1, 0, 0, 28, 0.4, 0.3, 0.1), (22, 1, 0, 0, 2, 0.41, 0.3, 0.0),
            (25, -22, 12, 13, 80, 1.0, 2.0, 125.0), (24, -22, 14, 15, 40, 1.0, 2.0, 80.0),
            (-24, -22, 16, 17, 40, 1.0, 2.5, 30.0), (-11, 1, 0, 0, 30, 1.0, 2.0, 0.0),
            (12, 1, 0, 0, 10, 1.0, 2.0, 0.0), (2, -23, 0, 0, 20, 1.5, 2.5, 0.0),
            (-1, -23, 0, 0, 20, 0.5, 2.5, 0.0), (21, -41, 0, 0, 30, -2.0, 1.0, 0.0)]
    names = [ORIGIN_NAMES[c] for c in truth.record_origins(_record(rows))]
    assert names[3] == "top_b" and names[4:11] == ["top_w_lv"] * 7
    assert names[12:18] == ["higgs"] * 6 and names[18] == "none" and names[1] == "none"


def test_objects_get_the_origin_of_their_particle_jets_of_the_nearest_parton_met_of_the_hardest_invisible():
    # 1 Z -> 2 mu 3 mu; 4 W -> 5 c 6 s; 7 nu from nowhere (soft), 8 gluon
    rows = [(23, -22, 2, 3, 90, 0.0, 0.0, 91.0), (13, 1, 0, 0, 40, 0.5, 0.0, 0.1), (-13, 1, 0, 0, 40, -0.5, 3.0, 0.1),
            (24, -22, 5, 6, 90, 0.0, 1.5, 80.0), (4, -23, 0, 0, 45, 1.0, 1.5, 1.5), (-3, -23, 0, 0, 45, -1.0, 1.5, 0.0),
            (12, 1, 0, 0, 3, 0.0, 0.0, 0.0), (21, -31, 0, 0, 30, 2.0, -2.0, 0.0)]
    objects = np.zeros((1, 6, 7), dtype=np.float32)
    from hepfm.io.schema import ETA, PHI, PT, TYPE
    for i, (kind, eta, phi) in enumerate([(1, 1.05, 1.55), (1, 2.0, -2.0), (3, 0.5, 0.0), (3, -0.5, 3.0), (6, 0, 0)]):
        objects[0, i, [PT, ETA, PHI, TYPE]] = (40.0, eta, phi, kind)
    record_rows = np.array([[-1, -1, 2, 3, -1, -1]])
    got = [int(c) for c in truth.object_origins(_record(rows), objects, record_rows, 0.4)[0]]
    assert got == [ORIGIN_CODES["w_qq"], 0, ORIGIN_CODES["z_ll"], ORIGIN_CODES["z_ll"], 0, -1]


def test_heavy_kinematics_of_the_leading_copies():
    rows = [(6, -62, 0, 0, 100, 0.5, 1.0, 172.5), (-6, -62, 0, 0, 200, -1.0, -1.0, 170.0),
            (6, -22, 1, 1, 90, 0.5, 1.0, 172.5)]  # row 3 is an earlier copy of row 1
    h = dict(zip(HEAVY_NAMES, truth.heavy_kinematics(_record(rows))[0], strict=True))
    assert h["top1_exists"] == 1 and h["top2_exists"] == 1 and h["w1_exists"] == 0 and h["w1_m"] == 0
    np.testing.assert_allclose([h["top1_pt"], h["top1_eta"], h["top1_m"], h["top2_pt"], h["top2_phi"]],
                               [200, -1.0, 170.0, 100, 1.0], rtol=1e-4)


# ------------------------------------------------------------------------------------------- store


def _arrays(n, m=4, origin_shape=None):
    rng = np.random.default_rng(0)
    return {"objects": rng.normal(size=(n, m, 7)).astype(np.float32), "n_objects": np.full(n, 2, np.int32),
            "n_dropped": np.zeros(n, np.int32), "process": np.zeros(n, np.int32),
            "truth": rng.random((n, 41)).astype(np.float32), "weight": np.ones(n, np.float32),
            "event_id": np.arange(n, dtype=np.int64),
            "origin": np.zeros(origin_shape or (n, m), np.int8),
            "heavy": np.zeros((n, len(HEAVY_NAMES)), np.float32)}


def _write(root, arrays):
    (root / "ttbar").mkdir(parents=True)
    store.write_shard(root / "ttbar" / store.shard_name(0), arrays, {"process_name": "ttbar",
                                                                       "process_names": ["ttbar"]})
    store.write_manifest(root)
    return root / "ttbar" / store.shard_name(0)


def test_a_version_1_store_still_loads_and_verifies(tmp_path):
    arrays = _arrays(12)
    del arrays["origin"], arrays["heavy"]
    path = _write(tmp_path, arrays)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
    store.write_manifest(tmp_path)
    es = EventStore(tmp_path)
    assert es.verify() == [] and es.attrs()["schema_version"] == 1
    assert es.arrays()["objects"].shape == (12, 4, 7)


def test_a_version_2_shard_with_origin_and_heavy_verifies(tmp_path):
    path = _write(tmp_path, _arrays(12))
    store.check_shard_structure(path, 12)
    assert EventStore(tmp_path).verify() == []


@pytest.mark.parametrize("name, bad", [("origin", (12, 3)), ("origin", (11, 4)), ("heavy", (12,))])
def test_a_wrong_shaped_truth_dataset_is_refused_in_one_line(tmp_path, name, bad):
    arrays = _arrays(12)
    arrays[name] = np.zeros(bad, arrays[name].dtype)
    path = tmp_path / "shard-00000.h5"
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        f.attrs["n_events"] = 12
    with pytest.raises(HepfmError) as err:
        store.check_shard_structure(path, 12)
    assert name in str(err.value) and "\n" not in str(err.value)
