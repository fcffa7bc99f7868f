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
