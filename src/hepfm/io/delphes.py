"""Delphes reader: the ``Delphes`` tree's Jet, Electron, Muon, Photon and MissingET branches as
event-store objects, with the configuration's pT/eta/crack cuts and the simulated chain's overlap
removal, ordering and truncation.

Branch names are those Delphes' TreeWriter writes for the classes of ``classes/DelphesClasses.h``:
``Jet.PT``, ``Jet.Eta``, ``Jet.Phi``, ``Jet.BTag``, ``Jet.TauTag``, ``Jet.Charge``, ``Electron.PT`` …
``Electron.Charge``, ``Muon.*``, ``Photon.PT``/``Eta``/``Phi``, ``MissingET.MET``/``Phi`` and, when
present, ``Event.Number`` and ``Event.Weight``. In a Delphes file they are sub-branches of split
TClonesArray branches (``Jet/Jet.PT``); uproot finds them by their own name at any depth, so a tree
with the same names at the top level (what uproot itself can write, as the tests do) reads the same.

Delphes has already applied its card's efficiencies, isolation and resolutions, so only the kinematic
cuts of :class:`~hepfm.physics.detector.DetectorConfig` are applied here (no second isolation).
b-tag: bit ``btag_bit`` (default 0, the card's first working point) of ``Jet.BTag``. With
``tau_tagging`` on, jets with bit 0 of ``Jet.TauTag`` and |eta| < ``tau_eta_max`` become taus (type 5)
whose charge is the sign of ``Jet.Charge`` (the constituents' charge sum), as in the simulated chain.

Jet constituents (``constituents`` = K > 0): ``Jet.Constituents`` is a TRefArray per jet, read by uproot
as the referenced objects' unique IDs (``refs``). Delphes' TreeWriter gives every object it writes the
unique ID of the candidate it comes from, so a reference resolves, within its event, to the object of the
same ``fUniqueID`` in the collections jets are made of: ``EFlowTrack`` (electron, muon or charged hadron
by ``PID``), ``EFlowPhoton``, ``EFlowNeutralHadron``, ``EFlowTower`` (photon when ``Eem`` > ``Ehad``),
``EFlowMuon`` and ``ParticleFlowCandidate``, the first collection holding an ID winning; only when a file
has none of them, ``Track`` and ``Tower`` (cards that cluster tracks and calorimeter towers). References
to objects the file does not store are dropped and counted (:attr:`hepfm.io.convert.ConversionReport.counts`); a file
where fewer than half resolve is refused. A track's energy is the massless one (pT cosh eta; the
simulated chain keeps each particle's own); towers and candidates keep their ``E``.
The jet's truth flavour comes from ``Jet.Flavor`` (the card's flavour association: 5 b, 4 c, 1-3 light,
21 gluon; anything else, or no branch, unmatched); Delphes does not tag top, W/Z or Higgs jets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.io.schema import constituent_attrs
from hepfm.physics import kinematics as kin
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import CONSTITUENT_CLASSES, Objects, any_within, constituent_class
from hepfm.physics.truth import JET_FLAVOURS

TREE = "Delphes"
_KINEMATICS = ("PT", "Eta", "Phi")
#: Collections jets reference as constituents, in order of precedence, and the kind of object each holds.
CONSTITUENT_SOURCES = {"EFlowTrack": "track", "EFlowPhoton": "photon", "EFlowNeutralHadron": "neutral_hadron",
                       "EFlowTower": "tower", "EFlowMuon": "muon", "ParticleFlowCandidate": "candidate"}
#: Read only when a file has none of the above (cards that cluster tracks and calorimeter towers).
FALLBACK_SOURCES = {"Track": "track", "Tower": "tower"}
_SOURCE_FIELDS = {"track": ("PT", "Eta", "Phi", "Charge", "PID"), "photon": ("ET", "Eta", "Phi", "E"),
                  "neutral_hadron": ("ET", "Eta", "Phi", "E"), "candidate": ("PT", "Eta", "Phi", "E", "Charge", "PID"),
                  "tower": ("ET", "Eta", "Phi", "E", "Eem", "Ehad"), "muon": ("PT", "Eta", "Phi", "Charge")}
#: A file whose jets' references mostly point elsewhere is refused rather than stored with empty jets.
MIN_RESOLVED_FRACTION = 0.5
_DELPHES_FLAVOUR = {1: "light", 2: "light", 3: "light", 4: "c", 5: "b", 21: "gluon"}
_UID_BITS = 24  # a TRef keeps the low 24 bits of the object's unique ID (the rest name the process)


def _names(branch: str, *fields: str) -> list[str]:
    return [f"{branch}.{f}" for f in fields]


def plan_file(tree, path: Path, cfg: DetectorConfig, btag_bit: int = 0, constituents: int = 0) -> cv.FilePlan:
    """Check a Delphes tree's branches and return how to convert it (errors name the missing branch).

    ``constituents`` = K > 0 also keeps up to K constituents and the truth flavour of every jet.
    """
    cv.require_branches(tree, path, TREE, _names("Jet", *_KINEMATICS, "BTag"), "jets")
    cv.require_branches(tree, path, TREE, _names("Electron", *_KINEMATICS, "Charge"), "electrons")
    cv.require_branches(tree, path, TREE, _names("Muon", *_KINEMATICS, "Charge"), "muons")
    cv.require_branches(tree, path, TREE, _names("MissingET", "MET", "Phi"), "missing ET")
    if cfg.tau_tagging:
        cv.require_branches(tree, path, TREE, _names("Jet", "TauTag", "Charge"), "tau tagging")
    photons = all(cv.has_branch(tree, b) for b in _names("Photon", *_KINEMATICS))
    event = [b for b in ("Event.Number", "Event.Weight") if cv.has_branch(tree, b)]
    branches = (_names("Jet", *_KINEMATICS, "BTag") + _names("Electron", *_KINEMATICS, "Charge")
                + _names("Muon", *_KINEMATICS, "Charge") + _names("MissingET", "MET", "Phi") + event)
    branches += _names("Photon", *_KINEMATICS) if photons else []
    branches += _names("Jet", "TauTag", "Charge") if cfg.tau_tagging else []
    info = {"btag": f"Jet.BTag bit {btag_bit}", "btag_branch": "Jet.BTag", "btag_working_point": f"bit {btag_bit}",
            "photons": photons, "taus": cfg.tau_tagging, "event_branches": event}
    sources: dict[str, str] = {}
    flavour = False
    if constituents:
        cv.require_branches(tree, path, TREE, ["Jet.Constituents"], "jet constituents")
        sources = _present(tree, CONSTITUENT_SOURCES) or _present(tree, FALLBACK_SOURCES)
        if not sources:
            known = ", ".join([*CONSTITUENT_SOURCES, *FALLBACK_SOURCES])
            raise HepfmError(f"{path}: its jets reference their constituents, but the tree stores none of the "
                             f"collections they point to ({known}, each with fUniqueID)")
        flavour = cv.has_branch(tree, "Jet.Flavor")
        branches += ["Jet.Constituents"] + (["Jet.Flavor"] if flavour else [])
        for name, kind in sources.items():
            branches += _names(name, "fUniqueID", *_SOURCE_FIELDS[kind])
        info.update(constituent_sources=list(sources), jet_flavour="Jet.Flavor" if flavour else "none")
    counts = {"constituent_references": 0, "constituent_references_resolved": 0} if constituents else {}

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        if not constituents:
            return _convert_chunk(chunk, entry_start, cfg, btag_bit, photons)
        jc = _jet_constituents(chunk, path, sources, flavour, constituents, counts)
        return _convert_chunk(chunk, entry_start, cfg, btag_bit, photons, jc)

    return cv.FilePlan(path=path, tree=tree, branches=branches, convert=convert, info=info, counts=counts)


def _present(tree, candidates: dict[str, str]) -> dict[str, str]:
    """The constituent collections of ``candidates`` the tree stores with every branch they need."""
    return {name: kind for name, kind in candidates.items()
            if all(cv.has_branch(tree, b) for b in _names(name, "fUniqueID", *_SOURCE_FIELDS[kind]))}


def _objects(chunk, branch: str, *extra: str) -> Objects:
    return cv.collection(chunk, *_names(branch, *_KINEMATICS), {e: f"{branch}.{e}" for e in extra})


def _convert_chunk(chunk, entry_start: int, cfg: DetectorConfig, btag_bit: int, photons: bool,
                   constituents: cv.JetConstituents | None = None) -> dict:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    ele, muo = _objects(chunk, "Electron", "Charge"), _objects(chunk, "Muon", "Charge")
    jet = _objects(chunk, "Jet", "BTag", *(("TauTag", "Charge") if cfg.tau_tagging else ()))
    jet.extra["row"] = np.arange(len(jet))
    cv.mark_nonfinite(bad, ele, muo, jet)

    ele = ele[cfg.accepts("electron", ele.pt, np.abs(ele.eta))]
    selected = [cv.tag(ele, "electron", charge=ele.extra["Charge"])]
    muo = muo[cfg.accepts("muon", muo.pt, np.abs(muo.eta))]
    selected.append(cv.tag(muo, "muon", charge=muo.extra["Charge"]))
    if photons:
        pho = _objects(chunk, "Photon")
        cv.mark_nonfinite(bad, pho)
        selected.append(cv.tag(pho[cfg.accepts("photon", pho.pt, np.abs(pho.eta))], "photon"))
    leptons = cv.merge(selected)

    jet = jet[cfg.accepts("jet", jet.pt, np.abs(jet.eta))]
    jet = jet[~any_within(jet, leptons, cfg.overlap_dr, n)]
    btag = (jet.extra["BTag"].astype(np.int64) >> btag_bit) & 1
    if cfg.tau_tagging:
        is_tau = ((jet.extra["TauTag"].astype(np.int64) & 1) > 0) & (np.abs(jet.eta) < cfg.tau_eta_max)
        tau = jet[is_tau]
        # Delphes' Jet.Charge is the constituents' charge sum; the simulated chain stores its sign
        selected.append(cv.tag(tau, "tau", charge=np.sign(tau.extra["Charge"])))
        jet, btag = jet[~is_tau], btag[~is_tau]
    jet = cv.tag(jet, "jet", btag=btag)

    met = cv.met_object(_first(chunk["MissingET.MET"]), _first(chunk["MissingET.Phi"]))
    cv.mark_nonfinite(bad, met)  # an event without a MissingET entry reads as NaN and is dropped
    fields = chunk.fields
    event_id = (_first(chunk["Event.Number"]).astype(np.int64) if "Event.Number" in fields
                else np.arange(entry_start, entry_start + n, dtype=np.int64))
    weight = _first(chunk["Event.Weight"]) if "Event.Weight" in fields else np.ones(n)
    return cv.finish_chunk([jet, *selected, met], n, cfg, bad, weight, event_id, constituents=constituents)


def _jet_constituents(chunk, path: Path, sources: dict[str, str], flavour: bool, k: int,
                      counts: dict[str, int]) -> cv.JetConstituents:
    """Resolve every jet's constituent references (see the module docstring) into flat constituents;
    ``counts`` adds up the references and those resolved."""
    refs = chunk["Jet.Constituents"]["refs"]  # uproot reads a TRefArray as a record: fName, fSize, refs
    per_jet = ak.to_numpy(ak.flatten(ak.num(refs, axis=2), axis=None)).astype(np.int64)
    jets_per_event = ak.to_numpy(ak.num(chunk["Jet.PT"], axis=1))
    if len(per_jet) != jets_per_event.sum():
        raise HepfmError(f"{path}: Jet.Constituents holds {len(per_jet)} jets where Jet.PT holds "
                         f"{jets_per_event.sum()}; the file is inconsistent")
    ref_jet = np.repeat(np.arange(len(per_jet)), per_jet)
    jet_event = np.repeat(np.arange(len(chunk)), jets_per_event)
    ref_key = _uid_key(jet_event[ref_jet], ak.to_numpy(ak.flatten(refs, axis=None)))

    keys, columns = [], []
    for name, kind in sources.items():
        uid = chunk[f"{name}.fUniqueID"]
        ev = np.repeat(np.arange(len(chunk)), ak.to_numpy(ak.num(uid, axis=1)))
        keys.append(_uid_key(ev, ak.to_numpy(ak.flatten(uid))))
        columns.append(_source_columns(chunk, name, kind))
    key = np.concatenate(keys)
    merged = {c: np.concatenate([part[c] for part in columns]) for c in columns[0]}
    unique, first = np.unique(key, return_index=True)  # an ID in two collections: the first one's object
    pos = np.minimum(np.searchsorted(unique, ref_key), max(len(unique) - 1, 0))
    found = (unique[pos] == ref_key) if len(unique) else np.zeros(len(ref_key), dtype=bool)
    rows = first[pos[found]]
    counts["constituent_references"] += len(ref_key)
    counts["constituent_references_resolved"] += int(found.sum())
    if len(ref_key) >= 100 and found.mean() < MIN_RESOLVED_FRACTION:
        raise HepfmError(f"{path}: only {int(found.sum())} of {len(ref_key)} jet constituent references resolve to "
                         f"the stored {', '.join(sources)} objects; the jets are made of objects this file does "
                         "not store")

    codes = np.full(len(per_jet), JET_FLAVOURS["unmatched"], dtype=np.int8)
    if flavour:
        pdg = np.abs(cv.flat(chunk["Jet.Flavor"])).astype(np.int64)
        for code, name in _DELPHES_FLAVOUR.items():
            codes[pdg == code] = JET_FLAVOURS[name]
    return cv.JetConstituents(jet=ref_jet[found], columns={c: v[rows] for c, v in merged.items()}, flavour=codes,
                              k=k)


def _uid_key(ev: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """One integer per (event, unique ID): references resolve within their event."""
    return (np.asarray(ev, dtype=np.int64) << _UID_BITS) | (np.asarray(uid, dtype=np.int64) & ((1 << _UID_BITS) - 1))


def _source_columns(chunk, name: str, kind: str) -> dict[str, np.ndarray]:
    """pt, eta, phi, energy, charge and class of every object of one constituent collection."""
    def field(f):
        return cv.flat(chunk[f"{name}.{f}"])

    eta = field("Eta")
    pt = field("ET") if kind in ("photon", "neutral_hadron", "tower") else field("PT")
    energy = kin.massless_energy(pt, eta) if kind in ("track", "muon") else field("E")
    charge = field("Charge") if kind in ("track", "candidate", "muon") else np.zeros(len(pt))
    if kind in ("track", "candidate"):
        cls = constituent_class(field("PID"), charge)
    elif kind == "muon":
        cls = np.full(len(pt), CONSTITUENT_CLASSES["muon"])
    elif kind == "tower":
        cls = np.where(field("Eem") > field("Ehad"), CONSTITUENT_CLASSES["photon"],
                       CONSTITUENT_CLASSES["neutral_hadron"])
    else:
        cls = np.full(len(pt), CONSTITUENT_CLASSES[kind])
    return {"pt": pt, "eta": eta, "phi": field("Phi"), "energy": energy, "charge": charge,
            "class": cls.astype(np.float64)}


def _first(values) -> np.ndarray:
    """The first entry per event of a one-element-per-event collection (NaN where it is empty)."""
    if values.ndim > 1:
        values = ak.fill_none(ak.firsts(values), np.nan)
    return np.asarray(ak.to_numpy(values), dtype=np.float64)


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, btag_bit: int = 0,
               constituents: int = 0) -> tuple[list[Path], list, dict]:
    """Open and check Delphes files (names or glob patterns): (paths, one plan per file, shard attributes).

    ``constituents`` = K > 0: every file must carry jet constituents (see the module docstring).
    """
    if not 0 <= btag_bit < 31:
        raise HepfmError(f"the b-tag bit must be between 0 and 30, got {btag_bit}")
    if constituents < 0:
        raise HepfmError(f"the number of constituents per jet must be 0 or positive, got {constituents}")
    paths = cv.expand_inputs(inputs)
    plans = [plan_file(cv.open_tree(p, TREE), p, cfg, btag_bit, constituents) for p in paths]
    attrs = {"selection": {"format": "Delphes", "note": "Delphes card efficiencies and isolation, plus the "
                           "detector configuration's kinematic cuts and overlap removal"},
             "btag_branch": "Jet.BTag", "btag_working_point": f"bit {btag_bit}"}
    if constituents:
        attrs.update(constituent_attrs(constituents))
    return paths, plans, attrs


def convert_delphes(inputs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                    btag_bit: int = 0, detector: DetectorConfig | None = None,
                    shard_size: int = cv.DEFAULT_SHARD_SIZE, step_size: int = cv.DEFAULT_STEP_SIZE,
                    progress: bool = True, constituents: int = 0) -> cv.ConversionReport:
    """Convert Delphes ROOT files (names or glob patterns) into the event store ``out/label``;
    ``constituents`` = K > 0 also stores up to K constituents and the truth flavour of every jet."""
    cfg = detector or DetectorConfig()
    paths, plans, attrs = plan_files(inputs, cfg, btag_bit, constituents)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format="delphes", tree_name=TREE,
                            detector=cfg, attrs=attrs, shard_size=shard_size, step_size=step_size,
                            progress=progress)
