"""Chunked conversion of reconstructed-object ROOT files (CMS NanoAOD, Delphes) into the event store.

The format readers (:mod:`hepfm.io.nanoaod`, :mod:`hepfm.io.delphes`) open and check every input file
first (:func:`open_tree`, :func:`missing_branches`) and build one :class:`FilePlan` per file: the branches
to read and a function that turns a chunk of entries into store arrays. :func:`convert_files` then streams
every file with ``uproot`` in chunks of ``step_size`` entries, so memory stays bounded whatever the file
size, fills shards of ``shard_size`` events across file boundaries and writes the manifest at the end.

Real data carries no truth: shards have no ``truth`` dataset and say so in their attributes
(``data_kind = "real"``, ``truth = "none"``), together with the source files, the tree, the b-tag rule
and the selection. A failure anywhere removes every shard this call wrote (and the folders it created),
so a failed conversion never leaves a half store behind. Events with a non-finite input value (NaN or
inf in a kinematic quantity) are dropped and counted, never written; so are events failing a reader's
event-quality cuts (:func:`finish_chunk`'s ``quality``), counted per cut.

An event pre-selection (:class:`Preselection`, by name from :data:`PRESELECTIONS`, e.g. ``kek``: the KEK
study's >= 1 lepton, >= 2 jets, >= 1 b-jet) is applied to the converted objects — after the object selection,
overlap removal and b-tagging of the format reader, whatever the format — and recorded in every shard's
attributes. :func:`convert_files` takes it as ``preselect``; readers that do not pass it on pick up the
one set by the :func:`preselecting` context (how ``hepfm convert ... --preselect`` applies it).
"""

from __future__ import annotations

import glob
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from hepfm.errors import HepfmError
from hepfm.io import store
from hepfm.io.atomic import prepare_output_folder, remove_stale_temporaries
from hepfm.io.locking import exclusive_lock
from hepfm.names import check_name
from hepfm.physics import kinematics as kin
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.objects import (
    TYPE_CODES,
    Objects,
    ReconstructedEvents,
    assemble,
    b_tagged,
    is_type,
    jet_slots,
    pack_constituents,
)

DEFAULT_SHARD_SIZE = 50_000
#: Entries read per step; a NanoAOD chunk of the branches used here takes ~10 MB per 10k entries.
DEFAULT_STEP_SIZE = 20_000


@dataclass
class FilePlan:
    """How to read one input file: its tree, the branches to load and the chunk converter."""

    path: Path
    tree: object
    branches: list[str]
    convert: Callable[[ak.Array, int], dict[str, np.ndarray]]
    info: dict = field(default_factory=dict)
    #: what the converter counts while reading (e.g. jet constituent references resolved), for the report
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class ConversionReport:
    """What a conversion call did."""

    out: Path
    label: str
    files: list[str]
    n_read: int
    n_written: int
    n_nonfinite: int
    shards: list[str]
    seconds: float
    btag: list[str]
    #: events removed by each event-quality cut (counted independently: an event may fail several)
    n_removed: dict[str, int] = field(default_factory=dict)
    #: per input file, what its plan chose (era, b-tag, IDs, cuts), as stored in the shards' ``source_info``
    source_info: dict[str, dict] = field(default_factory=dict)
    n_preselection_failed: int = 0  # events kept by the reader that failed the pre-selection
    preselection: dict | None = None
    #: per input file, the reader's counts (:attr:`FilePlan.counts`), where it keeps any
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        """Input events converted per second of wall time."""
        return self.n_read / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Preselection:
    """Minimum object counts of an event, counted on the converted objects (leptons: electrons and muons;
    jets: every jet, b-tagged or not; b-jets: b-tagged jets)."""

    name: str
    min_leptons: int = 0
    min_jets: int = 0
    min_bjets: int = 0

    def passes(self, objects: np.ndarray, n_objects: np.ndarray) -> np.ndarray:
        """Boolean [n]: which events of store arrays (``objects`` [n, M, 7], ``n_objects`` [n]) pass."""
        real = np.arange(objects.shape[1])[None, :] < np.asarray(n_objects)[:, None]
        jets = real & is_type(objects, "jet")
        leptons = real & is_type(objects, "electron", "muon")
        bjets = jets & b_tagged(objects)
        return ((leptons.sum(axis=1) >= self.min_leptons) & (jets.sum(axis=1) >= self.min_jets)
                & (bjets.sum(axis=1) >= self.min_bjets))


