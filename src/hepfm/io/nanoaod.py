"""CMS NanoAOD reader: the ``Events`` tree's Jet, Electron, Muon, Photon, Tau and MET collections as
event-store objects, with the same kinematic selection, overlap removal, ordering and truncation as the
simulated detector (:class:`~hepfm.physics.detector.DetectorConfig` cut values).

Object definitions (the NanoAOD flags are used where the file has them, since branch sets differ between
NanoAOD versions; what each file used is recorded in the shard attributes under ``source_info``):

* electrons: pT, |eta| and crack cuts of the configuration; cut-based ID ``Electron_cutBased >= 3``
  (medium, which includes isolation); without that branch, ``Electron_pfRelIso03_all`` below the
  configuration's ``electron_isolation_max``;
* muons: pT and |eta| cuts; ``Muon_tightId`` (else ``mediumId``, else ``looseId``) and
  ``Muon_pfRelIso04_all`` below ``muon_isolation_max`` (0.25, CMS's loose PF isolation);
* photons (optional collection): pT, |eta| and crack cuts; ``Photon_cutBased >= 2`` (medium, NanoAOD v1
  and v8+) or bit 2 of ``Photon_cutBasedBitmap`` (v4-v7), else ``Photon_pfRelIso03_all`` below
  ``photon_isolation_max``; ``Photon_electronVeto`` where present, so an electron is not also a photon;
* jets: pT and |eta| cuts; tight jet ID (``Jet_jetId`` bit 2) where present; jets within ``overlap_dr``
  of a selected electron, muon or photon are removed; b-tag = discriminant above a working point;
* taus (only with ``tau_tagging`` on, as in the simulated chain): pT >= ``jet_pt_min``,
  |eta| < ``tau_eta_max``, decay-mode finding and DeepTau-vs-jet medium where present; taus within
  ``overlap_dr`` of a selected lepton or photon are dropped, jets within ``tau_match_dr`` of a kept tau
  are replaced by it. With tau tagging off, hadronic taus stay jets, as in the simulation;
* missing ET: ``MET_pt``/``MET_phi`` (else ``PFMET`` (NanoAOD v13+), else ``PuppiMET``), eta = 0.

b-tagging: the first of ``Jet_btagDeepFlavB`` (DeepJet), ``Jet_btagDeepB`` (DeepCSV, dropped in Run-3
NanoAOD) and ``Jet_btagCSVV2`` that the file has, cut at the CMS 2017 (94X) *medium* working point
(:data:`BTAG_WORKING_POINTS`, about 1% light-jet mistag rate). Working points depend on the data-taking
era; give the analysis's own with ``--btag-cut`` (and any ``Jet_*`` discriminant with ``--btag-branch``).

``event_id`` is the CMS event number (``event``); ``run`` and ``luminosity_block`` are stored next to it
(0 when absent). ``weight`` is ``genWeight`` for simulation, 1 for collision data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import any_within

TREE = "Events"
#: Medium working points of the CMS b-tag discriminants (BTV recommendations for 2017 data, 94X).
BTAG_WORKING_POINTS: dict[str, float] = {"Jet_btagDeepFlavB": 0.3033, "Jet_btagDeepB": 0.4941,
                                         "Jet_btagCSVV2": 0.8838}
MET_BRANCHES = (("MET_pt", "MET_phi"), ("PFMET_pt", "PFMET_phi"), ("PuppiMET_pt", "PuppiMET_phi"))
_KINEMATICS = ("pt", "eta", "phi")


@dataclass
class NanoAODSelection:
    """Identification working points applied where the NanoAOD file has the branches."""

    electron_cut_based_min: int = 3  # 0 fail, 1 veto, 2 loose, 3 medium, 4 tight
    muon_ids: tuple = ("Muon_tightId", "Muon_mediumId", "Muon_looseId")  # first present is used
    photon_cut_based_min: int = 2  # 0 fail, 1 loose, 2 medium, 3 tight
    photon_bitmap_bit: int = 2  # Photon_cutBasedBitmap: 1 loose, 2 medium, 4 tight
    photon_electron_veto: bool = True
    jet_id_bit: int = 2  # Jet_jetId: bit 1 loose (2016), bit 2 tight, bit 4 tight lepton veto
    tau_deeptau_v2p1_bit: int = 16  # Tau_idDeepTau2017v2p1VSjet bitmask: 16 = medium
    tau_deeptau_v2p5_min: int = 5  # Tau_idDeepTau2018v2p5VSjet (Run 3): 5 = medium


#: Entries sampled to recognise branches that a file carries but never filled (see :func:`filled`).
PLACEHOLDER_SAMPLE = 5000


def filled(tree, name: str, sample: int = PLACEHOLDER_SAMPLE) -> bool:
    """False for a branch that holds one constant value in its first entries (at least 10 values).

    Some files keep branches they could not compute with a default value: the CMS 2015 Open Data NanoAOD
    has ``Jet_btagDeepFlavB = -3000``, ``Jet_btagDeepB = -1`` and every ``Muon_*Id`` false. Such a
    branch is treated as absent. A constant pass/fail flag is safe to ignore either way.
    """
    import awkward as ak

    values = ak.to_numpy(ak.flatten(tree[name].array(entry_stop=sample), axis=None))
    return len(values) < 10 or bool(np.any(values != values[0]))


def _optional(tree, names: Sequence[str], check: bool = True) -> tuple[dict[str, str], list[str]]:
    present = [name for name in names if cv.has_branch(tree, name)]
    unfilled = [name for name in present if check and not filled(tree, name)]
    return {name: name for name in present if name not in unfilled}, unfilled


def plan_file(tree, path: Path, cfg: DetectorConfig, sel: NanoAODSelection, btag_branch: str | None = None,
              btag_cut: float | None = None) -> cv.FilePlan:
    """Check a NanoAOD tree's branches and return how to convert it (errors name the missing branch)."""
    need = lambda coll: [f"{coll}_{k}" for k in _KINEMATICS]  # noqa: E731
    cv.require_branches(tree, path, TREE, need("Jet"), "jets")
    cv.require_branches(tree, path, TREE, need("Electron") + ["Electron_charge"], "electrons")
    cv.require_branches(tree, path, TREE, need("Muon") + ["Muon_charge"], "muons")
    met = next((pair for pair in MET_BRANCHES if all(cv.has_branch(tree, b) for b in pair)), None)
    if met is None:
        raise HepfmError(f"{path}: tree {TREE!r} has no missing-ET branches "
                         f"({', '.join(p[0] for p in MET_BRANCHES)}; needed for MET)")
    unfilled: list[str] = []
    if btag_branch is None:
        present = [b for b in BTAG_WORKING_POINTS if cv.has_branch(tree, b)]
        unfilled = [b for b in present if not filled(tree, b)]
        btag_branch = next((b for b in present if b not in unfilled), None)
        if btag_branch is None:
            why = f" ({', '.join(unfilled)} hold only a placeholder value)" if unfilled else ""
            raise HepfmError(f"{path}: tree {TREE!r} has no filled b-tag discriminant "
                             f"({', '.join(BTAG_WORKING_POINTS)}){why}; name one with --btag-branch and --btag-cut")
    else:
        cv.require_branches(tree, path, TREE, [btag_branch], "--btag-branch")
    if btag_cut is None:
        if btag_branch not in BTAG_WORKING_POINTS:
            raise HepfmError(f"{btag_branch}: no default working point for this discriminant; give --btag-cut")
        btag_cut = BTAG_WORKING_POINTS[btag_branch]

    photons = all(cv.has_branch(tree, b) for b in need("Photon"))
    taus = cfg.tau_tagging and all(cv.has_branch(tree, b) for b in need("Tau") + ["Tau_charge"])
    wanted = ["Electron_cutBased", "Electron_pfRelIso03_all", "Muon_pfRelIso04_all", "Jet_jetId"]
    if photons:
        wanted += ["Photon_cutBased", "Photon_cutBasedBitmap", "Photon_electronVeto", "Photon_pfRelIso03_all"]
    if taus:
        wanted += ["Tau_idDecayModeNewDMs", "Tau_idDecayMode", "Tau_idDeepTau2017v2p1VSjet",
                   "Tau_idDeepTau2018v2p5VSjet"]
    flags, unfilled_flags = _optional(tree, wanted)
    flags.update(_optional(tree, ["run", "luminosityBlock", "event", "genWeight"], check=False)[0])
    ids, unfilled_ids = _optional(tree, sel.muon_ids)
    muon_id = next((name for name in sel.muon_ids if name in ids), None)
    unfilled += unfilled_flags + unfilled_ids
    branches = need("Jet") + [btag_branch] + need("Electron") + ["Electron_charge"] + need("Muon") + ["Muon_charge"]
    branches += list(met) + list(flags) + ([muon_id] if muon_id else [])
    branches += need("Photon") if photons else []
    branches += need("Tau") + ["Tau_charge"] if taus else []
    info = {"btag": f"{btag_branch} > {btag_cut:g}", "btag_branch": btag_branch, "btag_working_point": btag_cut,
            "met": met[0].split("_")[0], "photons": photons, "taus": taus, "muon_id": muon_id or "none",
            "id_branches": sorted(k for k in flags if "_" in k and k != "genWeight"),
            "constant_branches": sorted(unfilled)}

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        return _convert_chunk(chunk, entry_start, cfg, sel, btag_branch, btag_cut, met, flags, muon_id, photons,
                              taus)

    return cv.FilePlan(path=path, tree=tree, branches=list(dict.fromkeys(branches)), convert=convert, info=info)


