"""A parametrised ATLAS-like detector response, vectorised over batches of generator records.

Selection follows arXiv:2412.10665; efficiencies, resolutions and isolation follow the Delphes ATLAS card
(cards/delphes_card_ATLAS.tcl). Steps, all columnar (no per-event Python):

1. visible final-state particles (no neutrinos or neutralinos, |eta| < 4.9); muons are tracked but leave
   (almost) nothing in the calorimeter;
2. electron, muon and photon candidates: identification efficiency (muons: tracking efficiency too,
   drawn once for objects and MET), smearing (log-normal, as Delphes): photons with the ECal resolution, muons with the
   tracker's, electrons with the ECal energy and the track momentum combined (inverse-variance
   weighted); isolation (sum pT of visible particles with
   pT > 0.5 GeV within Delta R < 0.5, divided by the candidate pT) and the pT/eta/crack cuts;
3. anti-kt R = 0.4 jets (FastJet) on the calorimeter deposits (visible particles except muons, pT > 0.5
   GeV), jet energy smearing with the card's hadronic resolution, pT >= 25 GeV, |eta| <= 2.5, removal of
   jets within Delta R < 0.4 of a selected lepton or photon;
4. b-tagging: a jet is b (c) if a b (c) quark of the generator record with pT > 1 GeV, |eta| < 2.5 lies
   within Delta R < 0.4; tagged with the efficiency of its flavour (ATLAS 70% working point);
5. optional hadronic tau tagging (off by default): jets with 1-3 reconstructed tracks (tracking
   efficiency of the card) within Delta R < 0.2 are tau candidates, tagged with the Delphes efficiencies
   when a hadronically decaying tau lies within Delta R < 0.2, with the mistag rates otherwise;
6. missing ET: minus the vector sum of the calorimeter deposits, corrected for the smearing of the
   selected jets, electrons and photons, minus the measured momenta of all reconstructed muons (tracked
   and identified, |eta| <= 2.7, isolated or not, as Delphes' EFlow takes muon tracks); a muon the
   detector fails to reconstruct escapes, like a neutrino; stored as an object with eta = 0.

Every random draw comes from the ``numpy.random.Generator`` passed in, in a fixed order, so a seeded
generator reproduces the same objects bit for bit.

Implementation: the batch is flattened once into numpy arrays of particles with an event index;
within-event pairings (isolation cones, overlap removal, b-tag matching) are built with vectorised
index arithmetic. Awkward arrays are only used at the edges (input record, FastJet's multi-event API),
because each awkward operation costs ~1 ms of fixed overhead per batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import ConfigurationError, HepfmError
from hepfm.files import read_bounded_text
from hepfm.physics import kinematics as kin
from hepfm.physics.objects import (
    DEFAULT_MAX_OBJECTS,
    TYPE_CODES,
    Objects,
    ReconstructedEvents,
    any_within,
    assemble,
    constituent_class,
    in_crack,
    jet_slots,
    pack_constituents,
    same_event_pairs,
    sum_pt_within,
)
from hepfm.physics.record import FlatRecord, flatten

#: PDG ids that leave no trace in the detector: neutrinos, the lightest neutralino, the gravitino.
INVISIBLE_IDS = (12, 14, 16, 1000012, 1000014, 1000016, 1000022, 1000039)
#: Charged particles that reach the tracker in Pythia's default final state, and their charge for a
#: positive PDG id (leptons are negative for positive ids).
_TRACK_CHARGE = {11: -1.0, 13: -1.0, 211: 1.0, 321: 1.0, 2212: 1.0}
#: Long-lived charged baryons Pythia leaves undecayed (c tau > 10 mm); jet constituents carry their charge.
_BARYON_CHARGE = {3112: -1.0, 3222: 1.0, 3312: -1.0, 3334: -1.0}

# (|eta| upper edge, value) tables; beyond the last edge the value is 0.
EtaTable = list  # list[tuple[float, float]]
# (|eta| upper edge, constant, stochastic, noise) resolution rows.
ResolutionTable = list  # list[tuple[float, float, float, float]]


def _toml_module():
    """The TOML parser: the standard library's from Python 3.11, the tomli package before."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise HepfmError("reading a TOML detector configuration on Python 3.10 needs tomli: "
                             "pip install tomli (or use JSON)") from None
    return tomllib


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
    # muon tracking (Delphes ATLAS card, pT > 1 GeV; to the muon acceptance). A muon that is tracked and
    # identified (muon_efficiency) enters the missing ET with its measured momentum, isolated or not; any
    # other muon escapes, like a neutrino.
    muon_tracking_efficiency: EtaTable = field(default_factory=lambda: [(1.5, 0.99), (2.7, 0.98)])
    muon_track_min_pt: float = 1.0
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
    # hadronic tau tagging (Delphes ATLAS card, track counting). Off by default: arXiv:2412.10665 has no
    # tau objects; turn it on for studies that need them (tagged jets become type-5 objects).
    tau_tagging: bool = False
    tau_match_dr: float = 0.2
    tau_track_dr: float = 0.2
    tau_track_min_pt: float = 1.0
    # tracking efficiency of charged hadrons with pT > 1 GeV (Delphes ATLAS card); used for the track
    # counting of tau tagging. Isolation needs none: an untracked charged hadron still deposits its energy
    # in the calorimeter, which the isolation sum includes (as Delphes' EFlow inputs do).
    track_efficiency: EtaTable = field(default_factory=lambda: [(1.5, 0.95), (2.5, 0.85)])
    tau_eta_max: float = 2.5
    tau_efficiency_1prong: float = 0.70
    tau_efficiency_3prong: float = 0.60
    tau_mistag_1prong: float = 0.02
    tau_mistag_3prong: float = 0.01

    def accepts(self, kind: str, pt_: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        """Kinematic acceptance of reconstructed objects of one kind: pT and |eta| cuts, and the crack
        for electrons and photons. Shared by the simulated detector and the real-data readers."""
        if kind == "jet":
            return (pt_ >= self.jet_pt_min) & (abs_eta <= self.jet_eta_max)
        pt_min, eta_max = {"electron": (self.electron_pt_min, self.electron_eta_max),
                           "muon": (self.muon_pt_min, self.muon_eta_max),
                           "photon": (self.photon_pt_min, self.photon_eta_max)}[kind]
        ok = (pt_ >= pt_min) & (abs_eta <= eta_max)
        if kind != "muon":
            ok &= ~in_crack(abs_eta, self.crack_eta)
        return ok

    def __post_init__(self) -> None:
        check_detector_values({f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                              "detector configuration")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every parameter."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict, source: str = "detector configuration") -> DetectorConfig:
        """Build a config from a (partial) dict; unknown keys are an error naming the source."""
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
            raise HepfmError(f"{source}: a detector configuration must be a mapping of parameter names to values")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise HepfmError(f"{source}: unknown detector parameter(s) {shown[:300]}")
        check_detector_values(values, source)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> DetectorConfig:
        """Read overrides from a JSON or TOML file."""
        path = Path(path)
        text = read_bounded_text(path, MAX_CONFIG_BYTES, "detector configuration")
        try:
            if path.suffix == ".toml":
                values = _toml_module().loads(text)
            else:
                values = json.loads(text)
        except (ValueError, RecursionError) as exc:
            message = " ".join(str(exc).split())[:200]
            raise HepfmError(f"{path}: not a valid detector configuration ({message})") from None
        return cls.from_dict(values, source=str(path))


#: Largest detector configuration file read.
MAX_CONFIG_BYTES = 100_000
#: Most object slots per event (the stores' object arrays are n_events x max_objects x 7).
MAX_OBJECTS_LIMIT = 1000
_EFFICIENCY_TABLES = ("photon_efficiency", "electron_efficiency", "muon_efficiency", "muon_tracking_efficiency",
                      "track_efficiency")
_RESOLUTION_TABLES = {"ecal_resolution": 4, "jet_resolution": 4, "electron_resolution": 3, "muon_resolution": 3}
_PROBABILITIES = ("btag_efficiency_b", "btag_efficiency_c", "btag_efficiency_light", "tau_efficiency_1prong",
                  "tau_efficiency_3prong", "tau_mistag_1prong", "tau_mistag_3prong")
_RADII = ("isolation_dr", "overlap_dr", "btag_match_dr", "tau_match_dr", "tau_track_dr")  # 0 < dR <= 10


def _excerpt(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_detector_values(values: dict, source: str) -> None:
    """Type- and range-check detector parameters (any subset); a bad one is a one-line ConfigurationError
    naming ``source`` and the parameter."""

    def fail(key: str, want: str) -> None:
        raise ConfigurationError(f"{source}: detector parameter {key!r} must be {want}, got {_excerpt(values[key])}")

    for key, value in values.items():
        if key == "max_objects":
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_OBJECTS_LIMIT):
                fail(key, f"an integer from 1 to {MAX_OBJECTS_LIMIT}")
        elif key == "tau_tagging":
            if not isinstance(value, bool):
                fail(key, "true or false")
        elif key == "jet_radius" or key in _RADII:
            if not (_is_number(value) and 0 < value <= 10):
                fail(key, "a distance Delta R above 0 and at most 10")
        elif key in _PROBABILITIES:
            if not (_is_number(value) and 0 <= value <= 1):
                fail(key, "a probability from 0 to 1")
        elif key in _EFFICIENCY_TABLES or key in _RESOLUTION_TABLES:
            width = _RESOLUTION_TABLES.get(key, 2)
            rows = value if isinstance(value, (list, tuple)) else None
            if (not rows or len(rows) > 100
                    or not all(isinstance(r, (list, tuple)) and len(r) == width and all(map(_is_number, r))
                               and all(v >= 0 for v in r) for r in rows)):
                fail(key, f"a list of (at most 100) rows of {width} numbers >= 0 (|eta| edge, "
                     + ("efficiency" if width == 2 else "resolution terms") + ")")
            edges = [r[0] for r in rows]
            if edges != sorted(edges):
                fail(key, "a table whose |eta| edges increase")
            if width == 2 and not all(r[1] <= 1 for r in rows):
                fail(key, "a table of efficiencies from 0 to 1")
        elif key == "crack_eta":
            if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_is_number, value))
                    or not 0 <= value[0] <= value[1]):
                fail(key, "a pair [low, high] of |eta| values with 0 <= low <= high")
        elif key.endswith("_min_pt") or key.endswith("_pt_min") or key.endswith("_isolation_max"):
            if not (_is_number(value) and value >= 0):
                fail(key, "a number >= 0")
        elif key.endswith("_eta_max"):
            if not (_is_number(value) and value > 0):
                fail(key, "a positive |eta|")


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


