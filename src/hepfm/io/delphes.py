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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import Objects, any_within

TREE = "Delphes"
_KINEMATICS = ("PT", "Eta", "Phi")


def _names(branch: str, *fields: str) -> list[str]:
    return [f"{branch}.{f}" for f in fields]


def plan_file(tree, path: Path, cfg: DetectorConfig, btag_bit: int = 0) -> cv.FilePlan:
    """Check a Delphes tree's branches and return how to convert it (errors name the missing branch)."""
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

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        return _convert_chunk(chunk, entry_start, cfg, btag_bit, photons)

    return cv.FilePlan(path=path, tree=tree, branches=branches, convert=convert, info=info)


def _objects(chunk, branch: str, *extra: str) -> Objects:
    return cv.collection(chunk, *_names(branch, *_KINEMATICS), {e: f"{branch}.{e}" for e in extra})


def _convert_chunk(chunk, entry_start: int, cfg: DetectorConfig, btag_bit: int, photons: bool) -> dict:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    ele, muo = _objects(chunk, "Electron", "Charge"), _objects(chunk, "Muon", "Charge")
    jet = _objects(chunk, "Jet", "BTag", *(("TauTag", "Charge") if cfg.tau_tagging else ()))
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
    return cv.finish_chunk([jet, *selected, met], n, cfg, bad, weight, event_id)


def _first(values) -> np.ndarray:
    """The first entry per event of a one-element-per-event collection (NaN where it is empty)."""
    if values.ndim > 1:
        values = ak.fill_none(ak.firsts(values), np.nan)
    return np.asarray(ak.to_numpy(values), dtype=np.float64)


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, btag_bit: int = 0) -> tuple[list[Path], list, dict]:
    """Open and check Delphes files (names or glob patterns): (paths, one plan per file, shard attributes)."""
    if not 0 <= btag_bit < 31:
        raise HepfmError(f"the b-tag bit must be between 0 and 30, got {btag_bit}")
    paths = cv.expand_inputs(inputs)
    plans = [plan_file(cv.open_tree(p, TREE), p, cfg, btag_bit) for p in paths]
    attrs = {"selection": {"format": "Delphes", "note": "Delphes card efficiencies and isolation, plus the "
                           "detector configuration's kinematic cuts and overlap removal"},
             "btag_branch": "Jet.BTag", "btag_working_point": f"bit {btag_bit}"}
    return paths, plans, attrs


def convert_delphes(inputs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                    btag_bit: int = 0, detector: DetectorConfig | None = None,
                    shard_size: int = cv.DEFAULT_SHARD_SIZE, step_size: int = cv.DEFAULT_STEP_SIZE,
                    progress: bool = True) -> cv.ConversionReport:
    """Convert Delphes ROOT files (names or glob patterns) into the event store ``out/label``."""
    cfg = detector or DetectorConfig()
    paths, plans, attrs = plan_files(inputs, cfg, btag_bit)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format="delphes", tree_name=TREE,
                            detector=cfg, attrs=attrs, shard_size=shard_size, step_size=step_size,
                            progress=progress)
