"""Every catalog process initialises, generates, and carries the heavy particles it should."""

import numpy as np
import pytest

from hepfm.physics.processes import PRETRAINING, PRETRAINING_WIDE, PROCESSES

pytestmark = pytest.mark.pythia
pytest.importorskip("pythia8mc")

# (n_higgs, n_tops) every event must have; None where the process has no fixed number.
EXPECTED = {
    "ggf_h": (1, 0), "vbf_h": (1, 0), "wh": (1, 0), "zh": (1, 0), "tth": (1, 2), "ttbar": (0, 2),
    "top_tchan": (0, 1), "top_schan": (0, 1), "wjets": (0, 0), "zjets": (0, 0), "diboson": (0, 0),
    "qcd": (0, None), "tth_yy": (1, 2), "stop_t2t1h": (2, 2), "fcnc_thq": (1, 2), "hplus_tb": (0, 2),
    "zprime_tt": (0, 2), "x_hh_4b": (2, 0),
}


#: The extra processes of the wide pretraining set have their own checks in test_catalog_wide.py.
EXTRA = [n for n in PRETRAINING_WIDE if n not in PRETRAINING]


def test_expectations_cover_the_catalog():
    assert set(EXPECTED) | set(EXTRA) == set(PROCESSES) and not set(EXPECTED) & set(EXTRA)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_process_generates_with_expected_truth(tmp_path, name):
    from hepfm.io.generate import catalog_source, generate
    from hepfm.io.store import EventStore
    from hepfm.physics.truth import LABEL_NAMES

    generate([catalog_source(name)], tmp_path, events=20, seed=11, progress=False)
    data = EventStore(tmp_path).arrays()
    assert len(data["objects"]) == 20
    truth = dict(zip(LABEL_NAMES, data["truth"].T, strict=True))
    n_h, n_t = EXPECTED[name]
    assert np.all(truth["n_higgs"] == n_h)
    if n_t is not None:
        assert np.all(truth["n_tops"] == n_t)
    assert np.all(truth["higgs_exists"] == (n_h > 0))
    if name in ("wjets", "wh"):
        assert np.all(truth["n_W"] >= 1)
    if name in ("zjets", "zh"):
        assert np.all(truth["n_Z"] >= 1)
    if name == "diboson":
        assert np.all(truth["n_V"] == 2)
