"""Any flat analysis ntuple (TTree or RNTuple) through a YAML mapping: which branches hold each object
collection's pT, eta, phi, energy or mass, charge, b-tag and identification, in which units, and the event
weight and identity. The detector configuration's kinematic cuts, the simulated crack, overlap removal,
ordering and truncation are applied exactly as for the other readers; the mapping adds the file's own
identification (``require``) and b-tag definitions.

A mapping (examples ship in ``hepfm/io/mappings``: :func:`shipped_mappings`)::

    tree: analysis                 # TTree or RNTuple name (not needed for Parquet)
    format: root                   # root (default) or parquet; files named *.parquet / *.pq are read as Parquet
    units: GeV                     # GeV or MeV, for every momentum and energy below (per collection too)
    weight: [mcWeight, ScaleFactor_PILEUP]   # one branch or a product of branches; absent: 1
    identity: {run: runNumber, event: eventNumber, luminosity_block: lumiBlock}   # each optional
    met: {pt: met, phi: met_phi}
    collections:
      leptons:
        kind: {branch: lep_type, values: {11: electron, 13: muon}}   # |value| -> kind; or one kind for all
        pt: lep_pt
        eta: lep_eta
        phi: lep_phi
        energy: lep_e              # or mass: ...; read to check the units (the store keeps massless energy)
        charge: lep_charge
        require: [lep_isTightID, {branch: lep_ptvarcone30, max: 0.15, relative: true}]
      jets:
        kind: jet
        pt: jet_pt
        eta: jet_eta
        phi: jet_phi
        btag: {branch: jet_btag_quantile, cut: 3.5}   # tagged above the cut; or {branch, bits}, {flag}
        require: [jet_jvt]

Parquet: a file, or a folder of Parquet files read as one dataset, with one column per branch (list
columns for the jagged ones); the mapping names columns as it names branches, and a missing column is a
one-line error like a missing branch.

``require`` entries: a branch name (the object passes when it is true or non-zero), or
``{branch, min, max, bits, relative}``: value >= min, value <= max, (value & bits) != 0; ``relative``
divides the value by the object's pT (both in the collection's units) first. Kinds: electron, muon,
photon, jet, tau (taus are converted only with the detector's tau tagging on, as in the simulation).

Errors, each one line naming the mapping or the file: an unknown key, a missing required key, a kind or
unit that does not exist, a branch the file lacks, and a unit mismatch found in the data (the median pT
of a collection outside 1 GeV - 3 TeV once converted, or energy below pT, both the signature of MeV
read as GeV or the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import convert as cv
from hepfm.io.readers import Format, ParquetSource, is_parquet, open_events, open_parquet
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import Objects, any_within, in_crack

FORMAT = Format("ntuple", "(from the mapping)", "analysis ntuple")
KINDS = ("electron", "muon", "photon", "jet", "tau")
UNITS = {"GeV": 1.0, "MeV": 1e-3, "TeV": 1e3}
_TOP_KEYS = {"tree", "format", "units", "weight", "identity", "met", "collections", "description"}
FORMATS = ("root", "parquet")
_COLLECTION_KEYS = {"kind", "pt", "eta", "phi", "energy", "mass", "charge", "btag", "require", "units"}
_IDENTITY_KEYS = {"run", "event", "luminosity_block"}
_REQUIRE_KEYS = {"branch", "min", "max", "bits", "relative"}
#: Entries read to check a file's units against the mapping.
UNIT_SAMPLE = 2000
#: Plausible median pT (GeV) of a collection: outside it, the units are almost surely wrong.
PLAUSIBLE_MEDIAN_PT = (1.0, 3000.0)


@dataclass(frozen=True)
class Requirement:
    """One identification requirement on a collection's objects."""

    branch: str
    min: float | None = None
    max: float | None = None
    bits: int | None = None
    relative: bool = False

    def describe(self) -> str:
        """The requirement as text, for the conversion report."""
        value = f"{self.branch}/pT" if self.relative else self.branch
        parts = [f"{value} >= {self.min:g}" if self.min is not None else "",
                 f"{value} <= {self.max:g}" if self.max is not None else "",
                 f"{self.branch} & {self.bits}" if self.bits is not None else ""]
        return " and ".join(p for p in parts if p) or self.branch


