"""A parametrised ATLAS-like detector response, vectorised over batches of generator records.

Selection follows arXiv:2412.10665; efficiencies, resolutions and isolation follow the Delphes ATLAS card
(cards/delphes_card_ATLAS.tcl). Steps, all columnar (no per-event Python):

1. visible final-state particles (no neutrinos or neutralinos, |eta| < 4.9);
2. electron, muon and photon candidates: identification efficiency, momentum/energy smearing
   (log-normal, as Delphes), isolation (sum pT of visible particles with pT > 0.5 GeV within
   Delta R < 0.5, divided by the candidate pT) and the pT/eta/crack cuts;
3. anti-kt R = 0.4 jets (FastJet) on visible particles with pT > 0.5 GeV, jet energy smearing with the
   card's hadronic resolution, pT >= 25 GeV, |eta| <= 2.5, removal of jets within Delta R < 0.4 of a
   selected lepton or photon;
4. b-tagging: a jet is b (c) if a b (c) quark of the generator record with pT > 1 GeV, |eta| < 2.5 lies
   within Delta R < 0.4; tagged with the efficiency of its flavour (ATLAS 70% working point);
5. missing ET: minus the vector sum of visible particles, corrected for the smearing of the selected
   objects; stored as an object with eta = 0.

Every random draw comes from the ``numpy.random.Generator`` passed in, in a fixed order, so a seeded
generator reproduces the same objects bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io.schema import DEFAULT_MAX_OBJECTS, FEATURES, TYPE_CODES
from hepfm.physics import kinematics as kin

#: PDG ids that leave no trace in the detector: neutrinos, the lightest neutralino, the gravitino.
INVISIBLE_IDS = (12, 14, 16, 1000012, 1000014, 1000016, 1000022, 1000039)

# (|eta| upper edge, value) tables; beyond the last edge the value is 0.
EtaTable = list  # list[tuple[float, float]]
# (|eta| upper edge, constant, stochastic, noise) resolution rows.
ResolutionTable = list  # list[tuple[float, float, float, float]]


@dataclass
class DetectorConfig:
    """All parameters of the detector response. Stored as JSON in every shard."""

    max_objects: int = DEFAULT_MAX_OBJECTS
    calo_eta_max: float = 4.9
    # photons
    photon_pt_min: float = 20.0
    photon_eta_max: float = 2.37
    photon_efficiency: EtaTable = field(default_factory=lambda: [(1.5, 0.95), (2.5, 0.85)])
    # ECal: sigma(E) = sqrt((c E)^2 + a^2 E + n^2)
    ecal_resolution: ResolutionTable = field(
        default_factory=lambda: [(3.2, 0.0017, 0.101, 0.0), (4.9, 0.0350, 0.285, 0.0)])
    # electrons
    electron_pt_min: float = 10.0
    electron_eta_max: float = 2.47
    electron_efficiency: EtaTable = field(default_factory=lambda: [(1.5, 0.95), (2.5, 0.85)])
    # relative pT resolution: sqrt(c^2 + (s pT)^2), rows (eta_max, c, s)
    electron_resolution: list = field(
        default_factory=lambda: [(0.5, 0.03, 1.3e-3), (1.5, 0.05, 1.7e-3), (2.5, 0.15, 3.1e-3)])
    # muons
    muon_pt_min: float = 10.0
    muon_eta_max: float = 2.7
    muon_efficiency: EtaTable = field(default_factory=lambda: [(1.5, 0.95), (2.7, 0.85)])
    muon_resolution: list = field(
        default_factory=lambda: [(0.5, 0.01, 1.0e-4), (1.5, 0.015, 1.5e-4), (2.7, 0.025, 3.5e-4)])
    crack_eta: tuple = (1.37, 1.52)
    # isolation (Delphes ATLAS card)
    isolation_dr: float = 0.5
    isolation_min_pt: float = 0.5
    electron_isolation_max: float = 0.12
    muon_isolation_max: float = 0.25
    photon_isolation_max: float = 0.12
    candidate_min_pt: float = 5.0
    # jets
    jet_radius: float = 0.4
    jet_input_min_pt: float = 0.5
    jet_cluster_min_pt: float = 15.0
    jet_pt_min: float = 25.0
    jet_eta_max: float = 2.5
    # HCal: sigma(E) = sqrt((c E)^2 + a^2 E + n^2)
    jet_resolution: ResolutionTable = field(
        default_factory=lambda: [(1.7, 0.0302, 0.5205, 1.59), (3.2, 0.0500, 0.706, 0.0), (4.9, 0.0942, 1.0, 0.0)])
    overlap_dr: float = 0.4
    # b-tagging (ATLAS MV2c10 70% working point: c rejection ~8.9, light rejection ~300)
    btag_match_dr: float = 0.4
    btag_parton_min_pt: float = 1.0
    btag_parton_eta_max: float = 2.5
    btag_efficiency_b: float = 0.70
    btag_efficiency_c: float = 0.112
    btag_efficiency_light: float = 0.0033

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every parameter."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict, source: str = "detector configuration") -> "DetectorConfig":
        """Build a config from a (partial) dict; unknown keys are an error naming the source."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HepfmError(f"{source}: unknown detector parameter(s) {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "DetectorConfig":
        """Read overrides from a JSON or TOML file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise HepfmError(f"{path}: cannot read detector configuration ({exc.strerror})") from None
        try:
            if path.suffix == ".toml":
                import tomllib

                values = tomllib.loads(text)
            else:
                values = json.loads(text)
        except ValueError as exc:
            raise HepfmError(f"{path}: not a valid detector configuration ({exc})") from None
        return cls.from_dict(values, source=str(path))


@dataclass
class ReconstructedEvents:
    """Detector-level objects of a batch: padded ``objects`` [n, M, F] and per-event counts."""

    objects: np.ndarray
    n_objects: np.ndarray
    n_dropped: np.ndarray


# ----------------------------------------------------------------------------------------- helpers


def _lookup(table, abs_eta: np.ndarray) -> np.ndarray:
    """Value of an (eta_max, value) table at |eta|; 0 beyond the last edge."""
    edges = np.array([row[0] for row in table])
    values = np.array([row[1] for row in table] + [0.0])
    return values[np.searchsorted(edges, abs_eta, side="left")]


def _rows(table, abs_eta: np.ndarray) -> np.ndarray:
    """Resolution-table rows at |eta| (the last row is used beyond the last edge)."""
    edges = np.array([row[0] for row in table])
    idx = np.minimum(np.searchsorted(edges, abs_eta, side="left"), len(table) - 1)
    return np.asarray(table, dtype=np.float64)[idx]


def _lognormal_factor(rng: np.random.Generator, rel_sigma: np.ndarray) -> np.ndarray:
    """Multiplicative smearing factors with mean 1 and relative width rel_sigma (log-normal)."""
    s2 = np.log1p(np.square(rel_sigma))
    return np.exp(rng.standard_normal(len(rel_sigma)) * np.sqrt(s2) - 0.5 * s2)


def _calo_rel_sigma(table, energy: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    rows = _rows(table, abs_eta)
    c, a, n = rows[:, 1], rows[:, 2], rows[:, 3]
    e = np.maximum(energy, 1e-6)
    return np.sqrt((c * e) ** 2 + a * a * e + n * n) / e


def _track_rel_sigma(table, pt_: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    rows = _rows(table, abs_eta)
    return np.sqrt(rows[:, 1] ** 2 + (rows[:, 2] * pt_) ** 2)


def _flat(a) -> np.ndarray:
    return ak.to_numpy(ak.flatten(a, axis=1))


def _in_crack(abs_eta: np.ndarray, crack) -> np.ndarray:
    return (abs_eta > crack[0]) & (abs_eta < crack[1])


def _any_within(eta1, phi1, eta2, phi2, dr: float) -> ak.Array:
    """Per object of collection 1: is any object of collection 2 (same event) within dr?"""
    a = ak.zip({"eta": eta1, "phi": phi1})
    b = ak.zip({"eta": eta2, "phi": phi2})
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    d = kin.delta_r(pairs.a.eta, pairs.a.phi, pairs.b.eta, pairs.b.phi)
    return ak.any(d < dr, axis=2)


def _sum_within(eta1, phi1, eta2, phi2, pt2, dr: float) -> ak.Array:
    """Per object of collection 1: scalar pT sum of collection-2 objects within dr."""
    a = ak.zip({"eta": eta1, "phi": phi1})
    b = ak.zip({"eta": eta2, "phi": phi2, "pt": pt2})
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    d = kin.delta_r(pairs.a.eta, pairs.a.phi, pairs.b.eta, pairs.b.phi)
    return ak.sum(ak.where(d < dr, pairs.b.pt, 0.0), axis=2)


# ---------------------------------------------------------------------------------- reconstruction


def _leptons_and_photons(final, pt_, eta_, phi_, iso_pt, iso_eta, iso_phi, cfg, rng):
    """Selected electrons, muons and photons as dicts of awkward arrays (pt, eta, phi, charge, true px/py)."""
    aid = abs(final.id)
    is_cand = ((aid == 11) | (aid == 13) | (aid == 22)) & (pt_ > cfg.candidate_min_pt)
    c_pt, c_eta, c_phi, c_id = pt_[is_cand], eta_[is_cand], phi_[is_cand], final.id[is_cand]
    # Candidates are themselves in the isolation collection: subtract their own pT.
    iso = _sum_within(c_eta, c_phi, iso_eta, iso_phi, iso_pt, cfg.isolation_dr) - c_pt

    counts = ak.num(c_pt, axis=1)
    f_pt, f_eta, f_phi, f_id, f_iso = (_flat(x) for x in (c_pt, c_eta, c_phi, c_id, iso))
    f_aeta = np.abs(f_eta)
    f_aid = np.abs(f_id)
    n = len(f_pt)
    u_eff = rng.random(n)
    reco_pt = f_pt.copy()
    keep = np.zeros(n, dtype=bool)
    kind = np.zeros(n, dtype=np.int8)

    for code, pid, eff_table, pt_min, eta_max, iso_max in (
        (TYPE_CODES["electron"], 11, cfg.electron_efficiency, cfg.electron_pt_min, cfg.electron_eta_max,
         cfg.electron_isolation_max),
        (TYPE_CODES["muon"], 13, cfg.muon_efficiency, cfg.muon_pt_min, cfg.muon_eta_max, cfg.muon_isolation_max),
        (TYPE_CODES["photon"], 22, cfg.photon_efficiency, cfg.photon_pt_min, cfg.photon_eta_max,
         cfg.photon_isolation_max),
    ):
        m = f_aid == pid
        if pid == 11:
            rel = _track_rel_sigma(cfg.electron_resolution, f_pt[m], f_aeta[m])
        elif pid == 13:
            rel = _track_rel_sigma(cfg.muon_resolution, f_pt[m], f_aeta[m])
        else:
            rel = _calo_rel_sigma(cfg.ecal_resolution, f_pt[m] * np.cosh(f_eta[m]), f_aeta[m])
        reco_pt[m] = f_pt[m] * _lognormal_factor(rng, rel)
        passed = (
            (u_eff[m] < _lookup(eff_table, f_aeta[m]))
            & (reco_pt[m] >= pt_min)
            & (f_aeta[m] <= eta_max)
            & (f_iso[m] <= iso_max * reco_pt[m])
        )
        if pid != 13:
            passed &= ~_in_crack(f_aeta[m], cfg.crack_eta)
        keep[m] = passed
        kind[m] = code

    charge = np.where(f_aid == 22, 0.0, -np.sign(f_id)).astype(np.float64)
    out = {}
    for name in ("electron", "muon", "photon"):
        sel = keep & (kind == TYPE_CODES[name])
        per_event = ak.unflatten(sel, counts)
        out[name] = {
            "pt": ak.unflatten(reco_pt, counts)[per_event],
            "true_pt": c_pt[per_event],
            "eta": c_eta[per_event],
            "phi": c_phi[per_event],
            "charge": ak.unflatten(charge, counts)[per_event],
        }
    return out


def _cluster_jets(v_px, v_py, v_pz, v_e, cfg):
    import fastjet  # imported lazily: only generation needs it

    pt_in = kin.pt(v_px, v_py)
    sel = pt_in > cfg.jet_input_min_pt
    inputs = ak.zip({"px": v_px[sel], "py": v_py[sel], "pz": v_pz[sel], "E": v_e[sel]})
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_radius)
    jets = fastjet.ClusterSequence(inputs, jetdef).inclusive_jets(min_pt=cfg.jet_cluster_min_pt)
    return jets.px, jets.py, jets.pz, jets.E


def _heavy_flavour(prt, pid: int, cfg):
    aid = abs(prt.id)
    p = prt.p
    ppt = kin.pt(p.px, p.py)
    peta = kin.eta(p.px, p.py, p.pz)
    sel = (aid == pid) & (ppt > cfg.btag_parton_min_pt) & (abs(peta) < cfg.btag_parton_eta_max)
    return peta[sel], kin.phi(p.px, p.py)[sel]


def reconstruct(prt: ak.Array, cfg: DetectorConfig, rng: np.random.Generator) -> ReconstructedEvents:
    """Detector-level objects for a batch of generator records (Pythia ``nextBatch`` layout)."""
    final = prt[prt.status > 0]
    fp = final.p
    px, py, pz, e = fp.px, fp.py, fp.pz, fp.e
    pt_, eta_, phi_ = kin.pt(px, py), kin.eta(px, py, pz), kin.phi(px, py)
    aid = abs(final.id)
    invisible = aid < 0
    for pid in INVISIBLE_IDS:
        invisible = invisible | (aid == pid)
    visible = ~invisible & (abs(eta_) < cfg.calo_eta_max)

    iso_sel = visible & (pt_ > cfg.isolation_min_pt)
    leptons = _leptons_and_photons(final, pt_, eta_, phi_, pt_[iso_sel], eta_[iso_sel], phi_[iso_sel], cfg, rng)

    # --- jets
    jpx, jpy, jpz, je = _cluster_jets(px[visible], py[visible], pz[visible], e[visible], cfg)
    j_pt_true, j_eta, j_phi = kin.pt(jpx, jpy), kin.eta(jpx, jpy, jpz), kin.phi(jpx, jpy)
    jcounts = ak.num(j_pt_true, axis=1)
    fj_pt, fj_eta, fj_e = _flat(j_pt_true), _flat(j_eta), _flat(je)
    factor = _lognormal_factor(rng, _calo_rel_sigma(cfg.jet_resolution, fj_e, np.abs(fj_eta)))
    j_pt = ak.unflatten(fj_pt * factor, jcounts)

    sel_eta = ak.concatenate([leptons[k]["eta"] for k in ("electron", "muon", "photon")], axis=1)
    sel_phi = ak.concatenate([leptons[k]["phi"] for k in ("electron", "muon", "photon")], axis=1)
    not_overlapping = ~_any_within(j_eta, j_phi, sel_eta, sel_phi, cfg.overlap_dr)

    # MET: minus the visible vector sum, corrected for the smearing of the objects that are kept.
    vis_px = ak.sum(px[visible], axis=1)
    vis_py = ak.sum(py[visible], axis=1)
    d_px = ak.sum(((j_pt - j_pt_true) * np.cos(j_phi))[not_overlapping], axis=1)
    d_py = ak.sum(((j_pt - j_pt_true) * np.sin(j_phi))[not_overlapping], axis=1)
    for obj in leptons.values():
        d_pt = obj["pt"] - obj["true_pt"]
        d_px = d_px + ak.sum(d_pt * np.cos(obj["phi"]), axis=1)
        d_py = d_py + ak.sum(d_pt * np.sin(obj["phi"]), axis=1)
    met_x = ak.to_numpy(-(vis_px + d_px))
    met_y = ak.to_numpy(-(vis_py + d_py))

    jet_keep = not_overlapping & (j_pt >= cfg.jet_pt_min) & (abs(j_eta) <= cfg.jet_eta_max)
    j_pt, j_eta, j_phi = j_pt[jet_keep], j_eta[jet_keep], j_phi[jet_keep]

    # --- b-tagging by flavour of the nearest heavy quark within Delta R
    b_eta, b_phi = _heavy_flavour(prt, 5, cfg)
    c_eta, c_phi = _heavy_flavour(prt, 4, cfg)
    is_b = _any_within(j_eta, j_phi, b_eta, b_phi, cfg.btag_match_dr)
    is_c = _any_within(j_eta, j_phi, c_eta, c_phi, cfg.btag_match_dr) & ~is_b
    eff = ak.where(is_b, cfg.btag_efficiency_b, ak.where(is_c, cfg.btag_efficiency_c, cfg.btag_efficiency_light))
    jcounts = ak.num(j_pt, axis=1)
    u = ak.unflatten(rng.random(int(ak.sum(jcounts))), jcounts)
    btag = ak.values_astype(u < eff, np.float64)

    collections = [
        ("jet", j_pt, j_eta, j_phi, btag, ak.zeros_like(j_pt)),
        *((k, leptons[k]["pt"], leptons[k]["eta"], leptons[k]["phi"], ak.zeros_like(leptons[k]["pt"]),
           leptons[k]["charge"]) for k in ("electron", "muon", "photon")),
    ]
    return _assemble(collections, met_x, met_y, cfg.max_objects)


def _assemble(collections, met_x, met_y, max_objects: int) -> ReconstructedEvents:
    """Order objects by type then descending pT, add MET, drop the softest jets beyond max_objects, pad."""
    n_events = len(met_x)
    parts = []
    n_nonjet = np.ones(n_events, dtype=np.int64)  # MET
    for kind, pt_, eta_, phi_, btag, charge in collections:
        order = ak.argsort(pt_, axis=1, ascending=False)
        rec = ak.zip({"pt": pt_[order], "eta": eta_[order], "phi": phi_[order], "btag": btag[order],
                      "charge": charge[order]})
        rec = ak.with_field(rec, ak.full_like(rec.pt, TYPE_CODES[kind]), "type")
        if kind != "jet":
            n_nonjet += ak.to_numpy(ak.num(rec, axis=1))
        parts.append(rec)
    met_pt = np.hypot(met_x, met_y)
    met = ak.zip({
        "pt": met_pt, "eta": np.zeros(n_events), "phi": np.arctan2(met_y, met_x), "btag": np.zeros(n_events),
        "charge": np.zeros(n_events), "type": np.full(n_events, float(TYPE_CODES["met"])),
    })
    parts.append(ak.unflatten(met, np.ones(n_events, dtype=np.int64)))

    jets = parts[0]
    n_jets = ak.to_numpy(ak.num(jets, axis=1))
    keep_jets = np.clip(max_objects - n_nonjet, 0, None)
    parts[0] = jets[ak.local_index(jets, axis=1) < keep_jets]
    events = ak.concatenate(parts, axis=1)
    total = ak.to_numpy(ak.num(events, axis=1))
    n_dropped = (n_jets - np.minimum(n_jets, keep_jets)) + np.maximum(total - max_objects, 0)

    padded = ak.pad_none(events, max_objects, axis=1, clip=True)
    columns = {}
    for name in ("pt", "eta", "phi", "btag", "charge", "type"):
        columns[name] = ak.to_numpy(ak.fill_none(padded[name], 0.0)).astype(np.float32)
    columns["energy"] = (columns["pt"] * np.cosh(columns["eta"])).astype(np.float32)
    objects = np.stack([columns[f] for f in FEATURES], axis=-1)
    n_objects = np.minimum(total, max_objects).astype(np.int32)
    return ReconstructedEvents(objects=objects, n_objects=n_objects, n_dropped=n_dropped.astype(np.int32))
