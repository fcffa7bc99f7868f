"""The default b-tag working points: chosen by the b-tag multiplicity the model sees, per era and tagger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hepfm.io import btag_levels as bl
from hepfm.io.cms_eras import EFFICIENCY, ERAS, LEVELS, default_level
from hepfm.io.nanoaod import convert_nanoaod
from hepfm.io.physlite import TAGGERS, convert_physlite, default_working_point
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.io.store import EventStore
from hepfm.physics.detector import DetectorConfig

TTBAR, DY, PHYSLITE = "nanoAOD_2015_CMS_Open_Data_ttbar.root", "nano_dy.root", "physlite_example.root"


def _rule(candidates: dict, cfg: DetectorConfig):
    """The rule written out again: per process n KL(Bernoulli(r_sim) || Bernoulli(r_level)), summed, minimal."""
    sim = (cfg.btag_efficiency_b, cfg.btag_efficiency_c, cfg.btag_efficiency_light)

    def distance(eff):
        total = 0.0
        for process, mix in bl.FLAVOUR_MIX.items():
            p = sum(f * e for f, e in zip(mix, sim, strict=True))
            q = sum(f * e for f, e in zip(mix, eff, strict=True))
            total += bl.JETS_PER_EVENT[process] * (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
        return total

    return min(candidates, key=lambda level: distance(candidates[level]))


@pytest.mark.parametrize("cfg", [
    DetectorConfig(),
    DetectorConfig(btag_efficiency_b=0.85, btag_efficiency_c=0.4, btag_efficiency_light=0.1),
    DetectorConfig(btag_efficiency_b=0.8, btag_efficiency_c=0.16, btag_efficiency_light=0.01)])
def test_every_era_and_tagger_gets_the_level_the_rule_gives(cfg):
    for era in ERAS.values():
        for branch in era.btag:
            assert default_level(branch, cfg) == _rule(EFFICIENCY[branch], cfg), (era.name, branch)
    for tagger in TAGGERS.values():
        assert default_working_point(tagger, cfg) == _rule(tagger.efficiencies, cfg), tagger.name


def test_the_rule_follows_the_detector():
    """A detector tagging like a loose point gets loose; the default one gets medium for DeepJet, tight for
    ParticleNet (whose medium point tags 83% of b jets against the detector's 70%)."""
    loose = DetectorConfig(btag_efficiency_b=0.9, btag_efficiency_c=0.45, btag_efficiency_light=0.1)
    assert {default_level(b, loose) for b in EFFICIENCY} == {"loose"}
    assert default_working_point(TAGGERS["DL1dv01"], loose) == 0.85
    assert default_level("Jet_btagDeepFlavB", DetectorConfig()) == "medium"
    assert default_level("Jet_btagPNetB", DetectorConfig()) == "tight"
    assert set(EFFICIENCY) >= {b for era in ERAS.values() for b in era.btag}  # every era's discriminant has a table


@pytest.mark.pythia
def test_the_flavour_mix_is_the_simulations():
    """FLAVOUR_MIX and JETS_PER_EVENT are reproduced by a small generated sample (4 sigma, binomial errors)."""
    for process, n_events in (("ttbar", 300), ("wjets", 800), ("zjets", 800)):
        sim = bl.simulate_tags(process, n_events, seed=7)
        jets = sim.jets_per_event.sum()
        mix = np.array(bl.FLAVOUR_MIX[process])
        err = np.sqrt(np.maximum(mix * (1 - mix), 1e-4) / jets)
        assert np.all(np.abs(sim.flavour_mix - mix) < 4 * err), (process, sim.flavour_mix, mix)
        spread = sim.jets_per_event.std() / np.sqrt(sim.events)
        assert abs(sim.jets_per_event.mean() - bl.JETS_PER_EVENT[process]) < 4 * spread, process


def _tags(store) -> tuple[int, int]:
    objects = EventStore(store).arrays()["objects"]
    jets = objects[:, :, FEATURE_INDEX["type"]] == TYPE_CODES["jet"]
    return int(jets.sum()), int((jets & (objects[:, :, FEATURE_INDEX["btag"]] > 0.5)).sum())


def _consistent(tags: int, jets: int, rate: float) -> bool:
    """The count is within 3 sigma (two-sided Poisson probability >= 0.27%) of jets x rate."""
    mu = jets * rate
    return min(stats.poisson.cdf(tags, mu), stats.poisson.sf(tags - 1, mu)) >= 0.00135


def test_shared_files_b_tag_multiplicity_against_the_simulation(shared_data, tmp_path):
    """Z + jets files against simulated Z + jets at the default level; the 2015 "tt̄" file is not compared
    with simulated tt̄ (0.53 jets per event against 4.3: it holds almost no top pairs, see the real-data
    tutorial), only placed between the W/Z + jets and tt̄ rates."""
    sim = bl.simulated_efficiency(DetectorConfig())
    rate = {p: bl.tags_per_jet(m, sim) for p, m in bl.FLAVOUR_MIX.items()}

    report = convert_nanoaod([shared_data / DY], tmp_path / "dy", "dy", progress=False)
    info = next(iter(report.source_info.values()))
    assert info["btag_level"] == default_level(info["btag_branch"], DetectorConfig())
    assert "closest to the simulated b-tag multiplicity" in info["btag_level_reason"]
    jets, tags = _tags(tmp_path / "dy")
    assert _consistent(tags, jets, rate["zjets"]), (tags, jets)

    report = convert_physlite([shared_data / PHYSLITE], tmp_path / "pl", "zee", progress=False)
    info = next(iter(report.source_info.values()))
    level = default_working_point(TAGGERS["GN2v00"], DetectorConfig())
    assert info["btag_level"] == f"FixedCutBEff_{round(level * 100)}"
    jets, tags = _tags(tmp_path / "pl")
    assert _consistent(tags, jets, rate["zjets"]), (tags, jets)

    report = convert_nanoaod([shared_data / TTBAR], tmp_path / "tt", "tt", progress=False)
    info = next(iter(report.source_info.values()))
    assert info["btag_level"] == default_level("Jet_btagCSVV2", DetectorConfig()) == LEVELS[1]
    jets, tags = _tags(tmp_path / "tt")
    assert rate["wjets"] < tags / jets < rate["ttbar"]


def test_a_given_cut_still_wins(shared_data, tmp_path):
    report = convert_nanoaod([shared_data / TTBAR], tmp_path / "s", "t", btag_cut=0.935, progress=False)
    info = next(iter(report.source_info.values()))
    assert (info["btag_level"], info["btag_working_point"]) == ("given", 0.935)
    assert info["btag_level_reason"] == "cut given by the caller"