@dataclass(frozen=True)
class Collection:
    """The branches of one object collection."""

    name: str
    pt: str
    eta: str
    phi: str
    kind: str | None = None  # one kind for the whole collection, or ...
    kind_branch: str | None = None  # ... a branch whose values map to kinds
    kind_values: dict = field(default_factory=dict)
    energy: str | None = None
    mass: str | None = None
    charge: str | None = None
    btag_branch: str | None = None
    btag_cut: float | None = None  # tagged when the branch is above it, or ...
    btag_bits: int | None = None  # ... when branch & bits != 0; neither: the branch is a boolean flag
    require: tuple = ()
    scale: float = 1.0  # to GeV

    def branches(self) -> list[str]:
        """Every branch this collection reads."""
        names = [self.pt, self.eta, self.phi, self.kind_branch, self.energy, self.mass, self.charge,
                 self.btag_branch, *(r.branch for r in self.require)]
        return [n for n in names if n]


@dataclass(frozen=True)
class Mapping:
    """A parsed ntuple mapping (see the module docstring)."""

    source: str
    tree: str
    collections: tuple
    met_pt: str
    met_phi: str
    format: str = "root"  # or "parquet"
    met_scale: float = 1.0
    weight: tuple = ()
    identity: dict = field(default_factory=dict)
    description: str = ""

    def branches(self) -> list[str]:
        """Every branch the mapping reads."""
        names = [b for c in self.collections for b in c.branches()]
        names += [self.met_pt, self.met_phi, *self.weight, *self.identity.values()]
        return list(dict.fromkeys(names))


