"""The sharded HDF5 event store: atomic shard writer, manifest and reader.

Layout::

    DIR/manifest.json
    DIR/<process>/shard-00000.h5 ...

Each shard holds ``objects`` float32 [n, M, F], ``n_objects``, ``n_dropped``, ``process`` (index into
the ``process_names`` attribute), ``truth`` float32 [n, 41] (absent for real data), ``weight`` and
``event_id``; its attributes record the schema and hepfm versions, the generator and its settings, the
seed and the detector configuration. Shards generated with jet constituents also hold
``constituents`` float32 [n, M, K, 6] (slot j holds the constituents of object j when it is a jet; the
columns are :data:`~hepfm.io.schema.CONSTITUENT_FEATURES`), ``n_constituents`` int16 [n, M] and
``jet_flavour`` int8 [n, M] (:data:`~hepfm.io.schema.JET_FLAVOURS`); readers ignore them unless they ask.
Generated shards of schema version 2 also hold ``origin`` int8 [n, M] (:data:`~hepfm.io.schema.ORIGIN_NAMES`,
-1 on padding) and ``heavy`` float32 [n, H] (:data:`~hepfm.io.schema.HEAVY_NAMES`), read only when asked for.
A shard is written under a temporary name and renamed when complete, so a file named ``shard-*.h5`` is
always a complete shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import h5py
import numpy as np

from hepfm._version import __version__
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write_bytes, atomic_write_text
from hepfm.io.schema import FEATURES, SCHEMA_VERSION, TYPE_CODES

MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.h5"
PER_EVENT_FIELDS = ("objects", "n_objects", "n_dropped", "process", "truth", "weight", "event_id")
#: Optional per-event datasets of stores generated with jet constituents; read only when asked for.
CONSTITUENT_FIELDS = ("constituents", "n_constituents", "jet_flavour")
#: Optional per-event truth datasets of generated stores (schema version 2); read only when asked for.
ORIGIN_FIELDS = ("origin", "heavy")
_CHUNK_BYTES = 4 << 20
#: Deflate cannot compress better than ~1032:1; a dataset declaring more bytes than that per stored byte
#: describes data that is not in the file (unallocated chunks, a memory bomb).
_MAX_RATIO = 1100
_SMALL_BYTES = 1 << 20  # datasets this small are never refused for their ratio (chunk overheads)
_FILTERS = {1, 2, 3, 32000}  # deflate, shuffle, fletcher32, lzf
_SHARD_FILE = re.compile(r"shard-\d{5,}\.h5")
_SHA = re.compile(r"[0-9a-f]{64}")
_INTEGER_FIELDS = ("n_objects", "n_dropped", "process", "event_id", "n_constituents", "jet_flavour", "origin")
_REQUIRED = ("objects", "n_objects", "n_dropped", "weight", "event_id")


class DamagedStoreError(HepfmError):
    """A shard that does not match its manifest entry, is malformed, or holds non-finite values."""


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.h5"


def _json_attr(value) -> str:
    return json.dumps(value, sort_keys=True)


def write_shard(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write one shard atomically: to a temporary file in the same folder, then rename.

    ``arrays`` must hold every field of :data:`PER_EVENT_FIELDS` (``truth`` may be omitted for real
    data); ``attrs`` values that are not str/int/float are stored as JSON strings.
    """
    path = Path(path)
    n = len(arrays["objects"])
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"field {name!r} has {len(arr)} rows, expected {n}")

    # Built in memory and written as bytes: a full disk is then a plain OSError (one line naming the shard),
    # not an HDF5 library crash half-way through a file.
    with h5py.File(f"{path.name}.in-memory", "w", driver="core", backing_store=False) as f:
        for name, arr in arrays.items():
            # at most 4096 rows and ~4 MiB a chunk: a row of jet constituents is ~15 KiB
            rows = max(1, min(n, 4096, _CHUNK_BYTES // max(1, arr[:1].nbytes)))
            chunks = (rows,) + tuple(arr.shape[1:]) if n else None
            dataset = f.create_dataset(name, data=arr, chunks=chunks, compression="gzip", compression_opts=1,
                                       shuffle=True)
            # Its chunks are placed in the file now, not whenever the object is freed: the same bytes in every
            # process (a Dask worker's threads can keep it alive a little longer).
            dataset.flush()
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["hepfm_version"] = __version__
        f.attrs["features"] = _json_attr(list(FEATURES))
        f.attrs["type_codes"] = _json_attr(TYPE_CODES)
        f.attrs["n_events"] = n
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float, np.integer, np.floating)) \
                else _json_attr(value)
        f.flush()
        image = f.id.get_file_image()
    atomic_write_bytes(path, image)


