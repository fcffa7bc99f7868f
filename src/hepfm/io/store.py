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
A shard is written under a temporary name and renamed when complete, so a file named ``shard-*.h5`` is
always a complete shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from hepfm import __version__
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write, atomic_write_text
from hepfm.io.schema import FEATURES, SCHEMA_VERSION, TYPE_CODES

MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.h5"
PER_EVENT_FIELDS = ("objects", "n_objects", "n_dropped", "process", "truth", "weight", "event_id")
#: Optional per-event datasets of stores generated with jet constituents; read only when asked for.
CONSTITUENT_FIELDS = ("constituents", "n_constituents", "jet_flavour")
_CHUNK_BYTES = 4 << 20


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

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                # at most 4096 rows and ~4 MiB a chunk: a row of jet constituents is ~15 KiB
                rows = max(1, min(n, 4096, _CHUNK_BYTES // max(1, arr[:1].nbytes)))
                chunks = (rows,) + tuple(arr.shape[1:]) if n else None
                f.create_dataset(name, data=arr, chunks=chunks, compression="gzip", compression_opts=1,
                                 shuffle=True)
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["hepfm_version"] = __version__
            f.attrs["features"] = _json_attr(list(FEATURES))
            f.attrs["type_codes"] = _json_attr(TYPE_CODES)
            f.attrs["n_events"] = n
            for key, value in attrs.items():
                f.attrs[key] = value if isinstance(value, (str, int, float, np.integer, np.floating)) \
                    else _json_attr(value)

    atomic_write(path, write)


def read_attrs(path: Path) -> dict:
    """All attributes of a shard; JSON-encoded lists and dicts decoded."""
    out = {}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in ("[", "{"):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
    return out


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
        rel = str(path.relative_to(root))
        st = path.stat()
        old = previous.get(rel)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            shards.append(old)
            continue
        attrs = read_attrs(path)
        shards.append({
            "path": rel,
            "process": attrs.get("process_name", path.parent.name),
            "shard_index": attrs.get("shard_index"),
            "n_events": int(attrs["n_events"]),
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


class EventStore:
    """Read access to an event store folder.

    >>> store = EventStore("events/")          # doctest: +SKIP
    >>> store.counts()                          # {'ttbar': 1000, 'tth': 1000}
    >>> data = store.arrays()                   # dict of numpy arrays, all shards concatenated
    >>> for chunk in store.iter_chunks(50_000): # streaming, for stores larger than memory
    ...     ...

    ``process`` in the returned arrays indexes :attr:`process_names` (the store's processes in manifest
    order), whatever the per-shard name lists were.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise HepfmError(f"{self.root}: no such event store folder")
        manifest_path = self.root / MANIFEST
        on_disk = {str(p.relative_to(self.root)) for p in shard_paths(self.root)}
        if manifest_path.exists():
            try:
                self.manifest = json.loads(manifest_path.read_text())
            except ValueError as exc:
                raise HepfmError(f"{manifest_path}: corrupt manifest ({exc})") from None
            if {s["path"] for s in self.manifest["shards"]} < on_disk:
                # Shards finished by concurrent batch jobs after the manifest was last written.
                self.manifest = self._rebuild_manifest()
        elif on_disk:
            self.manifest = self._rebuild_manifest()
        else:
            raise HepfmError(f"{self.root}: not an event store (no {MANIFEST} and no shards)")
        self.shards = self.manifest["shards"]
        for s in self.shards:
            if not (self.root / s["path"]).exists():
                raise HepfmError(f"{self.root}: shard {s['path']} listed in {MANIFEST} is missing")
        self.process_names: list[str] = list(dict.fromkeys(s["process"] for s in self.shards))

    def _rebuild_manifest(self) -> dict:
        try:
            return write_manifest(self.root)
        except OSError:  # a read-only store: use the scan without saving it
            return build_manifest(self.root)

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
        """Rows ``start:stop`` of the datasets ``fields`` of one manifest shard entry."""
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