def _electron_rel_sigma(cfg: DetectorConfig, pt_: np.ndarray, eta_: np.ndarray) -> np.ndarray:
    """Relative pT resolution of electrons: the ECal energy and the track momentum combined.

    The two measurements are independent, so their inverse-variance weighted mean has
    1/sigma^2 = 1/sigma_calo^2 + 1/sigma_track^2: the calorimeter dominates at high energy, where the
    track's curvature measurement degrades (sigma/pT ~ 26% at 200 GeV for |eta| ~ 2), the track at low pT.
    """
    aeta = np.abs(eta_)
    track = _track_rel_sigma(cfg.electron_resolution, pt_, aeta)
    calo = _calo_rel_sigma(cfg.ecal_resolution, pt_ * np.cosh(eta_), aeta)
    norm = np.sqrt(track**2 + calo**2)
    return np.divide(track * calo, norm, out=np.zeros_like(norm), where=norm > 0)  # a perfect one wins


def _track_charge(pid: np.ndarray) -> np.ndarray:
    """Electric charge of final-state tracks (0 for neutral or unlisted particles)."""
    aid = np.abs(pid)
    out = np.zeros(len(pid))
    for code, q in _TRACK_CHARGE.items():
        out[aid == code] = q
    return out * np.sign(pid)


