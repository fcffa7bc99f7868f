"""The reader abstraction: how a file format becomes event-store objects, and how its events are read
whatever the ROOT container (TTree or RNTuple).

A format is one module (:mod:`hepfm.io.nanoaod`, :mod:`hepfm.io.physlite`, :mod:`hepfm.io.ntuple`,
:mod:`hepfm.io.delphes`) that describes itself with a :class:`Format` (name, tree, what its files look
like) and turns each input file into a :class:`~hepfm.io.convert.FilePlan`: the branches to read and a
function from a chunk of entries to store arrays. The shared machinery of :mod:`hepfm.io.convert`
streams the plans in bounded chunks into shards, so a new format is one module with a ``plan_files``
function; nothing else changes.

TTree and RNTuple. :func:`open_events` opens either and gives the readers one interface: ``keys()``,
``num_entries``, ``source[name].array(...)`` and ``iterate(names, step_size=..., report=True)`` with the
chunks' fields named as the reader asked. Readers always name branches as the TTree does. In an RNTuple
written by ATLAS the auxiliary-store fields are named ``AnalysisJetsAuxDyn:pt`` where the TTree has
``AnalysisJetsAuxDyn.pt``; CMS NanoAOD keeps its branch names. A name the RNTuple lacks is therefore looked
up in the ATLAS spelling (first ``.`` replaced by ``:``), and the chunk's field renamed back. A TTree is
returned as uproot opens it, so TTree conversions are exactly what they were.

Parquet. :func:`open_parquet` gives a Parquet file, or a folder of them read as one dataset in name
order, the same interface (:class:`ParquetSource`): columns are the branches, list columns the jagged
ones (read with pyarrow, converted with awkward), chunks of ``step_size`` rows read batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hepfm.errors import HepfmError


@dataclass(frozen=True)
class Format:
    """One input format: its command name, the tree (or RNTuple) its events are in, and a description."""

    name: str
    tree: str
    description: str


def rntuple_spelling(name: str) -> str:
    """The ATLAS RNTuple spelling of a TTree branch name (``Container.var`` -> ``Container:var``)."""
    return name.replace(".", ":", 1)


class _Field:
    """One field of an RNTuple, read under the name the reader gave it."""

    def __init__(self, field) -> None:
        self._field = field

    def array(self, *args, **kwargs):
        """The field's values (the arguments of uproot's ``array``)."""
        return self._field.array(*args, **kwargs)


class _Report:
    def __init__(self, start: int, stop: int) -> None:
        self.tree_entry_start, self.tree_entry_stop = start, stop


class RNTupleSource:
    """An RNTuple behind the subset of uproot's TTree interface the readers use (see the module docstring)."""

    def __init__(self, ntuple) -> None:
        self.ntuple = ntuple
        self.num_entries = int(ntuple.num_entries)
        self._stored = set(ntuple.keys())
        self._logical: dict[str, str] = {}  # TTree-style name -> stored name
        for key in self._stored:
            self._logical.setdefault(key, key)
            if ":" in key:
                self._logical.setdefault(key.replace(":", ".", 1), key)
        self.classname = "ROOT::RNTuple"

    def keys(self) -> list[str]:
        """Every field, under its TTree-style name."""
        return list(self._logical)

    def stored_name(self, name: str) -> str:
        """The RNTuple's own name of a field asked for by its TTree-style name (KeyInFileError if absent)."""
        import uproot

        if name not in self._logical:
            raise uproot.KeyInFileError(name, because="no such field in the RNTuple")
        return self._logical[name]

    def __getitem__(self, name: str) -> _Field:
        return _Field(self.ntuple[self.stored_name(name)])

    def iterate(self, names: Iterable[str], *, step_size: int, library: str = "ak",
                report: bool = False) -> Iterator:
        """Chunks of ``step_size`` entries of the named fields, with those names (as uproot's TTree.iterate)."""
        import awkward as ak

        names = list(names)
        stored = [self.stored_name(n) for n in names]
        for start in range(0, self.num_entries, int(step_size)):
            stop = min(start + int(step_size), self.num_entries)
            chunk = self.ntuple.arrays(stored, entry_start=start, entry_stop=stop, library=library)
            # uproot adds the collections' own fields (``_collection1``...): keep only the fields asked for
            columns = {name: _field_of(chunk, field) for name, field in zip(names, stored, strict=True)}
            chunk = ak.zip(columns, depth_limit=1)
            yield (chunk, _Report(start, stop)) if report else chunk