def shipped_mappings() -> dict[str, Path]:
    """The example mappings that ship with hepfm, by name (``atlas_opendata_13tev``, ``cms_nanoaod``, ...)."""
    folder = Path(str(resources.files("hepfm.io") / "mappings"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file, or a shipped one by name; every mistake is a one-line HepfmError."""
    from hepfm.files import safe_yaml

    shipped = shipped_mappings()
    if str(path) in shipped and not Path(path).exists():
        path = shipped[str(path)]
    return parse_mapping(safe_yaml(path, "ntuple mapping"), str(path))


def _keys(where: str, value, allowed: set[str], required: Sequence[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise HepfmError(f"{where}: expected a mapping of keys to values, got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise HepfmError(f"{where}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(sorted(allowed))})")
    missing = [k for k in required if value.get(k) in (None, "")]
    if missing:
        raise HepfmError(f"{where}: missing key {', '.join(map(repr, missing))}")
    return value


def _name(where: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise HepfmError(f"{where}: expected a branch name, got {value!r}")
    return value


def _number(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise HepfmError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _scale(where: str, value, default: float) -> float:
    if value is None:
        return default
    if value not in UNITS:
        raise HepfmError(f"{where}: unknown unit {value!r} (known: {', '.join(UNITS)})")
    return UNITS[value]


def parse_mapping(raw, source: str = "mapping") -> Mapping:
    """A :class:`Mapping` from parsed YAML (errors name ``source`` and the key)."""
    top = _keys(source, raw, _TOP_KEYS, ("met", "collections"))
    fmt = top.get("format") or "root"
    if fmt not in FORMATS:
        raise HepfmError(f"{source}: format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "root" and top.get("tree") in (None, ""):
        raise HepfmError(f"{source}: missing key 'tree' (the TTree or RNTuple of the events)")
    scale = _scale(f"{source}: units", top.get("units"), 1.0)
    met = _keys(f"{source}: met", top["met"], {"pt", "phi", "units"}, ("pt", "phi"))
    weight = top.get("weight") or []
    weight = [weight] if isinstance(weight, str) else weight
    if not isinstance(weight, list):
        raise HepfmError(f"{source}: weight: expected a branch name or a list of them")
    identity = _keys(f"{source}: identity", top.get("identity") or {}, _IDENTITY_KEYS)
    colls = top["collections"]
    if not isinstance(colls, dict) or not colls:
        raise HepfmError(f"{source}: collections: name at least one object collection")
    parsed = tuple(_collection(f"{source}: collections.{name}", str(name), spec, scale) for name, spec in colls.items())
    if not any(c.kind == "jet" or "jet" in c.kind_values.values() for c in parsed):
        raise HepfmError(f"{source}: collections: no jet collection (kind: jet)")
    tree = _name(f"{source}: tree", top["tree"]) if top.get("tree") not in (None, "") else "parquet"
    return Mapping(source=source, tree=tree, collections=parsed, format=fmt,
                   met_pt=_name(f"{source}: met.pt", met["pt"]), met_phi=_name(f"{source}: met.phi", met["phi"]),
                   met_scale=_scale(f"{source}: met.units", met.get("units"), scale),
                   weight=tuple(_name(f"{source}: weight", w) for w in weight),
                   identity={k: _name(f"{source}: identity.{k}", v) for k, v in identity.items() if v is not None},
                   description=str(top.get("description", "")))


def _collection(where: str, name: str, spec, scale: float) -> Collection:
    spec = _keys(where, spec, _COLLECTION_KEYS, ("kind", "pt", "eta", "phi"))
    if spec.get("energy") and spec.get("mass"):
        raise HepfmError(f"{where}: give energy or mass, not both")
    kind, kind_branch, kind_values = spec["kind"], None, {}
    if isinstance(kind, dict):
        kind = _keys(f"{where}.kind", kind, {"branch", "values"}, ("branch", "values"))
        kind_branch = _name(f"{where}.kind.branch", kind["branch"])
        if not isinstance(kind["values"], dict) or not kind["values"]:
            raise HepfmError(f"{where}.kind.values: expected a mapping of branch values to kinds")
        kind_values = {int(_number(f"{where}.kind.values", v)): k for v, k in kind["values"].items()}
        kind = None
    for k in ([kind] if kind is not None else list(kind_values.values())):
        if k not in KINDS:
            raise HepfmError(f"{where}.kind: unknown kind {k!r} (known: {', '.join(KINDS)})")
    btag_branch = btag_cut = btag_bits = None
    if spec.get("btag") is not None:
        btag = _keys(f"{where}.btag", spec["btag"], {"branch", "cut", "bits", "flag"})
        if ("flag" in btag) == ("branch" in btag):
            raise HepfmError(f"{where}.btag: give either a branch and its cut (or bits), or a boolean flag branch")
        if "flag" in btag:
            btag_branch = _name(f"{where}.btag.flag", btag["flag"])
        else:
            btag_branch = _name(f"{where}.btag.branch", btag["branch"])
            if ("cut" in btag) == ("bits" in btag):
                raise HepfmError(f"{where}.btag: give 'cut' (a jet is tagged when {btag_branch} is above it) or "
                                 f"'bits' (when {btag_branch} & bits is not 0)")
            if "cut" in btag:
                btag_cut = _number(f"{where}.btag.cut", btag["cut"])
            else:
                btag_bits = int(_number(f"{where}.btag.bits", btag["bits"]))
    require = spec.get("require") or []
    if not isinstance(require, list):
        raise HepfmError(f"{where}.require: expected a list of branches or {{branch, min, max, bits}} entries")
    reqs = []
    for i, r in enumerate(require):
        if isinstance(r, str):
            reqs.append(Requirement(r))
            continue
        r = _keys(f"{where}.require[{i}]", r, _REQUIRE_KEYS, ("branch",))
        bits = r.get("bits")
        reqs.append(Requirement(_name(f"{where}.require[{i}].branch", r["branch"]),
                                None if r.get("min") is None else _number(f"{where}.require[{i}].min", r["min"]),
                                None if r.get("max") is None else _number(f"{where}.require[{i}].max", r["max"]),
                                None if bits is None else int(_number(f"{where}.require[{i}].bits", bits)),
                                bool(r.get("relative", False))))
    opt = lambda key: _name(f"{where}.{key}", spec[key]) if spec.get(key) else None  # noqa: E731
    return Collection(name=name, pt=_name(f"{where}.pt", spec["pt"]), eta=_name(f"{where}.eta", spec["eta"]),
                      phi=_name(f"{where}.phi", spec["phi"]), kind=kind, kind_branch=kind_branch,
                      kind_values=kind_values, energy=opt("energy"), mass=opt("mass"), charge=opt("charge"),
                      btag_branch=btag_branch, btag_cut=btag_cut, btag_bits=btag_bits, require=tuple(reqs),
                      scale=_scale(f"{where}.units", spec.get("units"), scale))


# ------------------------------------------------------------------------------------------ reading


def _check_units(tree, path: Path, mapping: Mapping) -> None:
    """Refuse a file whose values contradict the mapping's units (see the module docstring)."""
    for c in mapping.collections:
        pt = cv.flat(tree[c.pt].array(entry_stop=UNIT_SAMPLE)) * c.scale
        pt = pt[np.isfinite(pt) & (pt > 0)]
        if len(pt) < 5:
            continue
        median = float(np.median(pt))
        unit = next(u for u, s in UNITS.items() if s == c.scale)
        if not PLAUSIBLE_MEDIAN_PT[0] <= median <= PLAUSIBLE_MEDIAN_PT[1]:
            guess = "MeV" if median > PLAUSIBLE_MEDIAN_PT[1] else "GeV"
            raise HepfmError(f"{path}: {c.pt} has a median of {median:.4g} GeV with the mapping's units ({unit}); "
                             f"the file's units look like {guess}: set 'units' in {mapping.source}")
        if c.energy:
            pt_raw = cv.flat(tree[c.pt].array(entry_stop=UNIT_SAMPLE))
            energy = cv.flat(tree[c.energy].array(entry_stop=UNIT_SAMPLE))
            ok = np.isfinite(pt_raw) & np.isfinite(energy) & (pt_raw > 0)
            ratio = float(np.median(energy[ok] / pt_raw[ok])) if ok.any() else 1.0
            if ratio < 0.99:  # E >= pT always holds in one unit; E in GeV with pT in MeV gives ~1e-3
                raise HepfmError(f"{path}: {c.energy} is below {c.pt} (median E/pT {ratio:.3g}): the two branches "
                                 f"are not in the same units; check {mapping.source}")


def _require(tree, path: Path, mapping: Mapping, names, purpose: str) -> None:
    if not isinstance(tree, ParquetSource):
        cv.require_branches(tree, path, mapping.tree, names, purpose)
        return
    missing = [n for n in names if n not in tree.keys()]
    if missing:
        raise HepfmError(f"{path}: Parquet dataset has no column {', '.join(missing)} (needed for {purpose})")


def plan_file(tree, path: Path, cfg: DetectorConfig, mapping: Mapping) -> cv.FilePlan:
    """Check a file against a mapping and return how to convert it (errors name the file and the mapping)."""
    for c in mapping.collections:
        _require(tree, path, mapping, c.branches(), f"collection {c.name!r} of {mapping.source}")
    _require(tree, path, mapping, [mapping.met_pt, mapping.met_phi], f"MET of {mapping.source}")
    _require(tree, path, mapping, [*mapping.weight, *mapping.identity.values()],
             f"the weight and identity of {mapping.source}")
    _check_units(tree, path, mapping)
    info: dict = {"mapping": mapping.source, "data": "simulation" if mapping.weight else "weight 1 (no weight branch)",
                  "collections": {}, "taus": cfg.tau_tagging}
    btags = []
    for c in mapping.collections:
        kinds = [c.kind] if c.kind else sorted(set(c.kind_values.values()))
        entry = {"kinds": kinds, "require": [r.describe() for r in c.require] or ["none"]}
        if c.btag_branch:
            entry["btag"] = (f"{c.btag_branch} > {c.btag_cut:g}" if c.btag_cut is not None else
                             f"{c.btag_branch} & {c.btag_bits}" if c.btag_bits is not None else
                             f"{c.btag_branch} (flag)")
            btags.append(entry["btag"])
        info["collections"][c.name] = entry
    info["btag"] = "; ".join(btags) or "none (no b-tag in the mapping)"
    info["btag_branch"] = ", ".join(c.btag_branch for c in mapping.collections if c.btag_branch) or "none"
    counts: dict = {}

    def convert(chunk, entry_start: int) -> dict[str, np.ndarray]:
        return _convert_chunk(chunk, entry_start, cfg, mapping, counts)

    return cv.FilePlan(path=path, tree=tree, branches=mapping.branches(), convert=convert, info=info, counts=counts)


def _passes(objs: Objects, r: Requirement, scale: float) -> np.ndarray:
    value = objs.extra[r.branch]
    if r.relative:
        value = value * scale / np.where(objs.pt > 0, objs.pt, np.inf)
    ok = np.ones(len(objs), dtype=bool) if (r.min is not None or r.max is not None or r.bits is not None) \
        else value != 0
    if r.min is not None:
        ok &= value >= r.min
    if r.max is not None:
        ok &= value <= r.max
    if r.bits is not None:
        ok &= (value.astype(np.int64) & r.bits) != 0
    return ok


def _per_event(chunk, name: str, mapping: Mapping) -> np.ndarray:
    """One value per event of a branch (a list of exactly one, as Delphes stores MET and weights, is unwrapped)."""
    values = chunk[name]
    if values.ndim > 1:
        if not ak.all(ak.num(values, axis=1) == 1):
            raise HepfmError(f"{name}: not one value per event, as {mapping.source} uses it (MET, weight, identity)")
        values = ak.flatten(values, axis=None)
    return ak.to_numpy(values)


def _count(counts: dict, name: str, n) -> None:
    counts[name] = counts.get(name, 0) + int(n)


def _convert_chunk(chunk, entry_start: int, cfg: DetectorConfig, mapping: Mapping, counts: dict) -> dict:
    n = len(chunk)
    bad = np.zeros(n, dtype=bool)
    by_kind: dict[str, list[Objects]] = {k: [] for k in KINDS}
    for c in mapping.collections:
        extra = {b: b for b in c.branches() if b not in (c.pt, c.eta, c.phi)}
        objs = cv.collection(chunk, c.pt, c.eta, c.phi, extra)
        objs.pt = objs.pt * c.scale
        cv.mark_nonfinite(bad, objs)
        kinds = np.full(len(objs), c.kind or "", dtype=object)
        for value, kind in c.kind_values.items():  # matched on |value|: PDG-style codes may carry a sign
            kinds[np.abs(objs.extra[c.kind_branch]) == value] = kind
        if c.kind_branch:
            _count(counts, f"{c.name} of no mapped kind", (kinds == "").sum())
        keep = np.ones(len(objs), dtype=bool)
        for r in c.require:
            passes = _passes(objs, r, c.scale)
            _count(counts, f"{c.name} {r.branch}", (keep & ~passes).sum())
            keep &= passes
        charge = objs.extra[c.charge] if c.charge else np.zeros(len(objs))
        btag = np.zeros(len(objs), dtype=bool)
        if c.btag_branch:
            value = objs.extra[c.btag_branch]
            btag = (value > c.btag_cut if c.btag_cut is not None else
                    (value.astype(np.int64) & c.btag_bits) != 0 if c.btag_bits is not None else value != 0)
        for kind in KINDS:
            mine = keep & (kinds == kind)
            if mine.any() or kind == c.kind:
                part = objs[mine]
                part.extra["q"], part.extra["b"] = charge[mine], btag[mine]
                by_kind[kind].append(part)

    def joined(kind: str) -> Objects:
        parts = by_kind[kind]
        if not parts:
            return Objects(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), {"q": np.zeros(0),
                                                                                     "b": np.zeros(0, bool)})
        ev = np.concatenate([p.ev for p in parts])
        order = np.argsort(ev, kind="stable")
        kinematics = (np.concatenate([getattr(p, a) for p in parts])[order] for a in ("pt", "eta", "phi"))
        extra = {k: np.concatenate([p.extra[k] for p in parts])[order] for k in ("q", "b")}
        return Objects(ev[order], *kinematics, extra)

    selected = []
    for kind in ("electron", "muon", "photon"):
        objs = joined(kind)
        keep = cfg.accepts(kind, objs.pt, np.abs(objs.eta))
        _count(counts, f"{kind}s kinematics", (~keep).sum())
        objs = objs[keep]
        selected.append(cv.tag(objs, kind, charge=objs.extra["q"] if kind != "photon" else None))
    leptons = cv.merge(selected)
    jet = joined("jet")
    keep = cfg.accepts("jet", jet.pt, np.abs(jet.eta))
    _count(counts, "jets kinematics", (~keep).sum())
    jet = jet[keep]
    overlap = any_within(jet, leptons, cfg.overlap_dr, n)
    _count(counts, "jets overlap", overlap.sum())
    jet = jet[~overlap]
    tau = joined("tau")
    if cfg.tau_tagging:
        keep = ((tau.pt >= cfg.jet_pt_min) & (np.abs(tau.eta) < cfg.tau_eta_max)
                & ~in_crack(np.abs(tau.eta), cfg.crack_eta))
        tau = tau[keep]
        tau = tau[~any_within(tau, leptons, cfg.overlap_dr, n)]
        tau = cv.tag(tau, "tau", charge=tau.extra["q"])
        jet = jet[~any_within(jet, tau, cfg.tau_match_dr, n)]
        selected.append(tau)
    else:
        _count(counts, "taus not used (tau tagging off)", len(tau))
    jet = cv.tag(jet, "jet", btag=jet.extra["b"])

    per_event = lambda name: _per_event(chunk, name, mapping)  # noqa: E731
    met_obj = cv.met_object(per_event(mapping.met_pt).astype(np.float64) * mapping.met_scale,
                            per_event(mapping.met_phi).astype(np.float64))
    cv.mark_nonfinite(bad, met_obj)
    weight = np.ones(n)
    for w in mapping.weight:
        weight = weight * per_event(w).astype(np.float64)
    ident = mapping.identity
    event_id = (per_event(ident["event"]).astype(np.int64) if "event" in ident
                else np.arange(entry_start, entry_start + n, dtype=np.int64))
    zeros = np.zeros(n, dtype=np.uint32)
    run = per_event(ident["run"]).astype(np.uint32) if "run" in ident else zeros
    lumi = per_event(ident["luminosity_block"]).astype(np.uint32) if "luminosity_block" in ident else zeros
    return cv.finish_chunk([jet, *selected, met_obj], n, cfg, bad, weight, event_id, run=run, luminosity_block=lumi)


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    """Input files from names and glob patterns; a folder of Parquet files is one input (a dataset)."""
    if not inputs:
        return cv.expand_inputs(inputs)
    paths: list[Path] = []
    for item in inputs:
        folder = Path(str(item))
        paths.extend([folder] if folder.is_dir() and is_parquet(folder) else cv.expand_inputs([item]))
    return list(dict.fromkeys(paths))


def plan_files(inputs: Sequence[str | Path], cfg: DetectorConfig, mapping: Mapping) -> tuple[list[Path], list, dict]:
    """Open and check ntuple files (names or glob patterns) against a mapping: (paths, plans, shard attributes)."""
    paths = _expand(inputs)
    plans = []
    for p in paths:
        parquet = mapping.format == "parquet" or is_parquet(p)
        tree = open_parquet(p) if parquet else open_events(p, mapping.tree)
        try:
            plans.append(plan_file(tree, p, cfg, mapping))
        except HepfmError:
            raise
        except Exception as exc:  # a branch that fails to decode while it is checked: truncated or corrupt file
            raise HepfmError(f"{p}: cannot read the branches of tree {mapping.tree!r}, the file may be truncated "
                             f"or corrupt ({cv.reason(exc)})") from None
    attrs = {"selection": {"format": FORMAT.description, "mapping": mapping.source},
             "btag_branch": plans[0].info["btag_branch"]}
    return paths, plans, attrs


def convert_ntuple(inputs: Sequence[str | Path], out: str | Path, mapping: str | Path | Mapping,
                   label: str | None = None, *, detector: DetectorConfig | None = None,
                   shard_size: int = cv.DEFAULT_SHARD_SIZE, step_size: int = cv.DEFAULT_STEP_SIZE,
                   progress: bool = True) -> cv.ConversionReport:
    """Convert analysis ntuples (names or glob patterns) into ``out/label`` with a mapping (file, shipped
    name or :class:`Mapping`)."""
    cfg = detector or DetectorConfig()
    mapping = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    paths, plans, attrs = plan_files(inputs, cfg, mapping)
    return cv.convert_files(plans, out, label or cv.default_label(paths), source_format=FORMAT.name,
                            tree_name=mapping.tree, detector=cfg, attrs=attrs, shard_size=shard_size,
                            step_size=step_size, progress=progress)