# ---------------------------------------------------------------------------------- reconstruction

_LEPTON_KINDS = ("electron", "muon", "photon")


def _leptons_and_photons(cand: Objects, iso: Objects, muon_tracks: tuple[np.ndarray, np.ndarray], cfg: DetectorConfig,
                         rng, n_events: int) -> Objects:
    """Selected electrons, muons and photons (extra: type, charge, true_pt) from the candidates.

    ``muon_tracks`` = (reconstructed, measured pT) per row of the final state (``cand.extra["row"]``):
    a muon candidate must have been reconstructed (tracked and identified) and keeps its measured pT."""
    # Candidates are themselves in the isolation collection: subtract their own pT.
    iso_sum = sum_pt_within(cand, iso, cfg.isolation_dr, n_events) - cand.pt
    aeta = np.abs(cand.eta)
    aid = np.abs(cand.extra["id"])
    u_eff = rng.random(len(cand))
    reco_pt = cand.pt.copy()
    keep = np.zeros(len(cand), dtype=bool)
    kind = np.zeros(len(cand), dtype=np.float64)
    rules = {
        "electron": (11, cfg.electron_efficiency, cfg.electron_isolation_max),
        "muon": (13, cfg.muon_efficiency, cfg.muon_isolation_max),
        "photon": (22, cfg.photon_efficiency, cfg.photon_isolation_max),
    }
    for name in _LEPTON_KINDS:
        pid, eff_table, iso_max = rules[name]
        m = aid == pid
        rel = None
        if name == "electron":
            rel = _electron_rel_sigma(cfg, cand.pt[m], cand.eta[m])
        elif name == "photon":
            rel = _calo_rel_sigma(cfg.ecal_resolution, cand.pt[m] * np.cosh(cand.eta[m]), aeta[m])
        if name == "muon":  # tracked and identified before (the MET needs them too): reuse that
            rows = cand.extra["row"][m]
            reco_pt[m] = muon_tracks[1][rows]
            found = muon_tracks[0][rows]
        else:
            found = u_eff[m] < _lookup(eff_table, aeta[m])
            reco_pt[m] = cand.pt[m] * _lognormal_factor(rng, rel)
        keep[m] = found & cfg.accepts(name, reco_pt[m], aeta[m]) & (iso_sum[m] <= iso_max * reco_pt[m])
        kind[m] = TYPE_CODES[name]
    charge = np.where(aid == 22, 0.0, -np.sign(cand.extra["id"]))
    out = Objects(cand.ev, reco_pt, cand.eta, cand.phi,
                  {"type": kind, "charge": charge, "true_pt": cand.pt, "btag": np.zeros(len(cand)),
                   "row": cand.extra["row"]})
    return out[keep]