#: Named pre-selections. ``kek``: the pretraining selection of the KEK study on CMS Open Data.
PRESELECTIONS: dict[str, Preselection] = {"kek": Preselection("kek", min_leptons=1, min_jets=2, min_bjets=1)}
_PRESELECTION: ContextVar[Preselection | None] = ContextVar("hepfm_preselection", default=None)


def preselection(name: str | None) -> Preselection | None:
    """The named pre-selection (None for none); an unknown name is a HepfmError listing the known ones."""
    if name is None or name == "none":
        return None
    if name not in PRESELECTIONS:
        raise HepfmError(f"unknown pre-selection {name!r}; choose from none, {', '.join(PRESELECTIONS)}")
    return PRESELECTIONS[name]


@contextmanager
def preselecting(selection: Preselection | None):
    """Within this block, :func:`convert_files` applies ``selection`` when its caller gives none."""
    token = _PRESELECTION.set(selection)
    try:
        yield
    finally:
        _PRESELECTION.reset(token)


# ------------------------------------------------------------------------------------------ inputs


def expand_inputs(patterns: Sequence[str | Path]) -> list[Path]:
    """Input files from file names and glob patterns; a pattern that matches nothing is an error."""
    if not patterns:
        raise HepfmError("give at least one input file (or glob pattern)")
    paths: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise HepfmError(f"{pattern}: no file matches this pattern")
            paths.extend(Path(m) for m in matched)
        else:
            paths.append(Path(pattern))
    for path in paths:
        if not path.exists():
            raise HepfmError(f"{path}: no such file")
        if path.is_dir():
            raise HepfmError(f"{path}: is a folder, not a ROOT file")
    return list(dict.fromkeys(paths))


def open_tree(path: Path, tree_name: str):
    """The TTree ``tree_name`` of a ROOT file, with clear errors for non-ROOT, truncated or empty input."""
    import uproot

    try:
        f = uproot.open(path)
    except Exception as exc:  # uproot raises several exception types for unreadable files
        raise HepfmError(f"{path}: not a readable ROOT file, or a truncated one ({reason(exc)})") from None
    try:
        keys = f.keys(cycle=False)
        if tree_name not in keys:
            trees = [k for k, c in f.classnames(cycle=False).items() if c in ("TTree", "TNtuple")]
            have = ", ".join(trees) if trees else "none"
            raise HepfmError(f"{path}: no tree {tree_name!r} (trees in this file: {have}); is this the right format?")
        tree = f[tree_name]
    except HepfmError:
        raise
    except Exception as exc:
        raise HepfmError(f"{path}: cannot read tree {tree_name!r}, the file may be truncated ({reason(exc)})") \
            from None
    if not isinstance(tree, uproot.TTree):
        kind = getattr(tree, "classname", type(tree).__name__)
        raise HepfmError(f"{path}: {tree_name!r} is a {kind}, not a TTree (only TTrees are read)")
    if tree.num_entries == 0:
        raise HepfmError(f"{path}: tree {tree_name!r} is empty (0 entries)")
    return tree


def reason(exc: BaseException) -> str:
    """The first line of an exception, with its type: for one-line error messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def has_branch(tree, name: str) -> bool:
    """True when the tree has a branch of this name, at the top level or nested (Delphes sub-branches)."""
    import uproot

    try:
        tree[name]
    except uproot.KeyInFileError:
        return False
    return True


def first_present(tree, candidates: Iterable[str]) -> str | None:
    """The first branch name of ``candidates`` that the tree has, or None."""
    return next((name for name in candidates if has_branch(tree, name)), None)


def require_branches(tree, path: Path, tree_name: str, names: Iterable[str], purpose: str) -> None:
    """Raise a HepfmError naming the file and the missing branches when any of ``names`` is absent."""
    missing = [n for n in names if not has_branch(tree, n)]
    if missing:
        raise HepfmError(f"{path}: tree {tree_name!r} has no branch {', '.join(missing)} (needed for {purpose})")


def check_label(label: str) -> str:
    """The process label, checked with the one name rule (:func:`hepfm.names.check_name`): it names a folder."""
    return check_name(label, "--label: process label")


def default_label(paths: Sequence[Path]) -> str:
    """A process label from the first input file's name."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", paths[0].name.split(".")[0])[:128]
    return stem or "data"


# ------------------------------------------------------------------------------------------ chunks


