"""CMS data-taking eras for the NanoAOD reader: which era a file belongs to, and the b-tagger and
working point to use for it.

Era of a file (:func:`detect_era`), first rule that applies:

1. an era named by the caller (``era=``) is used as given;
2. collision data (no ``genWeight`` branch): the era whose run range holds the file's first run number
   (:data:`ERAS`; 2016 is split at run 278769 into preVFP/postVFP, 2022 at 359022 into 2022/2022EE,
   2023 at 369803 into 2023/2023BPix); a run outside 2015-2024 is an error that asks for the era;
3. simulation (``run`` is 1 there, so the branch set decides), or a file without a ``run`` branch:
   ``Jet_btagUParTAK4B`` -> 2024 (NanoAOD v15); ``Jet_btagPNetB`` or ``Jet_btagRobustParTAK4B`` -> 2022
   (NanoAOD v12-v14, which do not tell 2022 from 2023: name 2022EE, 2023 or 2023BPix for those); a
   filled DeepJet or DeepCSV discriminant -> 2018 (Run 2: the year is not in the branches; name 2016 or
   2017 for those); only CSVv2 filled (DeepJet/DeepCSV absent or holding only their default value, as in
   the CMS 2015 Open Data NanoAOD) -> 2015.

Run-2 eras come in two reconstructions with different working points: the original ("end of year" and
legacy re-reco, NanoAOD up to v7) and the ultra-legacy one (UL, NanoAOD v8/v9). A file carrying
``Electron_mvaFall17V1Iso`` (removed in NanoAOD v9) is taken as pre-UL, any other Run-2 file as UL; UL
files written with NanoAOD v8 still carry it, so name their era. How the era was found is recorded as
``era_rule`` (and printed by ``hepfm convert``).

Working points (:data:`ERAS`, BTV recommendations per era): loose, medium and tight, defined by a
light-jet misidentification rate of 10%, 1% and 0.1%. The default level of a discriminant is the one
whose b-tag multiplicity in tt̄ and W/Z + jets is closest to the simulated detector's
(:func:`default_level`, rule and reasons in :mod:`hepfm.io.btag_levels`), from the tagger's published
(b, c, light) efficiencies (:data:`EFFICIENCY`). For the default detector (0.70, 0.112, 0.0033) that is
medium for CSVv2, DeepCSV and DeepJet (DeepJet's tight point a close second) and tight for ParticleNet,
RobustParTAK4 and UParTAK4, whose medium points tag 83-86% of b jets and so give tt̄ events a quarter
more b-tags than the simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hepfm.errors import HepfmError
from hepfm.io.btag_levels import best_level, describe_choice
from hepfm.physics.detector import DetectorConfig

LEVELS = ("loose", "medium", "tight")

#: Published (b, c, light) efficiencies of each discriminant's loose, medium and tight points in simulated
#: tt̄ jets (pT > 20-30 GeV, |eta| < 2.4-2.5), read off the BTV performance figures to about +-0.02 in b:
#: CSVv2 and DeepCSV from CMS-BTV-16-002 (2016), DeepJet from CMS-DP-2018-058 (2017), ParticleNet and
#: RobustParTAK4 from CMS-DP-2023-005 (2022), UParTAK4 from CMS-DP-2024-066 (2024). The light rates are the
#: working-point definitions. Used to rank the levels against the simulated detector, not as a calibration.
EFFICIENCY: dict[str, dict[str, tuple[float, float, float]]] = {
    "Jet_btagCSVV2": {"loose": (0.81, 0.37, 0.089), "medium": (0.63, 0.12, 0.009), "tight": (0.41, 0.022, 0.001)},
    "Jet_btagDeepB": {"loose": (0.84, 0.41, 0.11), "medium": (0.68, 0.12, 0.011), "tight": (0.50, 0.024, 0.001)},
    "Jet_btagDeepFlavB": {"loose": (0.92, 0.45, 0.10), "medium": (0.79, 0.15, 0.01), "tight": (0.62, 0.03, 0.001)},
    "Jet_btagPNetB": {"loose": (0.94, 0.50, 0.10), "medium": (0.83, 0.16, 0.01), "tight": (0.70, 0.035, 0.001)},
    "Jet_btagRobustParTAK4B": {"loose": (0.94, 0.50, 0.10), "medium": (0.84, 0.17, 0.01),
                               "tight": (0.71, 0.035, 0.001)},
    "Jet_btagUParTAK4B": {"loose": (0.95, 0.52, 0.10), "medium": (0.86, 0.17, 0.01), "tight": (0.73, 0.035, 0.001)},
}

# discriminant branch -> tagger name
TAGGERS = {"Jet_btagUParTAK4B": "UParTAK4", "Jet_btagPNetB": "ParticleNet", "Jet_btagRobustParTAK4B": "RobustParTAK4",
           "Jet_btagDeepFlavB": "DeepJet", "Jet_btagDeepB": "DeepCSV", "Jet_btagCSVV2": "CSVv2"}


@dataclass(frozen=True)
class Era:
    """One CMS data-taking era: its first collision run, LHC run, and b-tag working points per discriminant."""

    name: str
    first_run: int
    lhc_run: int
    #: discriminant branch -> (loose, medium, tight) cut, in the era's order of preference
    btag: Mapping[str, tuple[float, float, float]]
    ultra_legacy: bool = False


def _wp(**cuts: tuple[float, float, float]) -> dict[str, tuple[float, float, float]]:
    return {f"Jet_btag{k}": v for k, v in cuts.items()}


#: Eras by name, in run order within each reconstruction. The first run of the next era ends a range.
ERAS: dict[str, Era] = {e.name: e for e in (
    Era("2015", 246908, 2, _wp(CSVV2=(0.460, 0.800, 0.935))),
    Era("2016", 271036, 2, _wp(DeepFlavB=(0.0614, 0.3093, 0.7221), DeepB=(0.2217, 0.6321, 0.8953),
                               CSVV2=(0.5426, 0.8484, 0.9535))),
    Era("2017", 294927, 2, _wp(DeepFlavB=(0.0521, 0.3033, 0.7489), DeepB=(0.1522, 0.4941, 0.8001),
                               CSVV2=(0.5803, 0.8838, 0.9693))),
    Era("2018", 314472, 2, _wp(DeepFlavB=(0.0494, 0.2770, 0.7264), DeepB=(0.1241, 0.4184, 0.7527))),
    Era("2016preVFP-UL", 271036, 2, _wp(DeepFlavB=(0.0508, 0.2598, 0.6502), DeepB=(0.2027, 0.6001, 0.8819)), True),
    Era("2016postVFP-UL", 278769, 2, _wp(DeepFlavB=(0.0480, 0.2489, 0.6377), DeepB=(0.1918, 0.5847, 0.8767)), True),
    Era("2017-UL", 294927, 2, _wp(DeepFlavB=(0.0532, 0.3040, 0.7476), DeepB=(0.1355, 0.4506, 0.7738)), True),
    Era("2018-UL", 314472, 2, _wp(DeepFlavB=(0.0490, 0.2783, 0.7100), DeepB=(0.1208, 0.4168, 0.7665)), True),
    Era("2022", 352319, 3, _wp(PNetB=(0.047, 0.245, 0.6734), RobustParTAK4B=(0.0849, 0.4319, 0.8482),
                               DeepFlavB=(0.0583, 0.3086, 0.7183))),
    Era("2022EE", 359022, 3, _wp(PNetB=(0.0499, 0.2605, 0.6915), RobustParTAK4B=(0.0897, 0.451, 0.8604),
                                 DeepFlavB=(0.0614, 0.3196, 0.73))),
    Era("2023", 366403, 3, _wp(PNetB=(0.0358, 0.1917, 0.6172), RobustParTAK4B=(0.0681, 0.3487, 0.7969),
                               DeepFlavB=(0.0479, 0.2431, 0.6553))),
    Era("2023BPix", 369803, 3, _wp(PNetB=(0.0359, 0.1919, 0.6133), RobustParTAK4B=(0.0683, 0.3494, 0.7994),
                                   DeepFlavB=(0.048, 0.2435, 0.6563))),
    Era("2024", 378981, 3, _wp(UParTAK4B=(0.0246, 0.1272, 0.4648))),
)}
#: Collision runs after this one belong to no era known here.
LAST_KNOWN_RUN = 386951


@dataclass(frozen=True)
class EraChoice:
    """The era of one file and how it was found."""

    era: Era
    rule: str
    collision_data: bool


def level_efficiencies(branch: str) -> dict[str, tuple[float, float, float]]:
    """The published (b, c, light) efficiencies of a discriminant's loose, medium and tight points."""
    if branch not in EFFICIENCY:
        raise HepfmError(f"{branch}: no published efficiencies to choose a working point by; give the b-tag cut")
    return EFFICIENCY[branch]


