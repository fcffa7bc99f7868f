"""ATLAS DAOD_PHYSLITE reader: the ``CollectionTree``'s calibrated electrons, muons, photons, taus, jets,
b-tagging and missing-ET soft term as event-store objects, with the same kinematic selection, overlap
removal, ordering and truncation as the simulated detector (:class:`~hepfm.physics.detector.DetectorConfig`
cut values) and ATLAS's own object identification. Momenta are stored in MeV and converted to GeV.
TTree and RNTuple files are read alike (:func:`hepfm.io.readers.open_events`).

Everything chosen for a file is recorded in the shard attributes under ``source_info`` (tagger, working
point, ID levels, isolation, MET terms), and the objects each cut removed are counted per file
(:attr:`~hepfm.io.convert.ConversionReport.counts`, printed by ``hepfm convert physlite``). A selection is
never dropped silently: a file lacking the branches of a selection is refused with a HepfmError naming
them, unless ``PhysliteSelection.require_ids`` is off, in which case the shard records it as not applied.

* electrons (``AnalysisElectronsAuxDyn``): pT and |eta| cuts of the configuration and the simulated
  calorimeter crack (``crack_eta``, on the electron's eta: PHYSLITE keeps no cluster eta); likelihood ID
  ``DFCommonElectronsLH<level>`` (Medium by default); ``Loose_VarRad`` isolation:
  ``ptvarcone30_Nonprompt_All_MaxWeightTTVALooseCone_pt1000 / pT < 0.15`` and ``topoetcone20 / pT < 0.20``;
* muons (``AnalysisMuonsAuxDyn``): pT and |eta| cuts; ``quality <= 1`` (xAOD::Muon quality: 0 Tight,
  1 Medium, 2 Loose, 3 VeryLoose) and ``muonType`` combined (0) or, beyond the tracker, stand-alone (1),
  as the Medium selection; ``Loose_VarRad`` isolation:
  ``ptvarcone30_Nonprompt_All_MaxWeightTTVA_pt1000 / pT < 0.15`` and ``topoetcone20 / pT < 0.30``;
* photons (``AnalysisPhotonsAuxDyn``, optional): pT and |eta| cuts and the crack; ``DFCommonPhotonsIsEMTight``
  and ``DFCommonPhotonsCleaning``; ``FixedCutLoose`` isolation: ``topoetcone20 < 0.065 pT`` and
  ``ptcone20 < 0.05 pT``;
* jets (``AnalysisJetsAuxDyn``, anti-kt 0.4 EMPFlow): pT and |eta| cuts; the neural-network jet-vertex
  tagger ``NNJvtPass`` for jets below ``jvt_pt_max`` (60 GeV) and within |eta| < ``jvt_eta_max`` (2.4), as
  ATLAS applies it; jets within ``overlap_dr`` of a selected electron, muon or photon removed;
* taus (``AnalysisTauJetsAuxDyn``, only with ``tau_tagging`` on, as in the simulated chain):
  pT >= ``jet_pt_min``, |eta| < ``tau_eta_max`` outside the crack, ``JetDeepSetMedium`` and the electron veto
  ``EleRNNLoose_v1`` where present; taus near a selected lepton or photon dropped, jets within
  ``tau_match_dr`` of a kept tau replaced by it. With tau tagging off, hadronic taus stay jets.

b-tagging: each jet's ``btaggingLink`` (``m_persIndex``) points at its entry of
``BTagging_AntiKt4EMPFlowAuxDyn``. The tagger is GN2 (``GN2v00``) where the file has it, else DL1d
(``DL1dv01``); the discriminant is D = ln(pb / (fc pc + (1 - fc) pu)) with the tagger's published charm
fraction (:data:`TAGGERS`: fc = 0.1 for GN2v00, 0.018 for DL1dv01), and the working point the fixed-cut
one whose b-tag multiplicity in tt̄ and W/Z + jets is closest to the simulated detector's
(:func:`default_working_point`, recorded with its reason as ``btag_level_reason``). A jet whose link
points outside its event's b-tagging container is counted and not tagged. A discriminant and cut can be
given instead (``tagger``, ``btag_cut``).

Missing ET. ``MET_Core_AnalysisMET`` holds only the soft terms (``SoftClusCore``, ``PVSoftTrkCore``); the
hard terms are rebuilt from the objects, which is what ATLAS's METMaker does with calibrated objects. Here
MET = -(sum of the pT vectors of the selected electrons, muons, photons and taus, and of the jets with
pT > ``met_jet_pt_min`` (20 GeV), |eta| < ``met_jet_eta_max`` (4.5), passing the jet-vertex tagger and not
within ``overlap_dr`` of a selected lepton or photon) + the track soft term ``PVSoftTrkCore`` (mpx, mpy
as stored: already the negative sum of the soft tracks). It differs from METMaker's rebuilt MET in that
METMaker resolves overlaps with the MET association map (an electron inside a jet removes only its own
energy from the jet, here the whole jet is dropped), moves the tracks of jets that fail the jet-vertex
tagger into the soft term (here they are lost), and applies its own forward-jet (Tight) selection.

Events. Every event must pass the jet-cleaning flag ``EventInfoAuxDyn.DFCommonJets_eventClean_LooseBad``;
collision data (``eventTypeBitmask`` without its simulation bit) must also have no LAr, Tile or SCT error
state (bits 28-31 of the flags equal to 2) and a complete event (``coreFlags`` bit 18 unset). The
conversion report counts the events each cut removes. ``weight`` is the nominal generator weight
``EventInfoAuxDyn.mcEventWeights[0]`` as stored (sign kept, float32) for simulation, 1 for collision data;
``event_id`` is ``eventNumber``, with ``run`` (``runNumber``) and ``luminosity_block`` (``lumiBlock``)
stored next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.io.btag_levels import best_level, describe_choice
from hepfm.io.readers import Format, open_events
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import Objects, any_within, in_crack

FORMAT = Format("physlite", "CollectionTree", "ATLAS DAOD_PHYSLITE")
TREE = FORMAT.tree
MEV = 1e-3  # MeV -> GeV
ELECTRONS, MUONS, PHOTONS = "AnalysisElectronsAuxDyn", "AnalysisMuonsAuxDyn", "AnalysisPhotonsAuxDyn"
TAUS, JETS, BTAG = "AnalysisTauJetsAuxDyn", "AnalysisJetsAuxDyn", "BTagging_AntiKt4EMPFlowAuxDyn"
MET_TERMS, EVENT = "MET_Core_AnalysisMETAuxDyn", "EventInfoAuxDyn"
#: The index part of each jet's ElementLink into the b-tagging container.
BTAG_LINK = f"{JETS}.btaggingLink.m_persIndex"
ELECTRON_LEVELS = ("VeryLoose", "Loose", "LooseBL", "Medium", "Tight")
#: Bit of ``eventTypeBitmask`` marking simulation (xAOD::EventInfo::IS_SIMULATION).
IS_SIMULATION = 1
#: Error state "Error" (2) in bits 28-31 of a detector flag word, and coreFlags' incomplete-event bit.
DETECTOR_FLAGS = ("larFlags", "tileFlags", "sctFlags")
CORE_INCOMPLETE_BIT = 18


@dataclass(frozen=True)
class Tagger:
    """A b-tagging algorithm of PHYSLITE: its charm fraction, fixed-cut working points (b-efficiency -> cut)
    and their published (c-jet, light-jet) rejections in tt̄ (b-efficiency -> (1/e_c, 1/e_light))."""

    name: str
    charm_fraction: float
    working_points: dict
    rejections: dict

    @property
    def efficiencies(self) -> dict[float, tuple[float, float, float]]:
        """(b, c, light) efficiencies of each fixed-cut working point."""
        return {eff: (eff, 1.0 / c_rej, 1.0 / light_rej) for eff, (c_rej, light_rej) in self.rejections.items()}


#: Taggers in order of preference, with the published charm fraction of the discriminant and the
#: fixed-cut working points of the EMPFlow jets (ATLAS flavour-tagging recommendations for release 22:
#: DL1dv01 from the 2022 calibration file, GN2v00 the 2023 pseudo-continuous bin edges). The rejections are
#: read off the published tt̄ performance curves (jets with 20 < pT < 250 GeV; DL1d ATL-PHYS-PUB-2022-047,
#: GN2 arXiv:2505.19689) to about 10%; they only rank the working points against the simulated detector.
TAGGERS: dict[str, Tagger] = {
    "GN2v00": Tagger("GN2v00", 0.1, {0.60: 5.394, 0.70: 3.875, 0.77: 2.893, 0.85: 1.638},
                     {0.60: (60.0, 3000.0), 0.70: (22.0, 900.0), 0.77: (10.0, 350.0), 0.85: (4.0, 80.0)}),
    "DL1dv01": Tagger("DL1dv01", 0.018, {0.60: 4.884, 0.70: 3.494, 0.77: 2.456, 0.85: 0.948},
                      {0.60: (27.0, 1300.0), 0.70: (9.5, 420.0), 0.77: (5.0, 150.0), 0.85: (2.6, 35.0)}),
}


@dataclass
class PhysliteSelection:
    """Identification levels, isolation and event cuts of the PHYSLITE reader."""

    electron_id: str = "Medium"  # DFCommonElectronsLH<level>, one of ELECTRON_LEVELS
    electron_track_isolation_max: float = 0.15  # Loose_VarRad
    electron_calo_isolation_max: float = 0.20
    muon_quality_max: int = 1  # 0 Tight, 1 Medium, 2 Loose, 3 VeryLoose
    muon_types: tuple = (0, 1)  # combined, stand-alone (Medium)
    muon_track_isolation_max: float = 0.15  # Loose_VarRad
    muon_calo_isolation_max: float = 0.30
    photon_calo_isolation_max: float = 0.065  # FixedCutLoose
    photon_track_isolation_max: float = 0.05
    jvt_pt_max: float = 60.0  # NNJvt applies below this pT (GeV) ...
    jvt_eta_max: float = 2.4  # ... and within this |eta|
    met_jet_pt_min: float = 20.0
    met_jet_eta_max: float = 4.5
    met_soft_term: str = "PVSoftTrkCore"
    jet_cleaning: bool = True  # EventInfoAuxDyn.DFCommonJets_eventClean_LooseBad
    detector_flags: bool = True  # collision data: LAr/Tile/SCT error states, incomplete events
    require_ids: bool = True  # refuse a file whose ID branches are missing (else: recorded as not applied)


_ELECTRON_ISO = ("ptvarcone30_Nonprompt_All_MaxWeightTTVALooseCone_pt1000", "topoetcone20")
_MUON_ISO = ("ptvarcone30_Nonprompt_All_MaxWeightTTVA_pt1000", "topoetcone20")
_PHOTON_ISO = ("topoetcone20", "ptcone20")


@dataclass
class _FilePlan:
    tagger: Tagger
    btag_cut: float
    simulation: bool
    photons: bool = False
    taus: bool = False
    applied: dict = field(default_factory=dict)  # selection name -> bool (branches present and applied)
    quality: list = field(default_factory=list)  # event cuts applied
    branches: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def default_working_point(tagger: Tagger, cfg: DetectorConfig) -> float:
    """The tagger's fixed-cut working point (its b-efficiency) whose tt̄ and W/Z + jets b-tag multiplicity is
    closest to the simulated detector's (:mod:`hepfm.io.btag_levels`)."""
    return best_level(tagger.efficiencies, cfg)


