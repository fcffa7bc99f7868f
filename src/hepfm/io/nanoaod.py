"""CMS NanoAOD reader: the ``Events`` tree's Jet, Electron, Muon, Photon, Tau and MET collections as
event-store objects, with the same kinematic selection, overlap removal, ordering and truncation as the
simulated detector (:class:`~hepfm.physics.detector.DetectorConfig` cut values), and CMS's own object
identification and event quality per data-taking era.

Each file's era (2015 ... 2024, Run-2 years in the original or the ultra-legacy reconstruction) is found
from its run number (collision data) or its branch set (simulation), see :mod:`hepfm.io.cms_eras`.
Everything chosen for a file is recorded in the shard attributes under ``source_info`` (one entry per
file: files of different eras may be converted together, each with its own era's choices).

Object definitions. A selection is never dropped silently: where the file lacks the branch of the
standard ID, a documented fallback is computed from other branches, or the file is refused with a
HepfmError naming the missing selection (unless ``NanoAODSelection.require_ids`` is off, in which case
the shard records it as not applied). A branch holding one value for every object is used as it is
(``Electron_cutBased = 0`` everywhere: every electron fails), except for these known placeholders:
b-tag discriminants whose values are all negative (CMS's default for "not computed", e.g. -3000 and -1
in the 2015 Open Data NanoAOD), and muon ``*Id`` flags when ``Muon_looseId`` is false for every muon
although some muon is a PF muon that is global or tracker (the loose ID by definition).

* electrons: pT and |eta| cuts of the configuration; the CMS ECAL barrel-endcap gap
  1.4442 < |eta_SC| < 1.566 removed, eta_SC = eta + ``Electron_deltaEtaSC`` (eta without that branch);
  cut-based ID ``Electron_cutBased >= 3`` (medium, which includes isolation); fallback:
  ``Electron_pfRelIso03_all`` below ``electron_isolation_max``;
* muons: pT and |eta| cuts; ``Muon_tightId`` (else ``mediumId``, else ``looseId``) and
  ``Muon_pfRelIso04_all`` below ``muon_isolation_max`` (0.25, CMS's loose PF isolation). Fallback for
  missing or placeholder flags: a tight-like ID (PF and global muon, >= 2 matched stations, > 5 tracker
  layers, |dxy| < 0.2 cm, |dz| < 0.5 cm), else a loose-like one (PF muon, global or tracker);
* photons (optional collection): pT and |eta| cuts; the gap above (``Photon_isScEtaEB``/``isScEtaEE``
  where present, else |eta|); ``Photon_cutBased >= 2`` (medium) or bit 2 of ``Photon_cutBasedBitmap``;
  fallback ``Photon_pfRelIso03_all`` below ``photon_isolation_max``; ``Photon_electronVeto`` where present;
* jets: pT and |eta| cuts; tight jet ID, bit 2 of ``Jet_jetId``; without that branch (NanoAOD v15) it is
  computed from the energy fractions and multiplicities with the Run-3 tight criteria (for |eta| <= 2.6:
  neutral hadron fraction < 0.99, neutral EM fraction < 0.9, more than one constituent, charged hadron
  fraction > 0.01, at least one charged constituent); Run-2 (CHS) jets below 50 GeV also pass the loose
  pileup jet ID (``Jet_puId`` bit 4; bit 1 in 2016 UL, whose bits are stored in reverse) where the file
  has that branch (Run-3 PUPPI jets need none); jets within ``overlap_dr`` of a selected electron, muon or
  photon are removed; b-tag = discriminant above the era's working point (below);
* taus (only with ``tau_tagging`` on, as in the simulated chain): pT >= ``jet_pt_min``,
  |eta| < ``tau_eta_max``, decay-mode finding and DeepTau-vs-jet medium where present; taus within
  ``overlap_dr`` of a selected lepton or photon are dropped, jets within ``tau_match_dr`` of a kept tau
  are replaced by it. With tau tagging off, hadronic taus stay jets, as in the simulation;
* missing ET, eta = 0: Run 2 ``MET`` (type-1 PF), Run 3 ``PuppiMET``; else the other of ``MET``,
  ``PFMET`` (NanoAOD v13+), ``PuppiMET`` that the file has.

b-tagging: the era's tagger (2015 CSVv2; Run 2 DeepJet; 2022-2023 ParticleNet; 2024 UParTAK4), or the
next of the era's taggers the file has filled, at the working point whose b-tag multiplicity in tt̄
and W/Z + jets is closest to the simulated detector's (:func:`hepfm.io.cms_eras.default_level`; the level
and why are recorded as ``btag_level`` and ``btag_level_reason``). The discriminant and the cut can
be given instead (``btag_branch``, ``btag_cut``).

Event quality, collision data only (no ``genWeight``): ``Flag_METFilters`` (the MET-filter decision
NanoAOD stores) and a good primary vertex (``PV_npvsGood > 0``) where the file has the branches, and an
optional certified-luminosity mask (:class:`~hepfm.io.lumimask.LumiMask`). Events failing them are not
written; the conversion report counts the events each cut removes.

``event_id`` is the CMS event number (``event``); ``run`` and ``luminosity_block`` are stored next to it
(0 when absent). ``weight`` is ``genWeight`` as stored (sign and magnitude, as float32, no normalisation:
NLO generators give negative weights that must be kept) for simulation, 1 for collision data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.io.cms_eras import LEVELS, TAGGERS, Era, default_level, detect_era, level_reason
from hepfm.io.lumimask import LumiMask
from hepfm.io.readers import open_events
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import any_within, in_crack

TREE = "Events"
MET_BRANCHES = {2: ("MET", "PFMET", "PuppiMET"), 3: ("PuppiMET", "PFMET", "MET")}
_KINEMATICS = ("pt", "eta", "phi")
#: Entries read to recognise placeholder branches (b-tag defaults, unfilled muon ID flags).
PLACEHOLDER_SAMPLE = 5000
_MUON_TIGHT_LIKE = ("Muon_isPFcand", "Muon_isGlobal", "Muon_nStations", "Muon_nTrackerLayers", "Muon_dxy", "Muon_dz")
_MUON_LOOSE_LIKE = ("Muon_isPFcand", "Muon_isGlobal", "Muon_isTracker")
_JET_ID_INPUTS = ("Jet_neHEF", "Jet_neEmEF", "Jet_chHEF", "Jet_chMultiplicity")


@dataclass
class NanoAODSelection:
    """Identification working points and event-quality cuts of the NanoAOD reader."""

    electron_cut_based_min: int = 3  # 0 fail, 1 veto, 2 loose, 3 medium, 4 tight
    muon_ids: tuple = ("Muon_tightId", "Muon_mediumId", "Muon_looseId")  # first present is used
    photon_cut_based_min: int = 2  # 0 fail, 1 loose, 2 medium, 3 tight
    photon_bitmap_bit: int = 2  # Photon_cutBasedBitmap: 1 loose, 2 medium, 4 tight
    photon_electron_veto: bool = True
    jet_id_bit: int = 2  # Jet_jetId: bit 1 loose (2016), bit 2 tight, bit 4 tight lepton veto
    pileup_jet_id: bool = True  # loose pileup ID for Run-2 CHS jets below pileup_jet_id_pt_max
    pileup_jet_id_pt_max: float = 50.0
    tau_deeptau_v2p1_bit: int = 16  # Tau_idDeepTau2017v2p1VSjet bitmask: 16 = medium
    tau_deeptau_v2p5_min: int = 5  # Tau_idDeepTau2018v2p5VSjet (Run 3): 5 = medium
    ecal_gap: tuple = (1.4442, 1.566)  # CMS ECAL barrel-endcap transition in |eta_SC|
    met_filters: bool = True  # collision data: Flag_METFilters
    good_vertex: bool = True  # collision data: PV_npvsGood > 0
    require_ids: bool = True  # refuse a file whose ID branches are missing (else: recorded as not applied)


@dataclass
class _FilePlan:
    """What one file is converted with (branch names, or None where not applied)."""

    btag_branch: str
    btag_cut: float
    met: tuple[str, str]
    electron_id: str | None = None  # "cut" | "iso"
    muon_id: str | None = None  # a flag branch, "tight-like", "loose-like"
    photon_id: str | None = None  # "cut" | "bits" | "iso"
    jet_id: str | None = None  # "flag" | "computed"
    pileup_bit: int = 0  # 0: no pileup jet ID
    photons: bool = False
    taus: bool = False
    electron_sc: bool = False
    photon_sc: bool = False
    quality: dict = field(default_factory=dict)  # cut name -> branch
    lumi_mask: LumiMask | None = None
    branches: set = field(default_factory=set)


def _sample(tree, name: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(tree[name].array(entry_stop=PLACEHOLDER_SAMPLE), axis=None))


def is_placeholder_discriminant(tree, name: str) -> bool:
    """True when every sampled value of a b-tag discriminant is negative: CMS's default for "not computed".

    Real discriminants lie in [0, 1]; jets the tagger could not run on get -1, -2, -10 or -3000, so a
    branch with only such values carries no tagging (the 2015 Open Data NanoAOD's DeepJet and DeepCSV).
    """
    values = _sample(tree, name)
    return len(values) > 0 and bool(np.all(values < 0))


def muon_flags_are_placeholders(tree, names: set[str]) -> bool:
    """True when ``Muon_looseId`` is false for every muon although some muon meets its definition.

    The loose ID is "PF muon, and global or tracker muon"; a file where such muons exist but none has
    ``looseId`` never filled its ID flags (the 2015 Open Data NanoAOD).
    """
    if "Muon_looseId" not in names or not set(_MUON_LOOSE_LIKE) <= names:
        return False
    loose = _sample(tree, "Muon_looseId")
    definition = _sample(tree, "Muon_isPFcand") & (_sample(tree, "Muon_isGlobal") | _sample(tree, "Muon_isTracker"))
    return not loose.any() and bool(definition.any())


def _missing(path: Path, sel: NanoAODSelection, what: str, info: dict, key: str) -> None:
    if sel.require_ids:
        raise HepfmError(f"{path}: {what}; this file cannot be given the simulated detector's selection")
    info[key] = f"not applied ({what})"


def plan_file(tree, path: Path, cfg: DetectorConfig, sel: NanoAODSelection, btag_branch: str | None = None,
              btag_cut: float | None = None, era: str | None = None, lumi_mask: LumiMask | None = None) -> cv.FilePlan:
    """Check a NanoAOD tree's branches, find its era and return how to convert it (errors name the file)."""
    names = set(tree.keys())
    need = lambda coll: [f"{coll}_{k}" for k in _KINEMATICS]  # noqa: E731
    cv.require_branches(tree, path, TREE, need("Jet"), "jets")
    cv.require_branches(tree, path, TREE, need("Electron") + ["Electron_charge"], "electrons")
    cv.require_branches(tree, path, TREE, need("Muon") + ["Muon_charge"], "muons")
    collision = "genWeight" not in names
    first_run = int(tree["run"].array(entry_stop=1, library="np")[0]) if "run" in names else None
    present = [b for b in TAGGERS if b in names]
    placeholders = [b for b in present if is_placeholder_discriminant(tree, b)]
    choice = detect_era(path, names, first_run, collision, set(present) - set(placeholders), era)
    info: dict = {"era": choice.era.name, "era_rule": choice.rule,
                  "data": "collision" if collision else "simulation"}

    branch, cut = _choose_btag(path, choice.era, cfg, names, placeholders, btag_branch, btag_cut, info)
    met = next(((f"{m}_pt", f"{m}_phi") for m in MET_BRANCHES[choice.era.lhc_run]
                if {f"{m}_pt", f"{m}_phi"} <= names), None)
    if met is None:
        raise HepfmError(f"{path}: tree {TREE!r} has no missing-ET branches "
                         f"({', '.join(m + '_pt' for m in MET_BRANCHES[2])}; needed for MET)")
    if lumi_mask is not None and collision and not {"run", "luminosityBlock"} <= names:
        raise HepfmError(f"{path}: no run or luminosityBlock branch, needed for the certified-luminosity mask")
    plan = _FilePlan(btag_branch=branch, btag_cut=cut, met=met, lumi_mask=lumi_mask if collision else None)
    plan.photons = set(need("Photon")) <= names
    plan.taus = cfg.tau_tagging and set(need("Tau") + ["Tau_charge"]) <= names
    _plan_ids(tree, path, names, sel, choice.era, plan, info)
    _plan_quality(names, sel, collision, plan, info)
    if lumi_mask is not None:
        info["lumi_mask"] = lumi_mask.path if collision else "not applied (simulation)"
    info.update(met=met[0].removesuffix("_pt"), photons=plan.photons, taus=plan.taus,
                placeholder_branches=sorted(placeholders))

    wanted = need("Jet") + need("Electron") + ["Electron_charge"] + need("Muon") + ["Muon_charge", branch, *met]
    wanted += need("Photon") if plan.photons else []
    wanted += need("Tau") + ["Tau_charge"] if plan.taus else []
    wanted += [b for b in ("run", "luminosityBlock", "event", "genWeight") if b in names]
    wanted += sorted(plan.branches) + list(plan.quality.values())

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        return _convert_chunk(chunk, entry_start, cfg, sel, plan)

    return cv.FilePlan(path=path, tree=tree, branches=list(dict.fromkeys(wanted)), convert=convert, info=info)


def _choose_btag(path, era: Era, cfg, names, placeholders, btag_branch, btag_cut, info) -> tuple[str, float]:
    if btag_branch is None:
        usable = [b for b in era.btag if b in names and b not in placeholders]
        if not usable:
            why = f" ({', '.join(placeholders)} hold only default values)" if placeholders else ""
            raise HepfmError(f"{path}: no filled b-tag discriminant of era {era.name} "
                             f"({', '.join(era.btag)}){why}; name the discriminant and its cut")
        btag_branch = usable[0]
    elif btag_branch not in names:
        raise HepfmError(f"{path}: tree {TREE!r} has no branch {btag_branch} (the b-tag discriminant asked for)")
    if btag_cut is None:
        if btag_branch not in era.btag:
            raise HepfmError(f"{btag_branch}: no {era.name} working point for this discriminant; give the b-tag cut")
        level = default_level(btag_branch, cfg)
        btag_cut = era.btag[btag_branch][LEVELS.index(level)]
        source, reason = f"{era.name} {level}", level_reason(btag_branch, cfg, level)
    else:
        source = level = "given"
        reason = "cut given by the caller"
    info.update(btag=f"{btag_branch} > {btag_cut:g} ({source})", btag_branch=btag_branch,
                btag_tagger=TAGGERS.get(btag_branch, btag_branch), btag_working_point=btag_cut,
                btag_level=level, btag_level_reason=reason)
    return btag_branch, btag_cut


def _plan_ids(tree, path: Path, names: set[str], sel: NanoAODSelection, era: Era, plan: _FilePlan, info) -> None:
    use = plan.branches.update
    # electrons
    if "Electron_cutBased" in names:
        plan.electron_id, info["electron_id"] = "cut", f"Electron_cutBased >= {sel.electron_cut_based_min}"
        use(["Electron_cutBased"])
    elif "Electron_pfRelIso03_all" in names:
        plan.electron_id, info["electron_id"] = "iso", "Electron_pfRelIso03_all (no Electron_cutBased)"
        use(["Electron_pfRelIso03_all"])
    else:
        _missing(path, sel, "no electron ID (Electron_cutBased) nor isolation (Electron_pfRelIso03_all)", info,
                 "electron_id")
    plan.electron_sc = "Electron_deltaEtaSC" in names
    use(["Electron_deltaEtaSC"] if plan.electron_sc else [])
    info["ecal_gap"] = f"{sel.ecal_gap[0]} < |eta_SC| < {sel.ecal_gap[1]}" + ("" if plan.electron_sc else
                                                                               " (electron eta for eta_SC)")
    # muons
    flag = next((b for b in sel.muon_ids if b in names), None)
    if flag is not None and muon_flags_are_placeholders(tree, names):
        flag = None
        info["muon_id_flags"] = "placeholders (Muon_looseId false for every PF global/tracker muon)"
    if flag is not None:
        plan.muon_id = flag
    elif set(_MUON_TIGHT_LIKE) <= names:
        plan.muon_id = "tight-like"
        use(_MUON_TIGHT_LIKE)
    elif set(_MUON_LOOSE_LIKE) <= names:
        plan.muon_id = "loose-like"
        use(_MUON_LOOSE_LIKE)
    else:
        _missing(path, sel, "no usable muon ID (Muon_*Id absent or unfilled, no Muon_isPFcand/isGlobal/isTracker)",
                 info, "muon_id")
    if plan.muon_id:
        use([flag] if flag else [])
        info["muon_id"] = plan.muon_id + ("" if flag else " (computed: Muon_*Id absent or unfilled)")
    if "Muon_pfRelIso04_all" in names:
        use(["Muon_pfRelIso04_all"])
    else:
        _missing(path, sel, "no muon isolation (Muon_pfRelIso04_all)", info, "muon_isolation")
    # photons
    if plan.photons:
        for key, b in (("cut", "Photon_cutBased"), ("bits", "Photon_cutBasedBitmap"), ("iso", "Photon_pfRelIso03_all")):
            if b in names:
                plan.photon_id, info["photon_id"] = key, b
                use([b])
                break
        else:
            _missing(path, sel, "no photon ID (Photon_cutBased, Photon_cutBasedBitmap, Photon_pfRelIso03_all)",
                     info, "photon_id")
        plan.photon_sc = {"Photon_isScEtaEB", "Photon_isScEtaEE"} <= names
        use(["Photon_isScEtaEB", "Photon_isScEtaEE"] if plan.photon_sc else [])
        if sel.photon_electron_veto and "Photon_electronVeto" in names:
            use(["Photon_electronVeto"])
    # jets
    if "Jet_jetId" in names:
        plan.jet_id, info["jet_id"] = "flag", f"Jet_jetId bit {sel.jet_id_bit}"
        use(["Jet_jetId"])
    elif set(_JET_ID_INPUTS) <= names and ({"Jet_neMultiplicity", "Jet_nConstituents"} & names):
        plan.jet_id, info["jet_id"] = "computed", "tight, computed (Run-3 criteria; no Jet_jetId)"
        use(list(_JET_ID_INPUTS) + sorted({"Jet_neMultiplicity", "Jet_nConstituents"} & names))
    else:
        _missing(path, sel, "no jet ID (Jet_jetId, nor the energy fractions and multiplicities to compute it)",
                 info, "jet_id")
    if sel.pileup_jet_id and era.lhc_run == 2 and "Jet_puId" in names:
        plan.pileup_bit = 1 if era.name.startswith("2016") and era.ultra_legacy else 4
        use(["Jet_puId"])
        info["pileup_jet_id"] = f"loose (Jet_puId bit {plan.pileup_bit}) below {sel.pileup_jet_id_pt_max:g} GeV"
    else:
        info["pileup_jet_id"] = ("none (PUPPI jets)" if era.lhc_run == 3 else
                                 "none (switched off)" if not sel.pileup_jet_id else "none (no Jet_puId)")
    if plan.taus:
        use([b for b in ("Tau_idDecayModeNewDMs", "Tau_idDecayMode", "Tau_idDeepTau2017v2p1VSjet",
                         "Tau_idDeepTau2018v2p5VSjet") if b in names])


def _plan_quality(names: set[str], sel: NanoAODSelection, collision: bool, plan: _FilePlan, info) -> None:
    if not collision:
        info["event_quality"] = "none (simulation)"
        return
    applied = []
    for on, key, branch in ((sel.met_filters, "met_filters", "Flag_METFilters"),
                            (sel.good_vertex, "good_vertex", "PV_npvsGood")):
        if on and branch in names:
            plan.quality[key] = branch
            applied.append(branch)
        elif on:
            applied.append(f"no {branch} in file")
    info["event_quality"] = ", ".join(applied) or "none (switched off)"


def _convert_chunk(chunk, entry_start, cfg: DetectorConfig, sel: NanoAODSelection, plan: _FilePlan) -> dict:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    kin = lambda coll: (f"{coll}_pt", f"{coll}_eta", f"{coll}_phi")  # noqa: E731
    fields = set(chunk.fields)
    extra = lambda prefix: {b[len(prefix) + 1:]: b for b in plan.branches if b.startswith(prefix + "_")}  # noqa: E731
    no_crack = replace(cfg, crack_eta=(0.0, 0.0))  # the CMS ECAL gap replaces the simulated crack

    ele = cv.collection(chunk, *kin("Electron"), {"q": "Electron_charge", **extra("Electron")})
    muo = cv.collection(chunk, *kin("Muon"), {"q": "Muon_charge", **extra("Muon")})
    jet = cv.collection(chunk, *kin("Jet"), {"disc": plan.btag_branch, **extra("Jet")})
    cv.mark_nonfinite(bad, ele, muo, jet)

    eta_sc = ele.eta + ele.extra["deltaEtaSC"] if plan.electron_sc else ele.eta
    keep = no_crack.accepts("electron", ele.pt, np.abs(ele.eta)) & ~in_crack(np.abs(eta_sc), sel.ecal_gap)
    if plan.electron_id == "cut":
        keep &= ele.extra["cutBased"] >= sel.electron_cut_based_min
    elif plan.electron_id == "iso":
        keep &= ele.extra["pfRelIso03_all"] <= cfg.electron_isolation_max
    ele = cv.tag(ele[keep], "electron", charge=ele.extra["q"][keep])

    keep = cfg.accepts("muon", muo.pt, np.abs(muo.eta)) & _muon_id(muo, plan.muon_id)
    if "pfRelIso04_all" in muo.extra:
        keep &= muo.extra["pfRelIso04_all"] <= cfg.muon_isolation_max
    muo = cv.tag(muo[keep], "muon", charge=muo.extra["q"][keep])

    selected = [ele, muo]
    if plan.photons:
        pho = cv.collection(chunk, *kin("Photon"), extra("Photon"))
        cv.mark_nonfinite(bad, pho)
        keep = no_crack.accepts("photon", pho.pt, np.abs(pho.eta))
        if plan.photon_sc:
            keep &= (pho.extra["isScEtaEB"] > 0) | (pho.extra["isScEtaEE"] > 0)
        else:
            keep &= ~in_crack(np.abs(pho.eta), sel.ecal_gap)
        if plan.photon_id == "cut":
            keep &= pho.extra["cutBased"] >= sel.photon_cut_based_min
        elif plan.photon_id == "bits":
            keep &= (pho.extra["cutBasedBitmap"].astype(np.int64) & sel.photon_bitmap_bit) > 0
        elif plan.photon_id == "iso":
            keep &= pho.extra["pfRelIso03_all"] <= cfg.photon_isolation_max
        if "electronVeto" in pho.extra:
            keep &= pho.extra["electronVeto"] > 0
        selected.append(cv.tag(pho[keep], "photon"))
    leptons = cv.merge(selected)

    keep = cfg.accepts("jet", jet.pt, np.abs(jet.eta)) & _jet_id(jet, plan.jet_id, sel.jet_id_bit)
    if plan.pileup_bit:
        keep &= (jet.pt >= sel.pileup_jet_id_pt_max) | ((jet.extra["puId"].astype(np.int64) & plan.pileup_bit) > 0)
    jet = jet[keep]
    jet = jet[~any_within(jet, leptons, cfg.overlap_dr, n)]

    if plan.taus:
        tau = cv.collection(chunk, *kin("Tau"), {"q": "Tau_charge", **extra("Tau")})
        cv.mark_nonfinite(bad, tau)
        keep = (tau.pt >= cfg.jet_pt_min) & (np.abs(tau.eta) < cfg.tau_eta_max)
        dm = tau.extra.get("idDecayModeNewDMs", tau.extra.get("idDecayMode"))
        if dm is not None:
            keep &= dm > 0
        if "idDeepTau2018v2p5VSjet" in tau.extra:
            keep &= tau.extra["idDeepTau2018v2p5VSjet"] >= sel.tau_deeptau_v2p5_min
        elif "idDeepTau2017v2p1VSjet" in tau.extra:
            keep &= (tau.extra["idDeepTau2017v2p1VSjet"].astype(np.int64) & sel.tau_deeptau_v2p1_bit) > 0
        tau = tau[keep]
        tau = tau[~any_within(tau, leptons, cfg.overlap_dr, n)]
        tau = cv.tag(tau, "tau", charge=tau.extra["q"])
        jet = jet[~any_within(jet, tau, cfg.tau_match_dr, n)]
        selected.append(tau)
    jet = cv.tag(jet, "jet", btag=jet.extra["disc"] > plan.btag_cut)

    met_obj = cv.met_object(cv.flat(chunk[plan.met[0]]), cv.flat(chunk[plan.met[1]]))
    cv.mark_nonfinite(bad, met_obj)

    event_id = (cv.flat(chunk["event"]).astype(np.int64) if "event" in fields
                else np.arange(entry_start, entry_start + n, dtype=np.int64))
    weight = cv.flat(chunk["genWeight"]) if "genWeight" in fields else np.ones(n)
    zeros = np.zeros(n, dtype=np.uint32)
    run = cv.flat(chunk["run"]).astype(np.uint32) if "run" in fields else zeros
    lumi = cv.flat(chunk["luminosityBlock"]).astype(np.uint32) if "luminosityBlock" in fields else zeros
    quality = {}
    if "met_filters" in plan.quality:
        quality["met_filters"] = cv.flat(chunk[plan.quality["met_filters"]]) > 0
    if "good_vertex" in plan.quality:
        quality["good_vertex"] = cv.flat(chunk[plan.quality["good_vertex"]]) > 0
    if plan.lumi_mask is not None:
        quality["lumi_mask"] = plan.lumi_mask.contains(run, lumi)
    return cv.finish_chunk([jet, *selected, met_obj], n, cfg, bad, weight, event_id, quality=quality, run=run,
                           luminosity_block=lumi)


def _muon_id(muo, how: str | None) -> np.ndarray:
    e = muo.extra
    if how is None:
        return np.ones(len(muo), dtype=bool)
    if how == "tight-like":
        return ((e["isPFcand"] > 0) & (e["isGlobal"] > 0) & (e["nStations"] >= 2) & (e["nTrackerLayers"] > 5)
                & (np.abs(e["dxy"]) < 0.2) & (np.abs(e["dz"]) < 0.5))
    if how == "loose-like":
        return (e["isPFcand"] > 0) & ((e["isGlobal"] > 0) | (e["isTracker"] > 0))
    return e[how.removeprefix("Muon_")] > 0


def tight_jet_id_run3(jet) -> np.ndarray:
    """Run-3 tight jet ID from a jet collection's energy fractions and multiplicities (JetMET criteria)."""
    e, aeta = jet.extra, np.abs(jet.eta)
    n_ch = e["chMultiplicity"]
    n_ne = e["neMultiplicity"] if "neMultiplicity" in e else e["nConstituents"] - n_ch
    central = (e["neHEF"] < 0.99) & (e["neEmEF"] < 0.9) & (n_ch + n_ne > 1) & (e["chHEF"] > 0.01) & (n_ch > 0)
    return np.select([aeta <= 2.6, aeta <= 2.7, aeta <= 3.0],
                     [central, (e["neHEF"] < 0.9) & (e["neEmEF"] < 0.99), e["neHEF"] < 0.99],
                     (n_ne >= 2) & (e["neEmEF"] < 0.4))


def _jet_id(jet, how: str | None, bit: int) -> np.ndarray:
    if how == "flag":
        return (jet.extra["jetId"].astype(np.int64) & bit) > 0
    if how == "computed":
        return tight_jet_id_run3(jet)
    return np.ones(len(jet), dtype=bool)


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, selection: NanoAODSelection | None = None,
               btag_branch: str | None = None, btag_cut: float | None = None, era: str | None = None,
               lumi_json: str | Path | None = None) -> tuple[list[Path], list, dict]:
    """Open and check NanoAOD files (names or glob patterns): (paths, one plan per file, shard attributes)."""
    if btag_cut is not None and not np.isfinite(btag_cut):
        raise HepfmError(f"the b-tag cut must be a finite number, got {btag_cut}")
    sel = selection or NanoAODSelection()
    paths = cv.expand_inputs(inputs)
    mask = LumiMask.from_file(lumi_json) if lumi_json is not None else None
    plans = []
    for p in paths:
        tree = open_events(p, TREE)  # a TTree, or an RNTuple with the same field names
        try:
            plans.append(plan_file(tree, p, cfg, sel, btag_branch, btag_cut, era, mask))
        except HepfmError:
            raise
        except Exception as exc:  # a branch that fails to decode while it is checked: truncated or corrupt file
            raise HepfmError(f"{p}: cannot read the branches of tree {TREE!r}, the file may be truncated or "
                             f"corrupt ({cv.reason(exc)})") from None
    attrs = {"selection": {"format": "CMS NanoAOD", **asdict(sel)},
             "btag_branch": ", ".join(sorted({p.info["btag_branch"] for p in plans})),
             "btag_working_point": ", ".join(sorted({f"{p.info['btag_working_point']:g}" for p in plans})),
             "eras": ", ".join(sorted({p.info["era"] for p in plans}))}
    if mask is not None:
        attrs["lumi_mask"] = mask.path
    return paths, plans, attrs


def convert_nanoaod(inputs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                    btag_branch: str | None = None, btag_cut: float | None = None, era: str | None = None,
                    lumi_json: str | Path | None = None, detector: DetectorConfig | None = None,
                    selection: NanoAODSelection | None = None, shard_size: int = cv.DEFAULT_SHARD_SIZE,
                    step_size: int = cv.DEFAULT_STEP_SIZE, progress: bool = True) -> cv.ConversionReport:
    """Convert NanoAOD files (names or glob patterns) into the event store ``out/label``."""
    cfg = detector or DetectorConfig()
    paths, plans, attrs = plan_files(inputs, cfg, selection, btag_branch, btag_cut, era, lumi_json)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format="nanoaod", tree_name=TREE,
                            detector=cfg, attrs=attrs, shard_size=shard_size, step_size=step_size,
                            progress=progress)