def flat(values) -> np.ndarray:
    """A jagged or flat awkward/numpy array as a flat float64 numpy array."""
    arr = ak.flatten(values, axis=None) if isinstance(values, ak.Array) and values.ndim > 1 else values
    return np.asarray(ak.to_numpy(arr), dtype=np.float64)


def collection(chunk: ak.Array, pt: str, eta: str, phi: str, extra: dict[str, str] | None = None) -> Objects:
    """Flat objects of one jagged collection of a chunk; ``extra`` maps names to branch names."""
    counts = ak.to_numpy(ak.num(chunk[pt], axis=1))
    ev = np.repeat(np.arange(len(chunk)), counts)
    more = {key: flat(chunk[branch]) for key, branch in (extra or {}).items()}
    return Objects(ev, flat(chunk[pt]), flat(chunk[eta]), flat(chunk[phi]), more)


def tag(objs: Objects, kind: str, btag=None, charge=None) -> Objects:
    """Set the type, b-tag and charge columns that :func:`assemble` expects."""
    n = len(objs)
    objs.extra["type"] = np.full(n, float(TYPE_CODES[kind]))
    objs.extra["btag"] = np.zeros(n) if btag is None else np.asarray(btag, dtype=np.float64)
    objs.extra["charge"] = np.zeros(n) if charge is None else np.asarray(charge, dtype=np.float64)
    return objs


def mark_nonfinite(bad: np.ndarray, *collections: Objects) -> None:
    """Flag (in place) the events holding an object with a non-finite pT, eta or phi."""
    for c in collections:
        wrong = ~(np.isfinite(c.pt) & np.isfinite(c.eta) & np.isfinite(c.phi))
        bad[c.ev[wrong]] = True


def merge(parts: Sequence[Objects]) -> Objects:
    """One collection of several, sorted by event (the pairing helpers need event-sorted partners)."""
    names = ("type", "btag", "charge")
    ev = np.concatenate([p.ev for p in parts])
    order = np.argsort(ev, kind="stable")
    return Objects(ev[order], *(np.concatenate([getattr(p, k) for p in parts])[order] for k in ("pt", "eta", "phi")),
                   {k: np.concatenate([p.extra[k] for p in parts])[order] for k in names})


def met_object(met_pt: np.ndarray, met_phi: np.ndarray) -> Objects:
    """Missing ET as one object per event (eta = 0), as in the simulated chain."""
    n = len(met_pt)
    return tag(Objects(np.arange(n), np.asarray(met_pt, np.float64), np.zeros(n), np.asarray(met_phi, np.float64)),
               "met")


@dataclass
class JetConstituents:
    """A chunk's jet constituents, flat, for :func:`finish_chunk`.

    ``jet``: each constituent's row in the chunk's jet collection before any cut (the collection given
    first to :func:`finish_chunk`, which keeps those rows in ``extra["row"]``); ``columns``: each
    constituent's ``pt``, ``eta``, ``phi``, ``energy``, ``charge`` and ``class``
    (:data:`~hepfm.io.schema.CONSTITUENT_CLASSES`); ``flavour``: the :data:`~hepfm.io.schema.JET_FLAVOURS`
    code of every jet row; ``k``: constituents kept per jet.
    """

    jet: np.ndarray
    columns: dict[str, np.ndarray]
    flavour: np.ndarray
    k: int


def finish_chunk(collections: list[Objects], n_events: int, cfg: DetectorConfig, bad: np.ndarray,
                 weight: np.ndarray, event_id: np.ndarray, quality: dict[str, np.ndarray] | None = None,
                 constituents: JetConstituents | None = None, **extra: np.ndarray) -> dict:
    """Order, truncate and pad the selected objects (as the detector does) into store arrays.

    The result carries a boolean ``finite`` entry (False for events to drop: ``bad`` or non-finite output)
    and ``quality``, the event-quality cuts' pass masks by name (see :func:`selected`). With
    ``constituents``, it also holds the store's ``constituents``, ``n_constituents`` and ``jet_flavour``
    for the jets that made it into ``objects``.
    """
    reco = assemble(collections, n_events, cfg.max_objects)
    finite = ~bad & np.isfinite(reco.objects).all(axis=(1, 2)) & np.isfinite(weight)
    out = {"objects": reco.objects, "n_objects": reco.n_objects, "n_dropped": reco.n_dropped,
           "weight": np.asarray(weight, dtype=np.float32), "event_id": np.asarray(event_id, dtype=np.int64),
           "finite": finite, "quality": dict(quality or {})}
    if constituents is not None:
        out.update(_constituent_arrays(reco, collections[0], constituents))
    out.update(extra)
    return out