def _convert_chunk(chunk, entry_start, cfg: DetectorConfig, sel: NanoAODSelection, btag_branch, btag_cut, met,
                   flags, muon_id, photons, taus) -> dict[str, np.ndarray]:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    kin = lambda coll: (f"{coll}_pt", f"{coll}_eta", f"{coll}_phi")  # noqa: E731

    ele_flags = _pick(flags, id="Electron_cutBased", iso="Electron_pfRelIso03_all")
    ele = cv.collection(chunk, *kin("Electron"), {"q": "Electron_charge", **ele_flags})
    muo = cv.collection(chunk, *kin("Muon"), {"q": "Muon_charge", **_pick(flags, iso="Muon_pfRelIso04_all"),
                                              **({"id": muon_id} if muon_id else {})})
    jet = cv.collection(chunk, *kin("Jet"), {"disc": btag_branch, **_pick(flags, id="Jet_jetId")})
    parts = [ele, muo, jet]
    cv.mark_nonfinite(bad, *parts)

    keep = cfg.accepts("electron", ele.pt, np.abs(ele.eta))
    if "id" in ele.extra:
        keep &= ele.extra["id"] >= sel.electron_cut_based_min
    elif "iso" in ele.extra:
        keep &= ele.extra["iso"] <= cfg.electron_isolation_max
    ele = cv.tag(ele[keep], "electron", charge=ele.extra["q"][keep])

    keep = cfg.accepts("muon", muo.pt, np.abs(muo.eta))
    if "id" in muo.extra:
        keep &= muo.extra["id"] > 0
    if "iso" in muo.extra:
        keep &= muo.extra["iso"] <= cfg.muon_isolation_max
    muo = cv.tag(muo[keep], "muon", charge=muo.extra["q"][keep])

    selected = [ele, muo]
    if photons:
        pho = cv.collection(chunk, *kin("Photon"), _pick(flags, id="Photon_cutBased", bits="Photon_cutBasedBitmap",
                                                         veto="Photon_electronVeto", iso="Photon_pfRelIso03_all"))
        cv.mark_nonfinite(bad, pho)
        keep = cfg.accepts("photon", pho.pt, np.abs(pho.eta))
        if "id" in pho.extra:
            keep &= pho.extra["id"] >= sel.photon_cut_based_min
        elif "bits" in pho.extra:
            keep &= (pho.extra["bits"].astype(np.int64) & sel.photon_bitmap_bit) > 0
        elif "iso" in pho.extra:
            keep &= pho.extra["iso"] <= cfg.photon_isolation_max
        if sel.photon_electron_veto and "veto" in pho.extra:
            keep &= pho.extra["veto"] > 0
        selected.append(cv.tag(pho[keep], "photon"))
    leptons = cv.merge(selected)

    keep = cfg.accepts("jet", jet.pt, np.abs(jet.eta))
    if "id" in jet.extra:
        keep &= (jet.extra["id"].astype(np.int64) & sel.jet_id_bit) > 0
    jet = jet[keep]
    jet = jet[~any_within(jet, leptons, cfg.overlap_dr, n)]

    if taus:
        tau = cv.collection(chunk, *kin("Tau"), {"q": "Tau_charge", **_pick(
            flags, dm="Tau_idDecayModeNewDMs", dm_old="Tau_idDecayMode", v2p1="Tau_idDeepTau2017v2p1VSjet",
            v2p5="Tau_idDeepTau2018v2p5VSjet")})
        cv.mark_nonfinite(bad, tau)
        keep = (tau.pt >= cfg.jet_pt_min) & (np.abs(tau.eta) < cfg.tau_eta_max)
        dm = tau.extra.get("dm", tau.extra.get("dm_old"))
        if dm is not None:
            keep &= dm > 0
        if "v2p5" in tau.extra:
            keep &= tau.extra["v2p5"] >= sel.tau_deeptau_v2p5_min
        elif "v2p1" in tau.extra:
            keep &= (tau.extra["v2p1"].astype(np.int64) & sel.tau_deeptau_v2p1_bit) > 0
        tau = tau[keep]
        tau = tau[~any_within(tau, leptons, cfg.overlap_dr, n)]
        tau = cv.tag(tau, "tau", charge=tau.extra["q"])
        jet = jet[~any_within(jet, tau, cfg.tau_match_dr, n)]
        selected.append(tau)
    jet = cv.tag(jet, "jet", btag=jet.extra["disc"] > btag_cut)

    met_pt, met_phi = cv.flat(chunk[met[0]]), cv.flat(chunk[met[1]])
    met_obj = cv.met_object(met_pt, met_phi)
    cv.mark_nonfinite(bad, met_obj)

    fields = chunk.fields
    event_id = (cv.flat(chunk["event"]).astype(np.int64) if "event" in fields
                else np.arange(entry_start, entry_start + n, dtype=np.int64))
    weight = cv.flat(chunk["genWeight"]) if "genWeight" in fields else np.ones(n)
    zeros = np.zeros(n, dtype=np.uint32)
    run = cv.flat(chunk["run"]).astype(np.uint32) if "run" in fields else zeros
    lumi = cv.flat(chunk["luminosityBlock"]).astype(np.uint32) if "luminosityBlock" in fields else zeros
    return cv.finish_chunk([jet, *selected, met_obj], n, cfg, bad, weight, event_id, run=run,
                           luminosity_block=lumi)


