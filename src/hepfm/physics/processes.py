"""The catalog of physics processes hepfm can generate with Pythia 8 (13 TeV pp).

Names are canonical everywhere (CLI, folders, configs). Pretraining processes are Standard Model
processes that Pythia generates natively; downstream processes are kept out of pretraining on purpose.
The wider pretraining set (:data:`PRETRAINING_WIDE`, group ``pretrain-wide``) adds forced-decay Standard
Model classes and resonances (Z', W', gluinos) whose masses stay far from every downstream signal's.
Processes Pythia cannot make (ttW, ttt, tttt, tHq, tW, ttγγ, CP-odd ttH) are not faked: they enter
through LHE files (``hepfm generate --lhe``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hepfm.errors import HepfmError

#: Settings every run gets: 13 TeV pp, quiet output. Seeds are added per shard by the generator.
COMMON_SETTINGS: tuple[str, ...] = (
    "Beams:idA = 2212",
    "Beams:idB = 2212",
    "Beams:eCM = 13000.",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
    "Init:showChangedSettings = off",
    "Init:showProcesses = off",
    "Init:showChangedParticleData = off",
    "Init:showMultipartonInteractions = off",
    "Next:numberShowLHA = 0",
)

_TTH = ("HiggsSM:gg2Httbar = on", "HiggsSM:qqbar2Httbar = on")
_TTBAR = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on")
_LEPTONIC_W = ("24:onMode = off", "24:onIfAny = 11 13 15")
_LEPTONIC_Z = ("23:onMode = off", "23:onIfAny = 11 13 15")


@dataclass(frozen=True)
class Process:
    """One entry of the catalog: a canonical name, its Pythia settings and what it is."""

    name: str
    role: str  # "pretrain" (the original 12), "pretrain-extra" (only in the wide set) or "downstream"
    description: str
    settings: tuple[str, ...]
    slha: str | None = None  # file name inside hepfm/physics/slha, passed as SLHA:file
    notes: str = ""
    #: Two sets of settings, each given to its own Pythia instance; every event comes from one of the two,
    #: chosen at random with probability 1/2 (e.g. the top decays to H c in half of the events, the
    #: anti-top in the other half), so that any subset of the sample holds both in equal parts.
    mixture: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def pythia_settings(self) -> list[str]:
        """All Pythia settings for this process (without seed), with the SLHA path resolved."""
        out = list(COMMON_SETTINGS) + list(self.settings)
        if self.slha is not None:
            out.append(f"SLHA:file = {slha_path(self.slha)}")
        return out


def slha_path(filename: str) -> Path:
    """Absolute path of an SLHA spectrum shipped with the package."""
    return Path(str(resources.files("hepfm.physics") / "slha" / filename))


_CATALOG: tuple[Process, ...] = (
    # --- pretraining: 12 Standard Model processes -------------------------------------------------
    Process("ggf_h", "pretrain", "Higgs boson via gluon fusion, H decays inclusively",
            ("HiggsSM:gg2H = on",)),
    Process("vbf_h", "pretrain", "Higgs boson via vector-boson fusion (WW and ZZ fusion), H inclusive",
            ("HiggsSM:ff2Hff(t:WW) = on", "HiggsSM:ff2Hff(t:ZZ) = on")),
    Process("wh", "pretrain", "Higgs boson with a W boson, H and W decay inclusively",
            ("HiggsSM:ffbar2HW = on",)),
    Process("zh", "pretrain", "Higgs boson with a Z boson, H and Z decay inclusively",
            ("HiggsSM:ffbar2HZ = on",)),
    Process("tth", "pretrain", "Higgs boson with a top-quark pair, H and tops decay inclusively", _TTH),
    Process("ttbar", "pretrain", "Top-quark pair production, tops decay inclusively", _TTBAR),
    Process("top_tchan", "pretrain", "Single top, t-channel W exchange", ("Top:qq2tq(t:W) = on",)),
    Process("top_schan", "pretrain", "Single top, s-channel W", ("Top:ffbar2tqbar(s:W) = on",)),
    Process("wjets", "pretrain", "W(-> l nu, l = e, mu, tau) + jet, pTHat > 20 GeV",
            ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on",
             "PhaseSpace:pTHatMin = 20.", "24:onMode = off", "24:onIfAny = 11 13 15")),
    Process("zjets", "pretrain", "Z/gamma*(-> l l, l = e, mu, tau) + jet, m(ll) > 40 GeV, pTHat > 20 GeV",
            ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
             "PhaseSpace:pTHatMin = 20.", "23:mMin = 40.", "23:onMode = off", "23:onIfAny = 11 13 15")),
    Process("diboson", "pretrain", "WW, WZ and ZZ (with gamma*) production, bosons decay inclusively",
            ("WeakDoubleBoson:all = on",)),
    Process("qcd", "pretrain", "QCD multijet (all 2 -> 2 hard QCD processes), pTHat > 50 GeV",
            ("HardQCD:all = on", "PhaseSpace:pTHatMin = 50.")),
    # --- wider pretraining set: the 12 above plus these (group "pretrain-wide") --------------------
    Process("ww_lvlv", "pretrain-extra", "WW, both W -> l nu (l = e, mu, tau)",
            ("WeakDoubleBoson:ffbar2WW = on",) + _LEPTONIC_W),
    Process("wz_lvll", "pretrain-extra", "WZ, W -> l nu and Z -> l l (l = e, mu, tau)",
            ("WeakDoubleBoson:ffbar2ZW = on",) + _LEPTONIC_W + _LEPTONIC_Z),
    Process("zz_llll", "pretrain-extra", "ZZ (with gamma*), both -> l l (l = e, mu, tau), m(ll) > 40 GeV",
            ("WeakDoubleBoson:ffbar2gmZgmZ = on", "23:mMin = 40.") + _LEPTONIC_Z),
    Process("znunu_jets", "pretrain-extra", "Z(-> nu nu) + jet, pTHat > 50 GeV",
            ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2",
             "PhaseSpace:pTHatMin = 50.", "23:onMode = off", "23:onIfAny = 12 14 16")),
    Process("gamma_jets", "pretrain-extra", "Prompt photon + jet (q g -> q gamma, q qbar -> g gamma), pTHat > 50 GeV",
            ("PromptPhoton:qg2qgamma = on", "PromptPhoton:qqbar2ggamma = on", "PhaseSpace:pTHatMin = 50.")),
    Process("ggf_h_tautau", "pretrain-extra", "Higgs boson via gluon fusion, H -> tau tau",
            ("HiggsSM:gg2H = on", "25:onMode = off", "25:onIfMatch = 15 -15")),
    Process("ggf_h_yy", "pretrain-extra", "Higgs boson via gluon fusion, H -> gamma gamma",
            ("HiggsSM:gg2H = on", "25:onMode = off", "25:onIfMatch = 22 22")),
    Process("zprime3tev_tt", "pretrain-extra",
            "Heavy Z' (3 TeV, 2.5-3.5 TeV window) -> t tbar, no gamma*/Z interference",
            ("NewGaugeBoson:ffbar2gmZZprime = on", "Zprime:gmZmode = 3", "32:m0 = 3000.", "32:mMin = 2500.",
             "32:mMax = 3500.", "32:onMode = off", "32:onIfAny = 6")),
    Process("wprime3tev_tb", "pretrain-extra", "Heavy W' (3 TeV, 2.5-3.5 TeV window) -> t b",
            ("NewGaugeBoson:ffbar2Wprime = on", "34:m0 = 3000.", "34:mMin = 2500.", "34:mMax = 3500.",
             "34:onMode = off", "34:onIfAny = 6")),
    Process("gluino_qqchi", "pretrain-extra",
            "Gluino pairs (900 GeV), gluino -> q qbar chi1 (chi1 100 GeV, light quarks; shipped SLHA spectrum)",
            ("SUSY:gg2gluinogluino = on", "SUSY:qqbar2gluinogluino = on", "SLHA:verbose = 0"),
            slha="gluino_qqchi.slha"),
    # --- downstream (fine-tuning) processes ---------------------------------------------------------
    Process("tth_yy", "downstream", "ttH with H -> gamma gamma, tops inclusive",
            _TTH + ("25:onMode = off", "25:onIfMatch = 22 22")),
    Process("stop_t2t1h", "downstream",
            "Stop pairs t2 t2* (582 GeV), t2 -> t1 h, t1 (400 GeV) -> t chi1 (shipped SLHA spectrum)",
            ("SUSY:gg2squarkantisquark = on", "SUSY:qqbar2squarkantisquark = on",
             "SUSY:idA = 2000006", "SUSY:idB = 2000006", "SLHA:verbose = 0"),
            slha="stop_t2t1h.slha"),
    Process("fcnc_thq", "downstream",
            "ttbar with one FCNC decay t -> H c (the top or the anti-top, chosen at random per event)",
            _TTBAR + ("6:addChannel = 1 0.01 100 25 4", "6:onMode = off"),
            mixture=(("6:onPosIfMatch = 25 4", "6:onNegIfMatch = 24 5"),
                     ("6:onPosIfMatch = 24 5", "6:onNegIfMatch = 25 4")),
            notes="sigma_pb in the shards is that of the whole sample: the sum of both charge assignments."),
    Process("hplus_tb", "downstream", "Charged Higgs (500 GeV) produced with a top (b g -> H- t), H+- -> t b",
            ("Higgs:useBSM = on", "HiggsBSM:bg2H+-t = on", "37:m0 = 500.", "HiggsHchg:coup2H1W = 0.",
             "37:onMode = off", "37:onIfAny = 6")),
    Process("zprime_tt", "downstream", "Heavy Z' (1.5 TeV, 1-2 TeV window) -> t tbar, no gamma*/Z interference",
            ("NewGaugeBoson:ffbar2gmZZprime = on", "Zprime:gmZmode = 3", "32:m0 = 1500.", "32:mMin = 1000.",
             "32:mMax = 2000.", "32:onMode = off", "32:onIfAny = 6")),
    Process("x_hh_4b", "downstream", "Heavy scalar X (500 GeV, gg -> H2) -> h h -> b bbar b bbar",
            ("Higgs:useBSM = on", "HiggsBSM:gg2H2 = on", "35:m0 = 500.",
             # Decouple X from W/Z and enhance X -> hh, so that X is narrow (~19 GeV) instead of a
             # 70 GeV-wide heavy SM-like Higgs.
             "HiggsH2:coup2W = 0.", "HiggsH2:coup2Z = 0.", "HiggsH2:coup2H1H1 = 10.",
             "35:onMode = off", "35:onIfMatch = 25 25", "25:onMode = off", "25:onIfMatch = 5 -5")),
)

PROCESSES: dict[str, Process] = {p.name: p for p in _CATALOG}
PRETRAINING: tuple[str, ...] = tuple(p.name for p in _CATALOG if p.role == "pretrain")
DOWNSTREAM: tuple[str, ...] = tuple(p.name for p in _CATALOG if p.role == "downstream")
#: The wider pretraining set: the 12 processes of :data:`PRETRAINING` followed by the extra ones.
PRETRAINING_WIDE: tuple[str, ...] = PRETRAINING + tuple(p.name for p in _CATALOG if p.role == "pretrain-extra")


def get_process(name: str) -> Process:
    """Look a process up by canonical name; unknown names raise a HepfmError listing the valid ones."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise HepfmError(
            f"unknown process {name!r}; known processes: {', '.join(PROCESSES)} "
            "(external samples: generate from a Les Houches file under a label of your choice)"
        ) from None


#: Names that stand for a group of catalog processes on the command line.
#: ``all`` is the original 18 (the 12 pretraining and the downstream processes), so that its meaning does not
#: move when the catalog grows; the extra pretraining processes are reached through ``pretrain-wide``.
GROUPS: dict[str, tuple[str, ...]] = {"pretrain": PRETRAINING, "pretrain-wide": PRETRAINING_WIDE,
                                      "downstream": DOWNSTREAM, "all": PRETRAINING + DOWNSTREAM}


def expand_names(names) -> list[str]:
    """Process names with groups (see :data:`GROUPS`) expanded, duplicates dropped, in order."""
    out: list[str] = []
    for name in names:
        for n in GROUPS.get(name, (name,)):
            get_process(n)
            if n not in out:
                out.append(n)
    return out
