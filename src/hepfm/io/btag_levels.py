"""Which b-tag working point a reader uses by default: the one that gives real events the b-tag
multiplicity the simulated detector gives generated ones.

The model sees b-tags through how many jets of an event carry one. Per process, a jet is b-tagged with
probability r = f_b e_b + f_c e_c + f_light e_light (the flavour fractions f of the process's jets, the
efficiencies e of a working point), so an event of n jets has a binomial(n, r) b-tag count. The default
level is the one whose b-tag count per event is hardest to tell from the simulated detector's, in tt̄
(b-rich) and W + jets and Z + jets (mostly light jets, W + jets with more charm, Z + jets with more
bottom) together: it minimises

    sum over the three processes of  n_p KL(Bernoulli(r_p simulated) || Bernoulli(r_p level)),

the Kullback-Leibler divergence of the per-event b-tag counts (n_p the mean jets per event), i.e. the
information per event by which a classifier could tell the level's multiplicity from the simulation's.
The flavour fractions and jet counts are those of the simulated detector's jets (:data:`FLAVOUR_MIX`,
:data:`JETS_PER_EVENT`, printed by ``scripts/btag_reference.py``: a jet is b if a b quark lies within
``btag_match_dr``, else c if a c quark does, else light — the detector's own rule); each candidate level
has its tagger's published (b, c, light) efficiencies in tt̄ jets, the simulated detector has
``btag_efficiency_b/c/light``.

Why per-flavour efficiencies weighted by the flavour mix rather than b-tag counts measured on real files:
they need only the simulation's flavour fractions and the published tables, so the level is fixed per
era and tagger before any file is read, and the same for every file of an era. The earlier rule (squared
log-distance of the three efficiencies) was dominated by the light-jet rates (0.1%-10%, a factor 30 in
log between levels) that hardly change the multiplicity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hepfm.physics import validation as val
from hepfm.physics.detector import DetectorConfig, reconstruct
from hepfm.physics.generation import make_pythia
from hepfm.physics.processes import get_process
from hepfm.physics.record import FlatRecord

#: Flavour fractions (b, c, light) of the simulated detector's jets (the default detector's quark matching)
#: in generated tt̄, W + jets and Z + jets events: ``python scripts/btag_reference.py`` (4000 events each,
#: seed 1) prints them with their statistical errors (about 0.004 for tt̄, 0.001-0.006 for W/Z + jets).
FLAVOUR_MIX: dict[str, tuple[float, float, float]] = {
    "ttbar": (0.365, 0.134, 0.501),
    "wjets": (0.004, 0.097, 0.899),
    "zjets": (0.031, 0.062, 0.907),
}
#: Mean reconstructed jets per event of the same samples.
JETS_PER_EVENT: dict[str, float] = {"ttbar": 4.332, "wjets": 0.697, "zjets": 0.879}


def tags_per_jet(mix: tuple[float, float, float], efficiency: tuple[float, float, float]) -> float:
    """Expected b-tags per jet of a process with flavour fractions ``mix`` at (b, c, light) efficiencies."""
    return float(np.dot(mix, efficiency))


def simulated_efficiency(cfg: DetectorConfig) -> tuple[float, float, float]:
    """The simulated detector's (b, c, light) b-tag efficiencies."""
    return (cfg.btag_efficiency_b, cfg.btag_efficiency_c, cfg.btag_efficiency_light)


def _bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats."""
    return float(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))


def level_distance(efficiency: tuple[float, float, float], cfg: DetectorConfig,
                   mix: Mapping[str, tuple[float, float, float]] = FLAVOUR_MIX) -> float:
    """Sum over the processes of n_p KL(Bernoulli(r simulated) || Bernoulli(r level)), r the b-tags per jet."""
    sim = simulated_efficiency(cfg)
    return float(sum(JETS_PER_EVENT[p] * _bernoulli_kl(tags_per_jet(m, sim), tags_per_jet(m, efficiency))
                     for p, m in mix.items()))


def best_level(candidates: Mapping, cfg: DetectorConfig,
               mix: Mapping[str, tuple[float, float, float]] = FLAVOUR_MIX):
    """The candidate (key of ``candidates``: level -> (b, c, light) efficiencies) nearest in b-tag multiplicity."""
    return min(candidates, key=lambda level: level_distance(candidates[level], cfg, mix))


def describe_choice(candidates: Mapping, cfg: DetectorConfig, chosen) -> str:
    """One line: the chosen level's expected b-tags per jet in tt̄ and W/Z + jets against the simulation's."""
    sim = simulated_efficiency(cfg)
    got = {p: tags_per_jet(m, candidates[chosen]) for p, m in FLAVOUR_MIX.items()}
    want = {p: tags_per_jet(m, sim) for p, m in FLAVOUR_MIX.items()}
    return ("closest to the simulated b-tag multiplicity: b-tags per jet " + ", ".join(
        f"{p} {got[p]:.3f} (simulated {want[p]:.3f})" for p in FLAVOUR_MIX))


@dataclass(frozen=True)
class SimulatedTags:
    """Jets, b-tags and jet flavours of a generated sample in the simulated detector."""

    events: int
    jets_per_event: np.ndarray
    tags_per_event: np.ndarray
    flavour_jets: tuple[int, int, int]  # b, c, light

    @property
    def flavour_mix(self) -> np.ndarray:
        """Fractions of b, c and light jets."""
        return np.array(self.flavour_jets) / self.jets_per_event.sum()


def simulate_tags(process: str, n_events: int, seed: int, cfg: DetectorConfig | None = None) -> SimulatedTags:
    """Generate ``n_events`` of a catalog process and count jets, b-tags and jet flavours per the detector."""
    cfg = cfg or DetectorConfig()
    settings = get_process(process).pythia_settings() + ["Random:setSeed = on", f"Random:seed = {seed}"]
    pythia = make_pythia(settings, process)
    records, done = [], 0
    while done < n_events:
        batch = pythia.nextBatch(min(250, n_events - done))
        records.append(FlatRecord.from_batch(batch.prt))
        done += len(batch)

    def counts(detector: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)  # the same jets for any b-tag efficiencies
        objects = np.concatenate([reconstruct(r, detector, rng).objects for r in records])
        return val.multiplicity(objects, "jet"), val.n_btags(objects)

    jets, tags = counts(cfg)
    # Efficiency 1 for one flavour and 0 for the others counts that flavour's jets.
    only = [dataclasses.replace(cfg, btag_efficiency_b=float(k == 0), btag_efficiency_c=float(k == 1),
                                btag_efficiency_light=float(k == 2)) for k in range(3)]
    flavours = tuple(int(counts(detector)[1].sum()) for detector in only)
    return SimulatedTags(len(jets), jets, tags, flavours)