def default_level(branch: str, cfg: DetectorConfig) -> str:
    """The level of ``branch`` whose tt̄ and W/Z + jets b-tag multiplicity is closest to the detector's."""
    return best_level(level_efficiencies(branch), cfg)


def level_reason(branch: str, cfg: DetectorConfig, level: str) -> str:
    """Why ``level`` is the default for ``branch``: its expected b-tags per jet against the simulation's."""
    return describe_choice(level_efficiencies(branch), cfg, level)


def era_for_run(run: int, ultra_legacy: bool) -> Era | None:
    """The collision-data era holding ``run`` (Run-2 years in the UL or the original reconstruction)."""
    if run > LAST_KNOWN_RUN:
        return None
    candidates = [e for e in ERAS.values() if e.first_run <= run
                  and (e.lhc_run == 3 or e.name == "2015" or e.ultra_legacy == ultra_legacy)]
    return max(candidates, key=lambda e: e.first_run) if candidates else None


def get_era(name: str) -> Era:
    """The era of this name; an unknown name is a HepfmError listing the known ones."""
    if name not in ERAS:
        raise HepfmError(f"unknown CMS era {name!r} (known: {', '.join(ERAS)})")
    return ERAS[name]


def detect_era(path: Path, branches: set[str], first_run: int | None, collision_data: bool,
               filled_discriminants: set[str], era: str | None = None) -> EraChoice:
    """The era of one NanoAOD file from its run number (collision data) or branch set (simulation).

    ``filled_discriminants`` are the b-tag branches holding real values (not only a default value).
    See the module docstring for the rules.
    """
    if era is not None:
        return EraChoice(get_era(era), "named by the caller", collision_data)
    pre_ul = "Electron_mvaFall17V1Iso" in branches
    if collision_data and first_run is not None:
        found = era_for_run(first_run, ultra_legacy=not pre_ul)
        if found is None:
            raise HepfmError(f"{path}: run {first_run} is in no CMS era known here (2015-2024); name the era")
        return EraChoice(found, f"run {first_run}" + (", pre-UL branch set" if found.lhc_run == 2 and pre_ul
                                                      and found.name != "2015" else ""), True)
    if "Jet_btagUParTAK4B" in branches:
        return EraChoice(ERAS["2024"], "Jet_btagUParTAK4B present (NanoAOD v15)", collision_data)
    if {"Jet_btagPNetB", "Jet_btagRobustParTAK4B"} & branches:
        return EraChoice(ERAS["2022"], "ParticleNet/RobustParTAK4 present (Run 3, NanoAOD v12-v14); "
                         "2022 assumed", collision_data)
    if {"Jet_btagDeepFlavB", "Jet_btagDeepB"} & filled_discriminants:
        name, kind = ("2018", "pre-UL") if pre_ul else ("2018-UL", "UL")
        return EraChoice(ERAS[name], f"Run-2 {kind} branch set with DeepJet/DeepCSV; 2018 assumed",
                         collision_data)
    if "Jet_btagCSVV2" in filled_discriminants:
        return EraChoice(ERAS["2015"], "only CSVv2 filled (DeepJet/DeepCSV absent or default)",
                         collision_data)
    raise HepfmError(f"{path}: no filled b-tag discriminant ({', '.join(TAGGERS)}) to tell the era from; "
                     "name the era and the b-tag discriminant")