def discriminant(pb: np.ndarray, pc: np.ndarray, pu: np.ndarray, charm_fraction: float) -> np.ndarray:
    """D = ln(pb / (fc pc + (1 - fc) pu)), the b-tag discriminant of DL1d and GN2."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(pb / (charm_fraction * pc + (1.0 - charm_fraction) * pu))


def _branch(container: str, var: str) -> str:
    return f"{container}.{var}"


def _refuse_or_record(path: Path, sel: PhysliteSelection, what: str, missing: list[str], info: dict, key: str) -> bool:
    """False (and recorded) when a selection's branches are missing and require_ids is off; else raise."""
    if not missing:
        return True
    if sel.require_ids:
        raise HepfmError(f"{path}: tree {TREE!r} has no branch {', '.join(missing)} (needed for {what}); this file "
                         "cannot be given the simulated detector's selection")
    info[key] = f"not applied (no {', '.join(missing)})"
    return False


def plan_file(tree, path: Path, cfg: DetectorConfig, sel: PhysliteSelection, tagger: str | None = None,
              btag_cut: float | None = None) -> cv.FilePlan:
    """Check a PHYSLITE tree's branches and return how to convert it (errors name the file)."""
    names = set(tree.keys())
    kin = lambda c: [_branch(c, v) for v in ("pt", "eta", "phi")]  # noqa: E731
    cv.require_branches(tree, path, TREE, kin(JETS) + [BTAG_LINK], "jets")
    cv.require_branches(tree, path, TREE, kin(ELECTRONS) + [_branch(ELECTRONS, "charge")], "electrons")
    cv.require_branches(tree, path, TREE, kin(MUONS) + [_branch(MUONS, "charge")], "muons")
    cv.require_branches(tree, path, TREE, [_branch(MET_TERMS, v) for v in ("name", "mpx", "mpy")], "missing ET")
    cv.require_branches(tree, path, TREE, [_branch(EVENT, v) for v in ("eventNumber", "runNumber",
                                                                          "eventTypeBitmask")], "event identity")
    bitmask = int(tree[_branch(EVENT, "eventTypeBitmask")].array(entry_stop=1, library="np")[0])
    simulation = bool(bitmask & IS_SIMULATION)
    if simulation:
        cv.require_branches(tree, path, TREE, [_branch(EVENT, "mcEventWeights")], "the event weight of simulation")

    chosen = _choose_tagger(tree, path, names, tagger)
    level = default_working_point(chosen, cfg)
    cut = chosen.working_points[level] if btag_cut is None else float(btag_cut)
    reason = describe_choice(chosen.efficiencies, cfg, level) if btag_cut is None else "cut given by the caller"
    info: dict = {"data": "simulation" if simulation else "collision",
                  "btag": f"{chosen.name} D(fc={chosen.charm_fraction:g}) > {cut:g} "
                          + (f"({level:.0%} fixed cut)" if btag_cut is None else "(given)"),
                  "btag_tagger": chosen.name, "btag_branch": f"{BTAG}.{chosen.name}_pb/pc/pu",
                  "btag_working_point": cut, "btag_charm_fraction": chosen.charm_fraction,
                  "btag_level": f"FixedCutBEff_{round(level * 100)}" if btag_cut is None else "given",
                  "btag_level_reason": reason}
    plan = _FilePlan(tagger=chosen, btag_cut=cut, simulation=simulation)
    plan.photons = set(kin(PHOTONS)) <= names
    plan.taus = cfg.tau_tagging and set(kin(TAUS) + [_branch(TAUS, "charge")]) <= names
    _plan_ids(names, path, sel, plan, info)
    _plan_quality(names, sel, plan, info)
    info.update(photons=plan.photons, taus=plan.taus,
                met=f"-(selected objects + jets pT > {sel.met_jet_pt_min:g} GeV, |eta| < {sel.met_jet_eta_max:g}) "
                    f"+ {sel.met_soft_term}")

    wanted = kin(JETS) + [BTAG_LINK] + kin(ELECTRONS) + [_branch(ELECTRONS, "charge")]
    wanted += kin(MUONS) + [_branch(MUONS, "charge")]
    wanted += [_branch(BTAG, f"{chosen.name}_{p}") for p in ("pb", "pc", "pu")]
    wanted += [_branch(MET_TERMS, v) for v in ("name", "mpx", "mpy")]
    wanted += [_branch(EVENT, v) for v in ("eventNumber", "runNumber")]
    wanted += [_branch(EVENT, "lumiBlock")] if _branch(EVENT, "lumiBlock") in names else []
    wanted += [_branch(EVENT, "mcEventWeights")] if simulation else []
    wanted += kin(PHOTONS) if plan.photons else []
    wanted += kin(TAUS) + [_branch(TAUS, "charge")] if plan.taus else []
    wanted += plan.branches

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        return _convert_chunk(chunk, entry_start, cfg, sel, plan)

    return cv.FilePlan(path=path, tree=tree, branches=list(dict.fromkeys(wanted)), convert=convert, info=info,
                       counts=plan.counts)