def _constituent_arrays(reco: ReconstructedEvents, jets: Objects, c: JetConstituents) -> dict[str, np.ndarray]:
    """Store arrays of the constituents of the jet slots of ``reco`` (``jets``: the first collection)."""
    n_events, m = reco.source.shape
    ev, slot, selected_row = jet_slots(reco.source, reco.objects, len(jets))
    row = jets.extra["row"][selected_row].astype(np.int64)
    owner = np.full(len(c.flavour), -1, dtype=np.int64)  # slot (ev * M + slot) of each jet row, if stored
    owner[row] = ev * m + slot
    flat_slot = owner[c.jet]
    keep = flat_slot >= 0
    flat_slot = flat_slot[keep]
    cols = {name: np.asarray(v)[keep] for name, v in c.columns.items()}
    axis = reco.source.reshape(-1)[flat_slot]  # the jet's row in ``jets``: its axis
    columns = {"pt": cols["pt"], "deta": cols["eta"] - jets.eta[axis],
               "dphi": kin.wrap_phi(cols["phi"] - jets.phi[axis]), "energy": cols["energy"],
               "charge": cols["charge"], "class": cols["class"]}
    packed, counts = pack_constituents(flat_slot, columns, n_events, m, c.k)
    flavour = np.zeros((n_events, m), dtype=np.int8)
    flavour[ev, slot] = c.flavour[row]
    return {"constituents": packed, "n_constituents": counts, "jet_flavour": flavour}


def selected(arrays: dict) -> np.ndarray:
    """The events of converted arrays to keep: finite and passing every event-quality cut."""
    keep = arrays["finite"].copy()
    for passes in arrays.get("quality", {}).values():
        keep &= passes
    return keep


# ------------------------------------------------------------------------------------------ output