def read_attrs(path: Path) -> dict:
    """All attributes of a shard; JSON-encoded lists and dicts decoded. An unreadable file is a DamagedStoreError."""
    out = {}
    try:
        with h5py.File(path, "r") as f:
            items = list(f.attrs.items())
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        raise DamagedStoreError(f"{path}: unreadable shard ({_first_line(exc)}); delete it and regenerate "
                                "or reconvert it") from None
    for key, value in items:
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_paths(root: Path) -> list[Path]:
    """Complete shards under an event-store folder, sorted."""
    return sorted(Path(root).glob(f"*/{SHARD_GLOB}"))


def _previous_entries(root: Path) -> dict[str, dict]:
    try:
        return {s["path"]: s for s in json.loads((root / MANIFEST).read_text())["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def build_manifest(root: Path) -> dict:
    """The manifest of the complete shards under ``root`` (not saved).

    Entries of an existing manifest whose file size and modification time are unchanged are reused,
    so that the many jobs of a batch production do not re-hash every shard.
    """
    root = Path(root)
    previous = _previous_entries(root)
    shards = []
    for path in shard_paths(root):
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        old = previous.get(rel)
        if isinstance(old, dict) and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            shards.append(old)
            continue
        attrs = read_attrs(path)
        n = attrs.get("n_events")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DamagedStoreError(f"{path}: not a valid shard (its n_events attribute is {n!r})")
        process = attrs.get("process_name", path.parent.name)
        shards.append({
            "path": rel,
            "process": process if isinstance(process, str) else path.parent.name,
            "shard_index": attrs.get("shard_index"),
            "n_events": n,
            "seed": attrs.get("seed"),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": file_sha256(path),
        })
    counts: dict[str, int] = {}
    for s in shards:
        counts[s["process"]] = counts.get(s["process"], 0) + s["n_events"]
    return {"schema_version": SCHEMA_VERSION, "hepfm_version": __version__, "processes": counts,
            "n_events": sum(counts.values()), "shards": shards}


def write_manifest(root: Path) -> dict:
    """Build the manifest of ``root`` and write it atomically to ``manifest.json``; return it."""
    root = Path(root)
    manifest = build_manifest(root)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


# ------------------------------------------------------------------------------------------ checks


def regenerate_hint(root: Path, rel: str) -> str:
    """How to remake a damaged shard."""
    return (f"delete {Path(root) / rel} and rerun the `hepfm generate` (or `hepfm convert`) command that made "
            f"{root}: complete shards are kept and only the missing one is remade")


def _check_entries(root: Path, manifest, where: Path) -> list[dict]:
    """The shard entries of a manifest, each checked for its fields and for a path inside the store."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise HepfmError(f"{where}: not a valid event-store manifest (expected an object with a 'shards' list)")
    base = root.resolve()
    seen = set()
    for i, s in enumerate(manifest["shards"]):
        if not isinstance(s, dict):
            raise HepfmError(f"{where}: shard entry {i} is not an object")
        for key, kind in (("path", str), ("process", str), ("n_events", int), ("size", int), ("sha256", str)):
            value = s.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                got = "missing" if key not in s else f"{type(value).__name__} {str(value)[:40]!r}"
                raise HepfmError(f"{where}: shard entry {i} has no valid {key!r} ({got}); rebuild the manifest "
                                 "with the command that wrote the store")
        rel = PurePosixPath(s["path"])
        inside = (not rel.is_absolute() and len(rel.parts) == 2 and ".." not in rel.parts
                  and _SHARD_FILE.fullmatch(rel.name) and "\\" not in s["path"])
        if inside:
            try:
                (root / rel).resolve().relative_to(base)
            except ValueError:
                inside = False
        if not inside:
            raise HepfmError(f"{where}: shard path {s['path'][:80]!r} is not a PROCESS/shard-NNNNN.h5 path inside "
                             f"the store {root}")
        if s["path"] in seen:
            raise HepfmError(f"{where}: shard {s['path']} is listed twice")
        seen.add(s["path"])
        if not s["process"] or len(s["process"]) > 128:
            raise HepfmError(f"{where}: shard {s['path']} has an invalid process name")
        if s["n_events"] < 0 or s["size"] < 0 or not _SHA.fullmatch(s["sha256"]):
            raise HepfmError(f"{where}: shard {s['path']} has an invalid n_events, size or sha256")
    return manifest["shards"]


def _check_dataset(path: Path, name: str, d, n: int) -> None:
    """Refuse a dataset that does not hold ``n`` rows stored in the file itself."""
    if d.shape is None or len(d.shape) == 0 or d.shape[0] != n:
        raise DamagedStoreError(f"{path}: dataset {name!r} has shape {d.shape}, but the shard holds {n} events "
                                "(its n_events); the shard is damaged or forged")
    plist = d.id.get_create_plist()
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT) \
            or plist.get_external_count():
        raise DamagedStoreError(f"{path}: dataset {name!r} refers to data outside the file (virtual or external "
                                "storage); not a hepfm shard")
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if filters - _FILTERS:
        raise DamagedStoreError(f"{path}: dataset {name!r} uses an unsupported HDF5 filter "
                                f"({sorted(filters - _FILTERS)})")
    declared = int(np.prod(d.shape, dtype=np.float64) * d.dtype.itemsize)
    if declared > _SMALL_BYTES and declared > _MAX_RATIO * d.id.get_storage_size():
        raise DamagedStoreError(f"{path}: dataset {name!r} declares {declared:,} bytes ({n:,} events) but the file "
                                f"stores only {d.id.get_storage_size():,} bytes of it; the shard is damaged or forged")


def check_shard_structure(path: Path, n_events: int) -> None:
    """Refuse a shard whose datasets disagree with each other or with ``n_events`` (its manifest entry), or
    that declares data the file does not hold; reads only the file's metadata."""
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise DamagedStoreError(f"{path}: unreadable shard ({_first_line(exc)}); delete it and regenerate "
                                "or reconvert it") from None
    try:
        with f:
            n = f.attrs.get("n_events")
            if isinstance(n, np.generic):
                n = n.item()
            if not isinstance(n, int) or n != n_events:
                raise DamagedStoreError(f"{path}: the shard says it holds {n!r} events, the manifest {n_events}; "
                                        "the shard or the manifest is damaged or forged")
            found = {}
            for name in (*PER_EVENT_FIELDS, *CONSTITUENT_FIELDS, *ORIGIN_FIELDS):
                if name not in f:
                    continue
                d = f[name]
                if not isinstance(d, h5py.Dataset):
                    raise DamagedStoreError(f"{path}: {name!r} is not a dataset")
                _check_dataset(path, name, d, n)
                found[name] = d
            missing = [k for k in _REQUIRED if k not in found]
            if missing:
                raise DamagedStoreError(f"{path}: missing dataset(s) {', '.join(missing)}; not a complete shard")
            objects = found["objects"]
            if objects.ndim != 3 or objects.shape[2] != len(FEATURES) or objects.dtype.kind != "f":
                raise DamagedStoreError(f"{path}: objects have shape {objects.shape} and type {objects.dtype}, "
                                        f"expected float [n, M, {len(FEATURES)}]")
            m = objects.shape[1]
            for name, d in found.items():
                integer = name in _INTEGER_FIELDS
                if d.dtype.kind not in ("iu" if integer else "f"):
                    raise DamagedStoreError(f"{path}: dataset {name!r} has type {d.dtype}, expected "
                                            f"{'integers' if integer else 'floats'}")
            for name in ("n_objects", "n_dropped", "process", "weight", "event_id"):
                if name in found and found[name].ndim != 1:
                    raise DamagedStoreError(f"{path}: dataset {name!r} has shape {found[name].shape}, expected [n]")
            if "truth" in found and found["truth"].ndim != 2:
                raise DamagedStoreError(f"{path}: dataset 'truth' has shape {found['truth'].shape}, expected [n, L]")
            if "heavy" in found and found["heavy"].ndim != 2:
                raise DamagedStoreError(f"{path}: dataset 'heavy' has shape {found['heavy'].shape}, expected [n, H]")
            for name in ("n_constituents", "jet_flavour", "origin"):
                if name in found and found[name].shape[1:] != (m,):
                    raise DamagedStoreError(f"{path}: dataset {name!r} has shape {found[name].shape}, expected "
                                            f"[n, {m}]")
            if "constituents" in found:
                c = found["constituents"]
                if c.ndim != 4 or c.shape[1] != m:
                    raise DamagedStoreError(f"{path}: dataset 'constituents' has shape {c.shape}, expected "
                                            f"[n, {m}, K, F]")
    except DamagedStoreError:
        raise
    except Exception as exc:  # h5py errors on a damaged file's metadata
        raise DamagedStoreError(f"{path}: unreadable shard ({_first_line(exc)}); delete it and regenerate "
                                "or reconvert it") from None


def cache_dir() -> Path:
    """The user's cache folder for hepfm (``$XDG_CACHE_HOME/hepfm``, default ``~/.cache/hepfm``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home folder known: a per-user temporary folder
            import tempfile

            base = str(Path(tempfile.gettempdir()) / f"hepfm-cache-{os.getuid()}")
    return Path(base) / "hepfm"


def _cache_file(root: Path) -> Path:
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / f"{key}.json"


#: (resolved path, size, mtime_ns, sha256) of shards whose checksum matched, in this process
_VERIFIED: set[tuple] = set()
#: (resolved path, size, mtime_ns, sha256, n_events) of shards whose structure was checked, in this process
_CHECKED: set[tuple] = set()


class EventStore:
    """Read access to an event store folder.

    >>> store = EventStore("events/")          # doctest: +SKIP
    >>> store.counts()                          # {'ttbar': 1000, 'tth': 1000}
    >>> data = store.arrays()                   # dict of numpy arrays, all shards concatenated
    >>> for chunk in store.iter_chunks(50_000): # streaming, for stores larger than memory
    ...     ...

    ``process`` in the returned arrays indexes :attr:`process_names` (the store's processes in manifest
    order), whatever the per-shard name lists were.

    Opening checks the store before anything else reads it: the manifest's entries (fields, paths inside the
    store), each shard's size against the manifest (truncation) and each shard's datasets against each other,
    its attributes and the manifest (a forged or damaged shard is refused before it can make a reader
    allocate). Every shard's SHA-256 is checked before its events are first read (:meth:`check_shard`);
    shards that matched are remembered in this process and in the user's cache folder (:func:`cache_dir`,
    keyed by the store's path and each shard's size, mtime and checksum), never in the store itself.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise HepfmError(f"{self.root}: no such event store folder")
        manifest_path = self.root / MANIFEST
        on_disk = {p.relative_to(self.root).as_posix() for p in shard_paths(self.root)}
        if manifest_path.exists():
            try:
                self.manifest = json.loads(manifest_path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise HepfmError(f"{manifest_path}: corrupt manifest ({exc})") from None
            except OSError as exc:
                raise HepfmError(f"{manifest_path}: cannot read the manifest ({exc.strerror or exc})") from None
            listed = {s["path"] for s in _check_entries(self.root, self.manifest, manifest_path)}
            if listed < on_disk:
                # Shards finished by concurrent batch jobs after the manifest was last written.
                self.manifest = self._rebuild_manifest()
        elif on_disk:
            self.manifest = self._rebuild_manifest()
        else:
            raise HepfmError(f"{self.root}: not an event store (no {MANIFEST} and no shards)")
        self.shards = _check_entries(self.root, self.manifest, manifest_path)
        self._cache: dict | None = None
        self._dirty = False
        for s in self.shards:
            self._check_size(s)
        for s in self.shards:
            self._check_structure(s)
        if not self.shards or not any(s["n_events"] for s in self.shards):
            raise HepfmError(f"{self.root}: the event store holds no events")
        self.process_names: list[str] = list(dict.fromkeys(s["process"] for s in self.shards))

    def _rebuild_manifest(self) -> dict:
        try:
            return write_manifest(self.root)
        except DamagedStoreError:
            raise
        except (OSError, HepfmError):  # a read-only store: use the scan without saving it
            return build_manifest(self.root)

    def _key(self, s: dict) -> tuple:
        path = self.root / s["path"]
        st = self._check_size(s)
        return (str(path.resolve()), st.st_size, st.st_mtime_ns, s["sha256"])

    def _check_size(self, s: dict) -> os.stat_result:
        path = self.root / s["path"]
        try:
            st = path.stat()
        except OSError:
            raise DamagedStoreError(f"{path}: shard listed in the manifest is missing; "
                                    f"{regenerate_hint(self.root, s['path'])}") from None
        if st.st_size != s["size"]:
            raise DamagedStoreError(f"{path}: damaged shard (size {st.st_size} bytes, the manifest says {s['size']}: "
                                    f"truncated or overwritten); {regenerate_hint(self.root, s['path'])}")
        return st

    def _check_structure(self, s: dict) -> None:
        key = (*self._key(s), s["n_events"])
        if key in _CHECKED:
            return
        check_shard_structure(self.root / s["path"], s["n_events"])
        _CHECKED.add(key)

    def _load_cache(self) -> dict:
        if self._cache is None:
            try:
                cache = json.loads(_cache_file(self.root).read_text())
                self._cache = cache if isinstance(cache, dict) else {}
            except (OSError, ValueError):
                self._cache = {}
        return self._cache

    def check_shard(self, s: dict, save: bool = True) -> None:
        """Refuse a shard whose size, structure or SHA-256 no longer matches its manifest entry ``s``."""
        key = self._key(s)
        self._check_structure(s)
        if key in _VERIFIED:
            return
        cache = self._load_cache()
        if cache.get(s["path"]) == list(key[1:]):
            _VERIFIED.add(key)
            return
        path = self.root / s["path"]
        if file_sha256(path) != s["sha256"]:
            raise DamagedStoreError(f"{path}: damaged shard (its SHA-256 differs from the manifest's); "
                                    f"{regenerate_hint(self.root, s['path'])}")
        _VERIFIED.add(key)
        cache[s["path"]] = list(key[1:])
        self._dirty = True
        if save:
            self.save_cache()

    def save_cache(self) -> None:
        """Remember the verified shards in the user's cache folder (silently skipped when it is not writable)."""
        if not self._dirty:
            return
        self._dirty = False
        target = _cache_file(self.root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, json.dumps(self._cache, indent=0, sort_keys=True))
        except (OSError, HepfmError):
            pass

    def __len__(self) -> int:
        return sum(s["n_events"] for s in self.shards)

    def __repr__(self) -> str:
        return f"EventStore({str(self.root)!r}, events={len(self)}, processes={self.process_names})"

    def counts(self) -> dict[str, int]:
        """Number of events per process."""
        out: dict[str, int] = {}
        for s in self.shards:
            out[s["process"]] = out.get(s["process"], 0) + s["n_events"]
        return out

    def attrs(self, process: str | None = None) -> dict:
        """Attributes (generator settings, seed, detector configuration...) of the first shard of a process."""
        for s in self.shards:
            if process is None or s["process"] == process:
                self.check_shard(s)
                return read_attrs(self.root / s["path"])
        raise HepfmError(f"{self.root}: no process {process!r} in this store ({', '.join(self.process_names)})")

    def verify(self) -> list[str]:
        """Paths of shards whose checksum no longer matches the manifest."""
        return [s["path"] for s in self.shards if file_sha256(self.root / s["path"]) != s["sha256"]]

    def _select(self, processes) -> list[dict]:
        if processes is None:
            return self.shards
        unknown = set(processes) - set(self.process_names)
        if unknown:
            raise HepfmError(f"{self.root}: no process {', '.join(sorted(unknown))} in this store")
        return [s for s in self.shards if s["process"] in set(processes)]

    def read_rows(self, shard: dict, fields, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of the datasets ``fields`` of one manifest shard entry (checked first)."""
        self.check_shard(shard)
        path = self.root / shard["path"]
        out = {}
        with h5py.File(path, "r") as f:
            for name in fields:
                if name == "process":
                    continue
                if name not in f:
                    if name == "truth":
                        continue  # real data carries no truth
                    raise HepfmError(f"{path}: missing dataset {name!r}")
                out[name] = f[name][start:stop]
            if "process" in fields:
                n = (stop if stop is not None else shard["n_events"]) - start
                out["process"] = np.full(n, self.process_names.index(shard["process"]), dtype=np.int32)
        return out

    def arrays(self, processes=None, fields=PER_EVENT_FIELDS) -> dict[str, np.ndarray]:
        """All events (optionally of some processes) in memory, as a dict of concatenated arrays."""
        parts = [self.read_rows(s, fields) for s in self._select(processes)]
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def head(self, n: int, processes=None, fields=PER_EVENT_FIELDS) -> dict[str, np.ndarray]:
        """At most the first ``n`` events (of some processes), read without loading whole shards."""
        parts, have = [], 0
        for chunk in self.iter_chunks(min(n, 65536), processes, fields):
            parts.append({k: v[: n - have] for k, v in chunk.items()})
            have += len(next(iter(parts[-1].values())))
            if have >= n:
                break
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def iter_chunks(self, chunk_size: int = 65536, processes=None,
                    fields=PER_EVENT_FIELDS) -> Iterator[dict[str, np.ndarray]]:
        """Stream events in chunks of at most ``chunk_size`` without loading the whole store."""
        if chunk_size <= 0:
            raise HepfmError(f"chunk size must be positive, got {chunk_size}")
        for s in self._select(processes):
            for start in range(0, s["n_events"], chunk_size):
                yield self.read_rows(s, fields, start, min(start + chunk_size, s["n_events"]))