def _choose_tagger(tree, path: Path, names: set[str], tagger: str | None) -> Tagger:
    def has(t: str) -> bool:
        return all(_branch(BTAG, f"{t}_{p}") in names for p in ("pb", "pc", "pu"))

    if tagger is not None:
        if tagger not in TAGGERS:
            raise HepfmError(f"unknown PHYSLITE b-tagger {tagger!r} (known: {', '.join(TAGGERS)})")
        if not has(tagger):
            raise HepfmError(f"{path}: tree {TREE!r} has no branches {BTAG}.{tagger}_pb/pc/pu (the b-tagger asked for)")
        return TAGGERS[tagger]
    for name, t in TAGGERS.items():
        if has(name):
            return t
    raise HepfmError(f"{path}: tree {TREE!r} has no b-tagging probabilities "
                     f"({', '.join(f'{BTAG}.{t}_pb/pc/pu' for t in TAGGERS)}; needed for b-tagging)")


def _plan_ids(names: set[str], path: Path, sel: PhysliteSelection, plan: _FilePlan, info: dict) -> None:
    if sel.electron_id not in ELECTRON_LEVELS:
        raise HepfmError(f"unknown electron ID level {sel.electron_id!r} (known: {', '.join(ELECTRON_LEVELS)})")

    def need(key: str, what: str, branches: list[str], label: str) -> None:
        missing = [b for b in branches if b not in names]
        plan.applied[key] = _refuse_or_record(path, sel, what, missing, info, key)
        if plan.applied[key]:
            plan.branches.extend(branches)
            info[key] = label

    need("electron_id", "the electron ID", [_branch(ELECTRONS, f"DFCommonElectronsLH{sel.electron_id}")],
         f"LH{sel.electron_id}")
    need("electron_isolation", "the electron isolation", [_branch(ELECTRONS, v) for v in _ELECTRON_ISO],
         f"Loose_VarRad (track/pT < {sel.electron_track_isolation_max:g}, "
         f"calo/pT < {sel.electron_calo_isolation_max:g})")
    need("muon_id", "the muon ID", [_branch(MUONS, "quality"), _branch(MUONS, "muonType")],
         f"quality <= {sel.muon_quality_max} (Medium), muonType in {tuple(sel.muon_types)}")
    need("muon_isolation", "the muon isolation", [_branch(MUONS, v) for v in _MUON_ISO],
         f"Loose_VarRad (track/pT < {sel.muon_track_isolation_max:g}, calo/pT < {sel.muon_calo_isolation_max:g})")
    if plan.photons:
        need("photon_id", "the photon ID", [_branch(PHOTONS, v) for v in ("DFCommonPhotonsIsEMTight",
                                                                         "DFCommonPhotonsCleaning")],
             "IsEMTight, cleaning")
        need("photon_isolation", "the photon isolation", [_branch(PHOTONS, v) for v in _PHOTON_ISO],
             f"FixedCutLoose (calo/pT < {sel.photon_calo_isolation_max:g}, track/pT < "
             f"{sel.photon_track_isolation_max:g})")
    need("jet_vertex_tagger", "the jet-vertex tagger", [_branch(JETS, "NNJvtPass")],
         f"NNJvtPass below {sel.jvt_pt_max:g} GeV, |eta| < {sel.jvt_eta_max:g}")
    if plan.taus:
        need("tau_id", "the tau ID", [_branch(TAUS, "JetDeepSetMedium")], "JetDeepSetMedium")
        if _branch(TAUS, "EleRNNLoose_v1") in names:
            plan.branches.append(_branch(TAUS, "EleRNNLoose_v1"))