#: File name endings read as Parquet.
PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    """True for a Parquet file (by its name) or a folder holding Parquet files."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix in PARQUET_SUFFIXES for p in path.iterdir())
    return path.suffix in PARQUET_SUFFIXES


class _ParquetColumn:
    def __init__(self, source: ParquetSource, name: str) -> None:
        self._source, self._name = source, name

    def array(self, entry_stop: int | None = None, library: str = "ak"):
        """The column's values up to ``entry_stop`` (awkward, or numpy with ``library="np"``)."""
        import awkward as ak

        parts, left = [], self._source.num_entries if entry_stop is None else int(entry_stop)
        for chunk in self._source.iterate([self._name], step_size=max(min(left, 65536), 1)):
            parts.append(chunk[self._name][:left])
            left -= len(parts[-1])
            if left <= 0:
                break
        values = ak.concatenate(parts) if parts else ak.Array([])
        return ak.to_numpy(values) if library == "np" else values


class ParquetSource:
    """A Parquet file or a folder of Parquet files behind the TTree interface the readers use."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        path = Path(path)
        self.path = path
        self.files = sorted(p for p in path.iterdir() if p.suffix in PARQUET_SUFFIXES) if path.is_dir() else [path]
        self._meta = [pq.ParquetFile(f) for f in self.files]
        schemas = [m.schema_arrow for m in self._meta]
        self._columns = list(schemas[0].names)
        for f, schema in zip(self.files[1:], schemas[1:], strict=True):
            if not schema.equals(schemas[0]):
                raise HepfmError(f"{f}: its columns differ from those of {self.files[0]} in the same Parquet dataset")
        self.num_entries = sum(m.metadata.num_rows for m in self._meta)
        self.classname = "Parquet"

    def keys(self) -> list[str]:
        """Every column."""
        return list(self._columns)

    def __getitem__(self, name: str) -> _ParquetColumn:
        if name not in self._columns:
            import uproot

            raise uproot.KeyInFileError(name, because="no such column in the Parquet dataset")
        return _ParquetColumn(self, name)

    def iterate(self, names: Iterable[str], *, step_size: int, library: str = "ak",
                report: bool = False) -> Iterator:
        """Chunks of ``step_size`` rows of the named columns (a chunk does not span two files)."""
        import awkward as ak

        names = list(names)
        start = 0
        for meta in self._meta:
            for batch in meta.iter_batches(batch_size=int(step_size), columns=names):
                chunk = ak.from_arrow(batch)
                chunk = ak.zip({n: chunk[n] for n in names}, depth_limit=1)
                stop = start + len(chunk)
                yield (chunk, _Report(start, stop)) if report else chunk
                start = stop


def open_parquet(path: Path) -> ParquetSource:
    """The rows of a Parquet file or folder of Parquet files, with one-line errors for unreadable or empty input."""
    try:
        source = ParquetSource(path)
    except HepfmError:
        raise
    except Exception as exc:  # pyarrow raises several exception types for files that are not Parquet
        from hepfm.io.convert import reason

        raise HepfmError(f"{path}: not a readable Parquet file or dataset ({reason(exc)})") from None
    if source.num_entries == 0:
        raise HepfmError(f"{path}: the Parquet dataset is empty (0 rows)")
    return source


def _field_of(chunk, name: str):
    """A field of an RNTuple chunk; a subfield (``link.m_persIndex``) comes back inside its parent's records."""
    if name in chunk.fields:
        return chunk[name]
    parent, child = name.rsplit(".", 1)
    return _field_of(chunk, parent)[child]


def open_events(path: Path, tree_name: str):
    """The events ``tree_name`` of a ROOT file: the TTree as uproot opens it, or an RNTuple as an
    :class:`RNTupleSource`; clear one-line errors for non-ROOT, truncated or empty input."""
    import uproot

    from hepfm.io.convert import open_tree, reason

    try:
        f = uproot.open(path)
        kind = f.classnames(cycle=False).get(tree_name)
    except Exception as exc:  # uproot raises several exception types for unreadable files
        raise HepfmError(f"{path}: not a readable ROOT file, or a truncated one ({reason(exc)})") from None
    if kind != "ROOT::RNTuple":
        return open_tree(path, tree_name)
    try:
        source = RNTupleSource(f[tree_name])
    except Exception as exc:
        raise HepfmError(f"{path}: cannot read RNTuple {tree_name!r}, the file may be truncated ({reason(exc)})") \
            from None
    if source.num_entries == 0:
        raise HepfmError(f"{path}: RNTuple {tree_name!r} is empty (0 entries)")
    return source
