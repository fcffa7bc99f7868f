"""`hepfm inspect STORE --compare REFERENCE`: per-process means with errors and their ratio to a reference store."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import hepfm, one_line_error

from hepfm.errors import HepfmError
from hepfm.eval.compare import compare_stores, default_pairs
from hepfm.physics import validation as val
from hepfm.testing import toy_events, toy_store


def test_summary_with_errors_on_known_events():
    objects = np.zeros((2, 6, 7), np.float32)
    # event 0: jets 100 (b-tagged) and 50, a muon of 30; event 1: one jet of 40, an electron of 20; MET 10 and 30
    objects[0, :4] = [[100, 0, 0, 100, 1, 0, 1], [50, 0, 0, 50, 0, 0, 1], [30, 0, 0, 30, 0, -1, 3],
                      [10, 0, 0, 10, 0, 0, 6]]
    objects[1, :3] = [[40, 0, 0, 40, 0, 0, 1], [20, 0, 0, 20, 0, 1, 2], [30, 0, 0, 30, 0, 0, 6]]
    s = val.summary_with_errors(objects)
    assert s["n_jet"] == pytest.approx((1.5, 0.5))
    assert s["lead_jet_pt"] == pytest.approx((70.0, 30.0))
    assert s["lead_lepton_pt"] == pytest.approx((25.0, 5.0))
    assert s["btag_per_jet"][0] == pytest.approx(1 / 3)
    assert s["met"] == pytest.approx((20.0, 10.0))
    assert val.ratio_with_error((2.0, 0.2), (4.0, 0.4)) == pytest.approx((0.5, 0.5 * np.hypot(0.1, 0.1)))


def test_toy_stores_report_their_known_jet_multiplicities(tmp_path):
    store = toy_store(tmp_path / "a", n_per_class=400, specs={"few": dict(mean_jets=2.0)})
    ref = toy_store(tmp_path / "b", n_per_class=400, seed=7, specs={"many": dict(mean_jets=8.0)})
    cmp = compare_stores(store, ref)
    assert cmp.pairs == [("few", "many")]
    expected = {"few": toy_events(400, 0, mean_jets=2.0)[0], "many": toy_events(400, 7, mean_jets=8.0)[0]}
    for row, name in ((cmp.row("few"), "few"), (cmp.row("many", reference=True), "many")):
        n_jet = val.multiplicity(expected[name], "jet")
        assert row.summary["n_jet"] == pytest.approx((n_jet.mean(), n_jet.std(ddof=1) / np.sqrt(400)))
    few, many = cmp.row("few").summary["n_jet"][0], cmp.row("many", reference=True).summary["n_jet"][0]
    assert 1.7 < few < 2.3 and 7.5 < many < 8.5
    assert cmp.ratios("few", "many")["n_jet"][0] == pytest.approx(few / many)
    with pytest.raises(HepfmError, match="no process 'nope'"):
        compare_stores(store, ref, pairs=[("nope", "many")])
    assert default_pairs(["a", "b"], ["b", "c"]) == [("b", "b")]


def test_cli_prints_both_stores_and_one_line_errors(tmp_path):
    store = toy_store(tmp_path / "a", n_per_class=60, specs={"few": dict(mean_jets=2.0)})
    ref = toy_store(tmp_path / "b", n_per_class=60, seed=7, specs={"many": dict(mean_jets=8.0), "other": {}})
    r = hepfm("inspect", store, "--compare", ref, "--pair", "few=many", "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for label, name in (("store", "few"), ("reference", "many"), ("ratio", "few / many"), ("reference", "other")):
        assert any(line.split("│")[1:3] and line.split("│")[1].strip() == label and line.split("│")[2].strip() == name
                   for line in lines), r.stdout
    assert (tmp_path / "plots" / "few_vs_many" / "n_jet.png").stat().st_size > 1000
    one_line_error(hepfm("inspect", store, "--compare", tmp_path / "missing"), "missing", "no such event store")
    one_line_error(hepfm("inspect", store, "--compare", ref, "--pair", "few=nope"), "no process 'nope'")
    one_line_error(hepfm("inspect", store, "--compare", ref, "--pair", "few"), "PROCESS=REFERENCE_PROCESS")