def _plan_quality(names: set[str], sel: PhysliteSelection, plan: _FilePlan, info: dict) -> None:
    applied = []
    if sel.jet_cleaning:
        branch = _branch(EVENT, "DFCommonJets_eventClean_LooseBad")
        if branch in names:
            plan.quality.append("jet_cleaning")
            plan.branches.append(branch)
            applied.append("DFCommonJets_eventClean_LooseBad")
        else:
            applied.append("no DFCommonJets_eventClean_LooseBad in file")
    if sel.detector_flags and not plan.simulation:
        flags = [_branch(EVENT, f) for f in (*DETECTOR_FLAGS, "coreFlags")]
        if set(flags) <= names:
            plan.quality.append("detector_flags")
            plan.branches.extend(flags)
            applied.append("LAr/Tile/SCT error states, incomplete events")
        else:
            applied.append("no detector flags in file")
    info["event_quality"] = ", ".join(applied) or "none (switched off)"


def _count(counts: dict, name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + int(n)


def _cutflow(counts: dict, kind: str, steps: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Apply cuts in order, counting the objects each removes (``<kind> <cut>``); the combined mask."""
    keep = np.ones(len(steps[0][1]) if steps else 0, dtype=bool)
    for name, passes in steps:
        _count(counts, f"{kind} {name}", (keep & ~passes).sum())
        keep &= passes
    return keep


def _collection(chunk, container: str, extra: dict[str, str]) -> Objects:
    objs = cv.collection(chunk, *(_branch(container, v) for v in ("pt", "eta", "phi")),
                         {k: _branch(container, v) for k, v in extra.items()})
    objs.pt = objs.pt * MEV
    return objs


def _extras(plan: _FilePlan, container: str) -> dict[str, str]:
    prefix = container + "."
    return {b[len(prefix):]: b[len(prefix):] for b in plan.branches if b.startswith(prefix)}


def _convert_chunk(chunk, entry_start, cfg: DetectorConfig, sel: PhysliteSelection, plan: _FilePlan) -> dict:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    counts, on = plan.counts, plan.applied
    ele = _collection(chunk, ELECTRONS, {"q": "charge", **_extras(plan, ELECTRONS)})
    muo = _collection(chunk, MUONS, {"q": "charge", **_extras(plan, MUONS)})
    jet = _collection(chunk, JETS, _extras(plan, JETS))
    cv.mark_nonfinite(bad, ele, muo, jet)
    yes = lambda objs: np.ones(len(objs), dtype=bool)  # noqa: E731

    e = ele.extra
    keep = _cutflow(counts, "electrons", [
        ("kinematics", cfg.accepts("electron", ele.pt, np.abs(ele.eta))),
        ("id", e[f"DFCommonElectronsLH{sel.electron_id}"] > 0 if on["electron_id"] else yes(ele)),
        ("isolation", _isolated(ele, _ELECTRON_ISO, sel.electron_track_isolation_max, sel.electron_calo_isolation_max)
         if on["electron_isolation"] else yes(ele))])
    ele = cv.tag(ele[keep], "electron", charge=e["q"][keep])

    m = muo.extra
    muon_id = ((m["quality"] <= sel.muon_quality_max) & np.isin(m["muonType"], sel.muon_types)
               if on["muon_id"] else yes(muo))
    keep = _cutflow(counts, "muons", [
        ("kinematics", cfg.accepts("muon", muo.pt, np.abs(muo.eta))), ("id", muon_id),
        ("isolation", _isolated(muo, _MUON_ISO, sel.muon_track_isolation_max, sel.muon_calo_isolation_max)
         if on["muon_isolation"] else yes(muo))])
    muo = cv.tag(muo[keep], "muon", charge=m["q"][keep])

    selected = [ele, muo]
    if plan.photons:
        pho = _collection(chunk, PHOTONS, _extras(plan, PHOTONS))
        cv.mark_nonfinite(bad, pho)
        p = pho.extra
        keep = _cutflow(counts, "photons", [
            ("kinematics", cfg.accepts("photon", pho.pt, np.abs(pho.eta))),
            ("id", (p["DFCommonPhotonsIsEMTight"] > 0) & (p["DFCommonPhotonsCleaning"] > 0)
             if on["photon_id"] else yes(pho)),
            ("isolation", (p["topoetcone20"] * MEV < sel.photon_calo_isolation_max * pho.pt)
             & (p["ptcone20"] * MEV < sel.photon_track_isolation_max * pho.pt)
             if on["photon_isolation"] else yes(pho))])
        selected.append(cv.tag(pho[keep], "photon"))
    leptons = cv.merge(selected)

    jvt_ok = yes(jet)
    if on["jet_vertex_tagger"]:
        jvt_ok = (jet.pt >= sel.jvt_pt_max) | (np.abs(jet.eta) >= sel.jvt_eta_max) | (jet.extra["NNJvtPass"] > 0)
    overlap = any_within(jet, leptons, cfg.overlap_dr, n)
    met_jets = jet[(jet.pt > sel.met_jet_pt_min) & (np.abs(jet.eta) < sel.met_jet_eta_max) & jvt_ok & ~overlap]
    disc = _jet_discriminants(chunk, jet, plan)
    keep = _cutflow(counts, "jets", [("kinematics", cfg.accepts("jet", jet.pt, np.abs(jet.eta))),
                                     ("jet_vertex_tagger", jvt_ok), ("overlap", ~overlap)])
    jet, disc = jet[keep], disc[keep]

    if plan.taus:
        tau = _collection(chunk, TAUS, {"q": "charge", **_extras(plan, TAUS)})
        cv.mark_nonfinite(bad, tau)
        t = tau.extra
        steps = [("kinematics", (tau.pt >= cfg.jet_pt_min) & (np.abs(tau.eta) < cfg.tau_eta_max)
                  & ~in_crack(np.abs(tau.eta), cfg.crack_eta)),
                 ("id", t["JetDeepSetMedium"] > 0 if on["tau_id"] else yes(tau))]
        if "EleRNNLoose_v1" in t:
            steps.append(("electron_veto", t["EleRNNLoose_v1"] > 0))
        steps.append(("overlap", ~any_within(tau, leptons, cfg.overlap_dr, n)))
        keep = _cutflow(counts, "taus", steps)
        tau = cv.tag(tau[keep], "tau", charge=t["q"][keep])
        replaced = any_within(jet, tau, cfg.tau_match_dr, n)
        _count(counts, "jets replaced by taus", replaced.sum())
        met_jets = met_jets[~any_within(met_jets, tau, cfg.tau_match_dr, n)]
        jet, disc = jet[~replaced], disc[~replaced]
        selected.append(tau)
    jet = cv.tag(jet, "jet", btag=disc > plan.btag_cut)

    met_obj = _met(chunk, n, [*selected, met_jets], sel.met_soft_term)
    cv.mark_nonfinite(bad, met_obj)

    ev = lambda var: cv.flat(chunk[_branch(EVENT, var)])  # noqa: E731
    fields = set(chunk.fields)
    event_id = ak.to_numpy(chunk[_branch(EVENT, "eventNumber")]).astype(np.int64)
    run = ak.to_numpy(chunk[_branch(EVENT, "runNumber")]).astype(np.uint32)
    lumi = (ak.to_numpy(chunk[_branch(EVENT, "lumiBlock")]).astype(np.uint32) if _branch(EVENT, "lumiBlock") in fields
            else np.zeros(n, dtype=np.uint32))
    weight = np.ones(n)
    if plan.simulation:
        weights = chunk[_branch(EVENT, "mcEventWeights")]
        has = ak.to_numpy(ak.num(weights, axis=1)) > 0
        weight = np.where(has, ak.to_numpy(ak.fill_none(ak.firsts(weights), np.nan)).astype(np.float64), np.nan)
    quality = {}
    if "jet_cleaning" in plan.quality:
        quality["jet_cleaning"] = ev("DFCommonJets_eventClean_LooseBad") > 0
    if "detector_flags" in plan.quality:
        ok = np.ones(n, dtype=bool)
        for flag in DETECTOR_FLAGS:
            ok &= (ak.to_numpy(chunk[_branch(EVENT, flag)]).astype(np.uint64) >> np.uint64(28)) != 2
        core = ak.to_numpy(chunk[_branch(EVENT, "coreFlags")]).astype(np.uint64)
        quality["detector_flags"] = ok & ((core >> np.uint64(CORE_INCOMPLETE_BIT)) & np.uint64(1) == 0)
    return cv.finish_chunk([jet, *selected, met_obj], n, cfg, bad, weight, event_id, quality=quality, run=run,
                           luminosity_block=lumi)


def _isolated(objs: Objects, branches: tuple[str, str], track_max: float, calo_max: float) -> np.ndarray:
    track, calo = (objs.extra[b] * MEV for b in branches)
    return (track < track_max * objs.pt) & (calo < calo_max * objs.pt)


def _jet_discriminants(chunk, jet: Objects, plan: _FilePlan) -> np.ndarray:
    """Each jet's discriminant, through its ``btaggingLink`` into the b-tagging container (-inf: no valid link)."""
    index = cv.flat(chunk[BTAG_LINK]).astype(np.int64)
    probs = [chunk[_branch(BTAG, f"{plan.tagger.name}_{p}")] for p in ("pb", "pc", "pu")]
    sizes = ak.to_numpy(ak.num(probs[0], axis=1))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    valid = (index >= 0) & (index < sizes[jet.ev])
    _count(plan.counts, "jets without a valid b-tagging link", (~valid).sum())
    flat = [cv.flat(p) for p in probs]
    row = np.where(valid, offsets[jet.ev] + index, 0)
    disc = discriminant(*(f[row] if len(f) else np.zeros(len(row)) for f in flat), plan.tagger.charm_fraction)
    return np.where(valid, disc, -np.inf)


def _met(chunk, n: int, objects: list[Objects], soft_term: str):
    px = np.zeros(n)
    py = np.zeros(n)
    for objs in objects:
        np.add.at(px, objs.ev, -objs.pt * np.cos(objs.phi))
        np.add.at(py, objs.ev, -objs.pt * np.sin(objs.phi))
    is_soft = chunk[_branch(MET_TERMS, "name")] == soft_term
    px += ak.to_numpy(ak.sum(chunk[_branch(MET_TERMS, "mpx")][is_soft], axis=1)).astype(np.float64) * MEV
    py += ak.to_numpy(ak.sum(chunk[_branch(MET_TERMS, "mpy")][is_soft], axis=1)).astype(np.float64) * MEV
    return cv.met_object(np.hypot(px, py), np.arctan2(py, px))


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, selection: PhysliteSelection | None = None,
               tagger: str | None = None, btag_cut: float | None = None) -> tuple[list[Path], list, dict]:
    """Open and check PHYSLITE files (names or glob patterns): (paths, one plan per file, shard attributes)."""
    if btag_cut is not None and not np.isfinite(btag_cut):
        raise HepfmError(f"the b-tag cut must be a finite number, got {btag_cut}")
    sel = selection or PhysliteSelection()
    paths = cv.expand_inputs(inputs)
    plans = []
    for p in paths:
        tree = open_events(p, TREE)
        try:
            plans.append(plan_file(tree, p, cfg, sel, tagger, btag_cut))
        except HepfmError:
            raise
        except Exception as exc:  # a branch that fails to decode while it is checked: truncated or corrupt file
            raise HepfmError(f"{p}: cannot read the branches of tree {TREE!r}, the file may be truncated or "
                             f"corrupt ({cv.reason(exc)})") from None
    attrs = {"selection": {"format": FORMAT.description, **asdict(sel)},
             "btag_branch": ", ".join(sorted({p.info["btag_branch"] for p in plans})),
             "btag_working_point": ", ".join(sorted({f"{p.info['btag_working_point']:g}" for p in plans}))}
    return paths, plans, attrs


def convert_physlite(inputs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                     tagger: str | None = None, btag_cut: float | None = None, detector: DetectorConfig | None = None,
                     selection: PhysliteSelection | None = None, shard_size: int = cv.DEFAULT_SHARD_SIZE,
                     step_size: int = cv.DEFAULT_STEP_SIZE, progress: bool = True) -> cv.ConversionReport:
    """Convert PHYSLITE files (names or glob patterns) into the event store ``out/label``."""
    cfg = detector or DetectorConfig()
    paths, plans, attrs = plan_files(inputs, cfg, selection, tagger, btag_cut)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format=FORMAT.name, tree_name=TREE,
                            detector=cfg, attrs=attrs, shard_size=shard_size, step_size=step_size,
                            progress=progress)