def _cluster_jets(inputs: Objects, px, py, pz, e, cfg: DetectorConfig, n_events: int,
                  with_constituents: bool = False) -> tuple[Objects, tuple[np.ndarray, np.ndarray, int] | None]:
    """Anti-kt jets (FastJet's multi-event interface) as flat arrays; true (unsmeared) kinematics.

    ``extra["cluster"]`` numbers the clustered jets. With ``with_constituents``, also (jet number, input
    row) of every constituent, the input row indexing ``inputs``, and the number of jets; else None.
    """
    import fastjet  # imported lazily: only generation needs it

    counts = np.bincount(inputs.ev, minlength=n_events)
    particles = ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": e}), counts)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_radius)
    sequence = fastjet.ClusterSequence(particles, jetdef)
    jets = sequence.inclusive_jets(min_pt=cfg.jet_cluster_min_pt)
    jcounts = ak.to_numpy(ak.num(jets, axis=1))
    jpx, jpy, jpz, je = (flatten(jets[k]) for k in ("px", "py", "pz", "E"))
    out = Objects(np.repeat(np.arange(n_events), jcounts), kin.pt(jpx, jpy), kin.eta(jpx, jpy, jpz),
                  kin.phi(jpx, jpy), {"energy": je, "cluster": np.arange(len(jpx))})
    if not with_constituents:
        return out, None
    index = sequence.constituent_index(min_pt=cfg.jet_cluster_min_pt)  # [event][jet][particle in event]
    per_jet = ak.to_numpy(ak.flatten(ak.num(index, axis=2), axis=None)).astype(np.int64)
    jet_of = np.repeat(np.arange(len(per_jet)), per_jet)
    first = np.cumsum(counts) - counts
    rows = ak.to_numpy(ak.flatten(index, axis=None)).astype(np.int64) + first[out.ev[jet_of]]
    return out, (jet_of, rows, len(per_jet))