class _Buffer:
    """Converted events waiting to fill a shard, with the input file each row came from."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, dict[str, np.ndarray]]] = []
        self.n = 0

    def add(self, source: str, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["objects"])
        if n:
            self.parts.append((source, arrays))
            self.n += n

    def take(self, k: int) -> tuple[list[str], dict[str, np.ndarray]]:
        taken, sources, have = [], [], 0
        while have < k:
            source, arrays = self.parts[0]
            n = len(arrays["objects"])
            use = min(n, k - have)
            taken.append({name: a[:use] for name, a in arrays.items()})
            if use == n:
                self.parts.pop(0)
            else:
                self.parts[0] = (source, {name: a[use:] for name, a in arrays.items()})
            sources.append(source)
            have += use
        self.n -= have
        return list(dict.fromkeys(sources)), {name: np.concatenate([t[name] for t in taken]) for name in taken[0]}


def _prepare(out: Path, label: str) -> bool:
    """Create the label folder (refused when it holds shards); returns whether this call created it."""
    label_dir = out / label
    if label_dir.is_dir() and any(label_dir.glob(store.SHARD_GLOB)):
        raise HepfmError(f"{label_dir}: already holds shards of {label!r}; use another label or output folder")
    created_label = not label_dir.exists()
    try:
        label_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise HepfmError(f"{out}: cannot create output folder ({exc.strerror})") from None
    return created_label


def iter_converted(plans: Sequence[FilePlan], tree_name: str,
                   step_size: int = DEFAULT_STEP_SIZE) -> Iterator[tuple[FilePlan, int, dict[str, np.ndarray]]]:
    """(plan, first entry, converted arrays) for every chunk of every planned file, read with uproot.

    The arrays carry the ``finite`` and ``quality`` entries of :func:`finish_chunk`; a file that fails to
    decode (truncated, corrupt) is a HepfmError naming it.
    """
    for plan in plans:
        try:
            for chunk, report in plan.tree.iterate(plan.branches, step_size=step_size, library="ak", report=True):
                yield plan, report.tree_entry_start, plan.convert(chunk, report.tree_entry_start)
        except HepfmError:
            raise
        except Exception as exc:  # uproot/awkward decoding errors: a truncated or corrupt file
            raise HepfmError(f"{plan.path}: cannot read the data of tree {tree_name!r}, the file may be "
                             f"truncated or corrupt ({reason(exc)})") from None


def convert_files(plans: Sequence[FilePlan], out: str | Path, label: str, *, source_format: str, tree_name: str,
                  detector: DetectorConfig, attrs: dict, shard_size: int = DEFAULT_SHARD_SIZE,
                  step_size: int = DEFAULT_STEP_SIZE, progress: bool = True,
                  preselect: Preselection | None = None) -> ConversionReport:
    """Stream every planned file in chunks into shards of ``out/label``; see the module docstring.

    ``preselect``: keep only events passing it (default: the one of the :func:`preselecting` context, if any).
    """

    preselect = preselect if preselect is not None else _PRESELECTION.get()

    if shard_size <= 0:
        raise HepfmError(f"the shard size must be positive, got {shard_size}")
    out = Path(out)
    label = check_label(label)
    created_out = prepare_output_folder(out)
    try:
        with exclusive_lock(out, "event store"):  # one writer per store for the whole conversion
            return _convert_locked(plans, out, label, source_format=source_format, tree_name=tree_name,
                                   detector=detector, attrs=attrs, shard_size=shard_size, step_size=step_size,
                                   progress=progress, preselect=preselect)
    except BaseException:
        if created_out and out.is_dir() and all(p.name.startswith(".hepfm.lock") for p in out.rglob("*")):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _convert_locked(plans: Sequence[FilePlan], out: Path, label: str, *, source_format: str, tree_name: str,
                    detector: DetectorConfig, attrs: dict, shard_size: int, step_size: int, progress: bool,
                    preselect: Preselection | None) -> ConversionReport:
    from hepfm.progress import EventProgress

    created_label = _prepare(out, label)
    label_dir = out / label
    written: list[Path] = []
    counts: list[int] = []
    buffer = _Buffer()
    n_read = n_nonfinite = n_failed = 0
    removed: dict[str, int] = {}
    base = {
        "preselection": asdict(preselect) if preselect is not None else "none",
        "process_name": label, "process_names": [label], "data_kind": "real", "truth": "none",
        "source_format": source_format, "tree": tree_name, "generator": source_format,
        "detector": detector.to_dict(), **attrs,
        "source_info": {str(p.path): p.info for p in plans},
    }

    def flush(k: int) -> None:
        sources, arrays = buffer.take(k)
        arrays["process"] = np.zeros(k, dtype=np.int32)
        path = label_dir / store.shard_name(len(written))
        store.write_shard(path, arrays, {**base, "shard_index": len(written), "source_files": sources})
        written.append(path)
        counts.append(k)

    start = time.perf_counter()
    total = sum(p.tree.num_entries for p in plans)
    try:
        with EventProgress(total, f"converting {label}", enabled=progress) as bar:
            for plan, _, arrays in iter_converted(plans, tree_name, step_size):
                keep = selected(arrays)
                finite, quality = arrays.pop("finite"), arrays.pop("quality")
                n_read += len(keep)
                n_nonfinite += int((~finite).sum())
                for name, passes in quality.items():
                    removed[name] = removed.get(name, 0) + int((~passes).sum())
                if preselect is not None:
                    passed = preselect.passes(arrays["objects"], arrays["n_objects"])
                    n_failed += int((keep & ~passed).sum())
                    keep = keep & passed
                buffer.add(str(plan.path), {k: v[keep] for k, v in arrays.items()})
                while buffer.n >= shard_size:
                    flush(shard_size)
                bar.advance(len(keep))
            if buffer.n:
                flush(buffer.n)
        if not written:
            cuts = "".join(f", {k} removed {v}" for k, v in removed.items())
            failed = f", {n_failed} failed the pre-selection {preselect.name!r}" if preselect is not None else ""
            raise HepfmError(f"{', '.join(str(p.path) for p in plans)}: no event left to write "
                             f"({n_nonfinite} of {n_read} had non-finite values{cuts}{failed})")
        store.write_manifest(out)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for path in written:
            remove_stale_temporaries(path)
        if created_label and label_dir.is_dir() and not any(label_dir.iterdir()):
            label_dir.rmdir()
        raise
    btag = sorted({p.info.get("btag", "") for p in plans} - {""})
    return ConversionReport(out=out, label=label, files=[str(p.path) for p in plans], n_read=n_read,
                            n_written=sum(counts), n_nonfinite=n_nonfinite, shards=[str(p) for p in written],
                            seconds=time.perf_counter() - start, btag=btag, n_removed=removed,
                            source_info=base["source_info"], n_preselection_failed=n_failed,
                            preselection=asdict(preselect) if preselect is not None else None,
                            counts={str(p.path): dict(p.counts) for p in plans if p.counts})