def _pick(flags: dict[str, str], **wanted: str) -> dict[str, str]:
    """The subset of ``wanted`` (key -> branch) whose branch the file has."""
    return {key: branch for key, branch in wanted.items() if branch in flags}


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, selection: NanoAODSelection | None = None,
               btag_branch: str | None = None, btag_cut: float | None = None) -> tuple[list[Path], list, dict]:
    """Open and check NanoAOD files (names or glob patterns): (paths, one plan per file, shard attributes)."""
    if btag_cut is not None and not np.isfinite(btag_cut):
        raise HepfmError(f"the b-tag cut must be a finite number, got {btag_cut}")
    sel = selection or NanoAODSelection()
    paths = cv.expand_inputs(inputs)
    plans = [plan_file(cv.open_tree(p, TREE), p, cfg, sel, btag_branch, btag_cut) for p in paths]
    attrs = {"selection": {"format": "CMS NanoAOD", **asdict(sel)},
             "btag_branch": ", ".join(sorted({p.info["btag_branch"] for p in plans})),
             "btag_working_point": ", ".join(sorted({f"{p.info['btag_working_point']:g}" for p in plans}))}
    return paths, plans, attrs


def convert_nanoaod(inputs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                    btag_branch: str | None = None, btag_cut: float | None = None,
                    detector: DetectorConfig | None = None, selection: NanoAODSelection | None = None,
                    shard_size: int = cv.DEFAULT_SHARD_SIZE, step_size: int = cv.DEFAULT_STEP_SIZE,
                    progress: bool = True) -> cv.ConversionReport:
    """Convert NanoAOD files (names or glob patterns) into the event store ``out/label``."""
    cfg = detector or DetectorConfig()
    paths, plans, attrs = plan_files(inputs, cfg, selection, btag_branch, btag_cut)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format="nanoaod", tree_name=TREE,
                            detector=cfg, attrs=attrs, shard_size=shard_size, step_size=step_size,
                            progress=progress)