def _constituent_charge(pid: np.ndarray) -> np.ndarray:
    """Electric charge of final-state particles that enter jets (tracks and long-lived baryons)."""
    out = _track_charge(pid)
    aid = np.abs(pid)
    for code, q in _BARYON_CHARGE.items():
        out[aid == code] = q * np.sign(pid[aid == code])
    return out


def _constituent_array(source: np.ndarray, objects: np.ndarray, jets: Objects, inputs: Objects, e: np.ndarray,
                       links: tuple[np.ndarray, np.ndarray, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``constituents`` [n, M, K, F] and ``n_constituents`` [n, M] of the jets that made it into ``objects``.

    ``source`` maps slots to rows of ``jets`` (rows beyond the jets belong to other collections); only
    slots of type jet get constituents (a tau-tagged jet is a tau object and has none). Constituents are
    ordered by descending pT and the softest beyond ``k`` dropped.
    """
    n_events, m = source.shape
    ev, slot, row = jet_slots(source, objects, len(jets))
    jet_of, rows, n_clustered = links
    owner = np.full(n_clustered, -1, dtype=np.int64)  # slot (ev * M + slot) of each clustered jet, if stored
    owner[jets.extra["cluster"][row]] = ev * m + slot
    flat_slot = owner[jet_of]
    keep = flat_slot >= 0
    flat_slot, rows = flat_slot[keep], rows[keep]
    cev, cslot = np.divmod(flat_slot, m)
    pid = inputs.extra["id"][rows]
    charge = _constituent_charge(pid)
    cls = constituent_class(pid, charge)
    axis = source[cev, cslot]
    columns = {"pt": inputs.pt[rows], "deta": inputs.eta[rows] - jets.eta[axis],
               "dphi": kin.wrap_phi(inputs.phi[rows] - jets.phi[axis]), "energy": e[rows], "charge": charge,
               "class": cls}
    return pack_constituents(flat_slot, columns, n_events, m, k)


def reconstruct(prt: ak.Array | FlatRecord, cfg: DetectorConfig, rng: np.random.Generator,
                constituents: int = 0) -> ReconstructedEvents:
    """Detector-level objects for a batch of generator records (Pythia ``nextBatch`` layout).

    With ``constituents = K > 0``, every jet object also gets its (up to) K hardest constituents: the
    calorimeter inputs FastJet clustered into it, unsmeared (the jet's energy smearing applies to the
    jet, not to its particles), so that their four-momenta add up to the jet's true momentum when all
    are kept. The objects and every random draw are the same with and without constituents.
    """
    rec = FlatRecord.from_batch(prt)
    n_events = rec.n_events
    fin = rec.status > 0
    px, py, pz, e, fid = rec.px[fin], rec.py[fin], rec.pz[fin], rec.e[fin], rec.pid[fin]
    final = Objects(rec.ev[fin], kin.pt(px, py), kin.eta(px, py, pz), kin.phi(px, py),
                    {"id": fid, "row": np.arange(len(fid))})
    aid = np.abs(fid)
    visible = ~np.isin(aid, INVISIBLE_IDS) & (np.abs(final.eta) < cfg.calo_eta_max)

    iso = final[visible & (final.pt > cfg.isolation_min_pt)]
    # --- muons: tracking and identification efficiency and momentum smearing, once, for the muon objects
    # and the MET alike. A reconstructed muon enters the MET with its measured momentum whether or not it is
    # isolated (a muon in a b-jet too); one the detector fails to track or identify is lost.
    mu_rows = np.flatnonzero((aid == 13) & (final.pt > cfg.muon_track_min_pt))
    mu_eta = np.abs(final.eta[mu_rows])
    reconstructed = np.zeros(len(final), dtype=bool)
    track_pt = np.zeros(len(final))
    u_mu = rng.random((2, len(mu_rows)))
    reconstructed[mu_rows] = ((u_mu[0] < _lookup(cfg.muon_tracking_efficiency, mu_eta))
                              & (u_mu[1] < _lookup(cfg.muon_efficiency, mu_eta)))
    track_pt[mu_rows] = final.pt[mu_rows] * _lognormal_factor(
        rng, _track_rel_sigma(cfg.muon_resolution, final.pt[mu_rows], mu_eta))
    met_muons = final[reconstructed]
    met_muons.pt = track_pt[reconstructed]

    cand = final[np.isin(aid, (11, 13, 22)) & (final.pt > cfg.candidate_min_pt)]
    leptons = _leptons_and_photons(cand, iso, (reconstructed, track_pt), cfg, rng, n_events)

    # --- jets: cluster calorimeter deposits (muons leave almost none), smear the energy, remove those
    # overlapping a selected lepton or photon
    in_calo = visible & (aid != 13)
    jin = in_calo & (final.pt > cfg.jet_input_min_pt)
    jet_inputs = final[jin]
    jets, links = _cluster_jets(jet_inputs, px[jin], py[jin], pz[jin], e[jin], cfg, n_events, constituents > 0)
    rel = _calo_rel_sigma(cfg.jet_resolution, jets.extra["energy"], np.abs(jets.eta))
    jets.extra["true_pt"] = jets.pt
    jets.pt = jets.pt * _lognormal_factor(rng, rel)
    jets = jets[~any_within(jets, leptons, cfg.overlap_dr, n_events)]

    # --- MET: minus the vector sum of the calorimeter deposits, corrected for the smearing of the jets,
    # electrons and photons that are kept, minus the measured momenta of every reconstructed muon.
    calo_ev = final.ev[in_calo]
    met_x = -np.bincount(calo_ev, weights=px[in_calo], minlength=n_events)
    met_y = -np.bincount(calo_ev, weights=py[in_calo], minlength=n_events)
    calo_leptons = leptons[leptons.extra["type"] != TYPE_CODES["muon"]]
    for obj, shift in ((jets, jets.pt - jets.extra["true_pt"]),
                       (calo_leptons, calo_leptons.pt - calo_leptons.extra["true_pt"]),
                       (met_muons, met_muons.pt)):
        met_x -= np.bincount(obj.ev, weights=shift * np.cos(obj.phi), minlength=n_events)
        met_y -= np.bincount(obj.ev, weights=shift * np.sin(obj.phi), minlength=n_events)

    jets = jets[cfg.accepts("jet", jets.pt, np.abs(jets.eta))]

    # --- optional hadronic tau tagging: tagged jets become tau objects
    jets.extra["type"] = np.full(len(jets), float(TYPE_CODES["jet"]))
    jets.extra["charge"] = np.zeros(len(jets))
    if cfg.tau_tagging:
        tracks = final[(_track_charge(fid) != 0) & (final.pt > cfg.tau_track_min_pt)]
        tracks = tracks[rng.random(len(tracks)) < _lookup(cfg.track_efficiency, np.abs(tracks.eta))]
        tracks.extra["charge"] = _track_charge(tracks.extra["id"])
        _tau_tag(jets, tracks, _hadronic_taus(rec), cfg, rng, n_events)

    # --- b-tagging by the flavour of a heavy quark within Delta R
    heavy = np.isin(np.abs(rec.pid), (4, 5))
    hx, hy, hz = rec.px[heavy], rec.py[heavy], rec.pz[heavy]
    quarks = Objects(rec.ev[heavy], kin.pt(hx, hy), kin.eta(hx, hy, hz), kin.phi(hx, hy), {"id": rec.pid[heavy]})
    quarks = quarks[(quarks.pt > cfg.btag_parton_min_pt) & (np.abs(quarks.eta) < cfg.btag_parton_eta_max)]
    is_b = any_within(jets, quarks[np.abs(quarks.extra["id"]) == 5], cfg.btag_match_dr, n_events)
    is_c = any_within(jets, quarks[np.abs(quarks.extra["id"]) == 4], cfg.btag_match_dr, n_events) & ~is_b
    eff = np.where(is_b, cfg.btag_efficiency_b, np.where(is_c, cfg.btag_efficiency_c, cfg.btag_efficiency_light))
    is_tau = jets.extra["type"] == TYPE_CODES["tau"]
    jets.extra["btag"] = ((rng.random(len(jets)) < eff) & ~is_tau).astype(np.float64)

    met = Objects(np.arange(n_events), np.hypot(met_x, met_y), np.zeros(n_events), np.arctan2(met_y, met_x),
                   {"type": np.full(n_events, float(TYPE_CODES["met"])), "charge": np.zeros(n_events),
                    "btag": np.zeros(n_events)})
    reco = assemble([jets, leptons, met], n_events, cfg.max_objects)
    # the generator particle behind every electron, muon and photon slot (its flat record row), for the truth
    lepton_of = reco.source - len(jets)
    is_lepton = (lepton_of >= 0) & (lepton_of < len(leptons))
    reco.record_rows = np.full(reco.source.shape, -1, dtype=np.int64)
    reco.record_rows[is_lepton] = np.flatnonzero(fin)[leptons.extra["row"][lepton_of[is_lepton]]]
    if constituents > 0:
        reco.constituents, reco.n_constituents = _constituent_array(
            reco.source, reco.objects, jets, jet_inputs, e[jin], links, constituents)
    return reco


def _hadronic_taus(rec: FlatRecord) -> Objects:
    """Last-copy taus whose decay has no electron or muon (direction of the tau itself)."""
    rows = np.flatnonzero((np.abs(rec.pid) == 15) & rec.last_copy())
    parent, child = rec.daughter_rows(rows)
    leptonic = np.zeros(len(rows), dtype=bool)
    leptonic[parent[np.isin(np.abs(rec.pid[child]), (11, 13))]] = True
    rows = rows[~leptonic]
    x, y, z = rec.px[rows], rec.py[rows], rec.pz[rows]
    return Objects(rec.ev[rows], kin.pt(x, y), kin.eta(x, y, z), kin.phi(x, y))


def _tau_tag(jets: Objects, tracks: Objects, taus: Objects, cfg: DetectorConfig, rng, n_events: int) -> None:
    """Turn tau-tagged jets into type-5 objects, in place (track counting, as the Delphes card)."""
    ia, ib = same_event_pairs(jets.ev, tracks.ev, n_events)
    close = kin.delta_r(jets.eta[ia], jets.phi[ia], tracks.eta[ib], tracks.phi[ib]) < cfg.tau_track_dr
    n_tracks = np.bincount(ia[close], minlength=len(jets))
    charge = np.bincount(ia[close], weights=tracks.extra["charge"][ib[close]], minlength=len(jets))
    matched = any_within(jets, taus[np.abs(taus.eta) < cfg.tau_eta_max], cfg.tau_match_dr, n_events)
    one = n_tracks == 1
    eff = np.where(matched, np.where(one, cfg.tau_efficiency_1prong, cfg.tau_efficiency_3prong),
                   np.where(one, cfg.tau_mistag_1prong, cfg.tau_mistag_3prong))
    candidate = (n_tracks >= 1) & (n_tracks <= 3) & (np.abs(jets.eta) < cfg.tau_eta_max)
    tagged = candidate & (rng.random(len(jets)) < eff)
    jets.extra["type"][tagged] = TYPE_CODES["tau"]
    jets.extra["charge"][tagged] = np.sign(charge[tagged])
