"""Scores for an analysis: a trained model applied to an event store or to ROOT files, written to a file.

Events are read in chunks (a store shard by shard, NanoAOD or Delphes files with uproot through the same
object selection as ``hepfm convert``), scored and appended to the output, so inputs larger than memory
work. A hierarchical model (inputs "objects+constituents") scores stores and Delphes files: each chunk's jet
constituents are appended to its object rows; a store must keep the K constituents per jet the model was
trained with, and a Delphes file must hold its jets' constituents (see :mod:`hepfm.io.delphes`). NanoAOD
files carry no constituents.

Each row carries the event's identity and one ``score_<class>`` column per output class:

* from a store: ``process`` (index into the ``process_names`` metadata), ``shard`` (index into
  ``shard_paths``), ``index`` (row within the shard), ``event_id`` and ``weight``;
* from NanoAOD, PHYSLITE and analysis ntuples (``--format nanoaod|physlite|ntuple``, ntuples with their
  ``--mapping``): ``file`` (index into ``source_files``), ``entry``, ``run``, ``luminosityBlock``, ``event``
  and ``weight``; from Delphes the same without run and luminosity block.

Formats by file extension: ``.parquet`` (pyarrow), ``.h5``/``.hdf5`` (one dataset per column) and
``.root`` (a TTree ``Events`` with one branch per column, as weaver writes its predictions; the
metadata is a JSON TObjString ``hepfm_metadata``). The output is built in memory (the scores are small next to
the inputs), then written under a temporary name and renamed when complete: a failed or interrupted run, or a
full disk, leaves nothing behind. An output that is an input, lies inside an input store, or exists (without
``overwrite``) is refused.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write_bytes
from hepfm.models.record import RunRecord, known

FORMATS = {".parquet": "parquet", ".h5": "hdf5", ".hdf5": "hdf5", ".root": "root"}
#: Events per chunk read, scored and written.
DEFAULT_CHUNK = 65_536
#: ROOT input formats predict reads directly (the readers of ``hepfm convert``).
ROOT_FORMATS = ("nanoaod", "physlite", "ntuple", "delphes")
ROOT_TREE = "Events"


@dataclass
class PredictionReport:
    """What a prediction call wrote."""

    out: Path
    n_events: int
    n_skipped: int
    columns: list[str]
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.n_events / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------- inputs


@dataclass
class _Chunk:
    identity: dict[str, np.ndarray]
    objects: np.ndarray
    n_objects: np.ndarray
    n_read: int  # input entries this chunk covers (events with non-finite inputs are not scored)


class _StoreInput:
    """A store folder (or one process sub-folder of it), shard by shard."""

    def __init__(self, path: Path, chunk_size: int, constituents: int | None = None):
        from hepfm.data.datasets import check_schema, open_source, stored_constituents
        from hepfm.data.integrity import verify_shards

        self.store, processes = open_source(path)
        check_schema(self.store)
        self.shards = [s for s in self.store.shards if processes is None or s["process"] in processes]
        verify_shards(self.store, self.shards)  # size and checksum: a damaged shard is named, nothing is written
        if constituents is not None:  # a hierarchical model: K constituents per jet, as in its training
            k = stored_constituents(path)
            if k != constituents:
                raise HepfmError(f"{path}: keeps {k} constituents per jet, the model takes {constituents}; "
                                 f"score a store that keeps {constituents}")
        self.constituents = constituents
        self.chunk_size = chunk_size
        self.total = sum(s["n_events"] for s in self.shards)
        self.metadata = {"source": str(path), "source_kind": "store",
                         "process_names": self.store.process_names,
                         "shard_paths": [s["path"] for s in self.shards]}

    def chunks(self) -> Iterator[_Chunk]:
        from hepfm.data.datasets import with_constituents
        from hepfm.data.integrity import check_finite

        for k, shard in enumerate(self.shards):
            for start in range(0, shard["n_events"], self.chunk_size):
                stop = min(start + self.chunk_size, shard["n_events"])
                fields = ("objects", "n_objects", "event_id", "weight", "process")
                arrays = self.store.read_rows(shard, fields + (("constituents",) if self.constituents else ()),
                                              start, stop)
                if self.constituents:
                    arrays["objects"] = with_constituents(arrays["objects"], arrays.pop("constituents"))
                check_finite(self.store.root / shard["path"], arrays, start)
                n = stop - start
                identity = {"process": arrays["process"].astype(np.int32), "shard": np.full(n, k, np.int32),
                            "index": np.arange(start, stop, dtype=np.int64),
                            "event_id": arrays["event_id"].astype(np.int64),
                            "weight": arrays["weight"].astype(np.float32)}
                yield _Chunk(identity, arrays["objects"], arrays["n_objects"], n)

    def skipped(self) -> int:
        return 0


class _RootInput:
    """NanoAOD, PHYSLITE, analysis-ntuple or Delphes ROOT files, read with the same selection as ``hepfm convert``."""

    def __init__(self, paths: list[str], fmt: str, chunk_size: int, detector, constituents: int | None = None,
                 mapping: str | Path | None = None):
        from hepfm.io import convert as cv

        if fmt == "nanoaod":
            from hepfm.io.nanoaod import TREE, plan_files
            self.paths, self.plans, _ = plan_files(paths, detector)
        elif fmt == "physlite":
            from hepfm.io.physlite import TREE, plan_files
            self.paths, self.plans, _ = plan_files(paths, detector)
        elif fmt == "ntuple":
            from hepfm.io import ntuple

            parsed = ntuple.load_mapping(mapping)
            TREE = parsed.tree
            self.paths, self.plans, _ = ntuple.plan_files(paths, detector, parsed)
        else:
            from hepfm.io.delphes import TREE, plan_files
            self.paths, self.plans, _ = plan_files(paths, detector, constituents=constituents or 0)
        self.fmt, self.tree, self.cv, self.constituents = fmt, TREE, cv, constituents
        self.chunk_size = chunk_size
        self.total = sum(p.tree.num_entries for p in self.plans)
        self.n_skipped = 0
        self.metadata = {"source_kind": fmt, "source_files": [str(p) for p in self.paths]}

    def chunks(self) -> Iterator[_Chunk]:
        file_index = {str(p.path): k for k, p in enumerate(self.plans)}
        for plan, entry_start, arrays in self.cv.iter_converted(self.plans, self.tree, self.chunk_size):
            keep = self.cv.selected(arrays)
            self.n_skipped += int((~keep).sum())
            n = len(keep)
            identity = {"file": np.full(n, file_index[str(plan.path)], np.int32),
                        "entry": np.arange(entry_start, entry_start + n, dtype=np.int64)}
            if self.fmt != "delphes":
                identity["run"] = arrays["run"].astype(np.uint32)
                identity["luminosityBlock"] = arrays["luminosity_block"].astype(np.uint32)
                identity["event"] = arrays["event_id"].astype(np.uint64)
            else:
                identity["event"] = arrays["event_id"].astype(np.int64)
            identity["weight"] = arrays["weight"].astype(np.float32)
            objects = arrays["objects"][keep]
            if self.constituents:
                from hepfm.data.datasets import with_constituents

                objects = with_constituents(objects, arrays["constituents"][keep])
            yield _Chunk({k: v[keep] for k, v in identity.items()}, objects, arrays["n_objects"][keep], n)

    def skipped(self) -> int:
        return self.n_skipped


#: How the error messages name the ROOT input formats.
_SPOKEN_FORMATS = {"nanoaod": "NanoAOD", "physlite": "PHYSLITE", "ntuple": "ntuple"}


def _open_input(data: list[str], fmt: str | None, chunk_size: int, detector, constituents: int | None = None,
                mapping: str | Path | None = None):
    if len(data) == 1 and Path(data[0]).is_dir():
        return _StoreInput(Path(data[0]), chunk_size, constituents)
    if fmt is None:
        fmt = "nanoaod"
    if fmt not in ROOT_FORMATS:
        raise HepfmError(f"unknown input format {fmt!r}: ROOT inputs are {', '.join(map(repr, ROOT_FORMATS))}")
    if (mapping is None) == (fmt == "ntuple"):
        raise HepfmError("--format ntuple needs --mapping (a YAML mapping of the ntuple's branches)" if mapping is None
                         else f"--mapping is for --format ntuple, not {fmt}")
    if constituents is not None and fmt != "delphes":
        spoken = _SPOKEN_FORMATS.get(fmt, fmt)
        raise HepfmError(f"{data[0]}: a hierarchical model needs each jet's constituents, and {spoken} files carry "
                         "none; score a store with constituents, or Delphes files that keep them (format delphes)")
    for d in data:
        if Path(d).is_dir():
            raise HepfmError(f"{d}: give one store folder, or ROOT files, not both")
    return _RootInput(data, fmt, chunk_size, detector, constituents, mapping)


# -------------------------------------------------------------------------------------------- writers


class _ParquetWriter:
    """Writers build the file in memory and return its bytes from ``close``: the scores are small next to the
    inputs, and writing the bytes with plain Python reports a full disk cleanly instead of a library crash."""

    def __init__(self, metadata: dict):
        try:
            import pyarrow as pa
        except ImportError:
            raise HepfmError("writing .parquet needs pyarrow: pip install pyarrow (or use .h5 / .root)") from None
        self.sink, self.metadata, self.writer = pa.BufferOutputStream(), metadata, None

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(columns)
        if self.writer is None:
            schema = table.schema.with_metadata({"hepfm": json.dumps(self.metadata)})
            self.writer = pq.ParquetWriter(self.sink, schema)
        self.writer.write_table(table.replace_schema_metadata(self.writer.schema.metadata))

    def close(self) -> bytes:
        if self.writer is not None:
            self.writer.close()
        return self.sink.getvalue().to_pybytes()


class _HDF5Writer:
    def __init__(self, metadata: dict):
        import h5py

        # driver "core" without a backing store: the file lives in memory only; close() returns its image.
        self.file = h5py.File(f"hepfm-predict-{id(self)}.h5", "w", driver="core", backing_store=False)
        self.file.attrs["hepfm"] = json.dumps(metadata)
        self.n = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        for name, values in columns.items():
            if name not in self.file:
                self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=values.dtype,
                                         chunks=(min(max(n, 1), 65536),), compression="gzip", compression_opts=4)
            ds = self.file[name]
            ds.resize((self.n + n,))
            ds[self.n:] = values
        self.n += n

    def close(self) -> bytes:
        try:
            self.file.flush()
            return self.file.id.get_file_image()
        finally:
            self.file.close()


class _KeptBytes(io.BytesIO):
    """A BytesIO whose content survives uproot closing it."""

    data = b""

    def close(self) -> None:
        if not self.closed:
            self.data = self.getvalue()
        super().close()


class _RootWriter:
    def __init__(self, metadata: dict):
        import uproot

        self.buffer = _KeptBytes()
        self.file = uproot.recreate(self.buffer)
        self.file["hepfm_metadata"] = json.dumps(metadata)
        self.tree = None

    def write(self, columns: dict[str, np.ndarray]) -> None:
        if self.tree is None:
            self.file[ROOT_TREE] = columns
            self.tree = self.file[ROOT_TREE]
        else:
            self.tree.extend(columns)

    def close(self) -> bytes:
        self.file.close()
        self.buffer.close()
        return self.buffer.data


_WRITERS = {"parquet": _ParquetWriter, "hdf5": _HDF5Writer, "root": _RootWriter}


def output_format(out: str | Path) -> str:
    """The output format named by the file extension; an unknown extension is an error."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise HepfmError(f"{out}: unknown output format {suffix or '(no extension)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an output that is one of the inputs or lies inside an input store, or that exists (unless
    ``overwrite``): scores written over the events they came from destroy them."""
    target = out.resolve()
    for source in inputs:
        if _same_file(out, source) or target == source.resolve():
            raise HepfmError(f"{out}: this is an input of the prediction ({source}); write the scores elsewhere")
        if source.is_dir() and target.is_relative_to(source.resolve()):
            raise HepfmError(f"{out}: lies inside the input store {source}; write the scores outside it")
    if out.is_dir():
        raise HepfmError(f"{out}: is a folder; give an output file (.parquet, .h5 or .root)")
    if out.exists() and not overwrite:
        raise HepfmError(f"{out}: already exists; choose another output file or pass --overwrite")


# ------------------------------------------------------------------------------------------- scoring


def score_names(record: RunRecord, saved=None) -> list[str]:
    """Output column names of a model: ``score_<class>`` per class (binary tasks: ``score_signal``; a multi-task
    model, its task ``saved``: ``score_<head>_<name>`` per event-level head's score)."""
    from hepfm.train.tasks import MultiTask

    if isinstance(saved, MultiTask):
        return [f"score_{c}" for c in saved.event_score_columns()]
    task, names = known(record.task), list(known(record.names) or [])
    if task == "binary":
        return ["score_signal"]
    if not names:
        return [f"score_{k}" for k in range(record.architecture["n_outputs"])]
    return [f"score_{n}" for n in names]


def _score(model, task, objects: np.ndarray, n_objects: np.ndarray, batch_size: int,
           device: torch.device) -> np.ndarray:
    """Scores [n, n_outputs] of a chunk, through the batched, multiplicity-trimmed forward pass."""
    from hepfm.data.datasets import EventData
    from hepfm.models.batched import predict

    data = EventData(torch.from_numpy(np.ascontiguousarray(objects, dtype=np.float32)),
                     torch.from_numpy(n_objects.astype(np.int64)), torch.zeros(len(objects))).to(device)
    return task.score_table(predict(model, data, batch_size)).cpu().numpy()


def predict_file(model_ref: str | Path, data: list[str] | str, out: str | Path, *, input_format: str | None = None,
                 batch_size: int = 8192, chunk_size: int | None = None, device: str = "cpu",
                 detector=None, progress: bool = True, overwrite: bool = False,
                 mapping: str | Path | None = None) -> PredictionReport:
    """Score every event of ``data`` (a store folder, or ROOT files) with a model and write ``out``.

    ``out`` must not be an input, nor lie inside an input store; an existing ``out`` is replaced only with
    ``overwrite``.

    ``chunk_size`` None: DEFAULT_CHUNK events, or for a hierarchical model as many as hold the same number of
    floats (its rows carry every jet's constituents, 6K more columns), so memory stays bounded.
    """
    from hepfm.models.pretrained import load
    from hepfm.physics.detector import DetectorConfig
    from hepfm.progress import EventProgress
    from hepfm.train.tasks import saved_task

    out = Path(out)
    fmt = output_format(out)
    if not out.parent.is_dir():
        raise HepfmError(f"{out.parent}: output folder does not exist")
    data = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    check_output(out, [Path(d) for d in data], overwrite)
    if batch_size <= 0 or (chunk_size is not None and chunk_size <= 0):
        raise HepfmError(f"batch and chunk sizes must be positive, got {batch_size} and {chunk_size}")
    dev = torch.device(device)
    model = load(model_ref, device=dev).eval()
    record = model.record
    task = saved_task(record.task, list(record.names), known(record.task_options, None))
    columns = score_names(record, task)
    if detector is None:  # select ROOT inputs' objects as the model's training events were
        trained = (known(record.data_schema) or {}).get("detector")
        detector = DetectorConfig.from_dict(trained, source=f"{model_ref} data schema") if trained else DetectorConfig()
    hierarchical = getattr(model, "inputs", "objects") == "objects+constituents"
    if chunk_size is None:
        from hepfm.models.hierarchical import N_CONSTITUENT, N_OBJECT

        width = N_OBJECT + (N_CONSTITUENT * model.max_constituents if hierarchical else 0)
        chunk_size = max(1024, DEFAULT_CHUNK * N_OBJECT // width)
    source = _open_input(data, input_format, chunk_size, detector, model.max_constituents if hierarchical else None,
                         mapping)
    inputs = [source.store.root] if isinstance(source, _StoreInput) else list(source.paths)
    check_output(out, [Path(p) for p in inputs], overwrite)  # the files the patterns matched, the store's root
    if isinstance(source, _StoreInput):
        from hepfm.models.pretrained import schema_differences

        diffs = schema_differences(record.to_json(), source.store)
        if diffs:
            raise HepfmError(f"{data[0]}: these events differ from the model's training data: {'; '.join(diffs)}")
    metadata = {"model": str(model_ref), "task": task.name, "classes": list(task.names), "columns": columns,
                **source.metadata}
    n_done = 0
    start = time.perf_counter()

    writer = _WRITERS[fmt](metadata)
    try:
        with EventProgress(source.total, f"scoring with {Path(str(model_ref)).name}", enabled=progress) as bar:
            for chunk in source.chunks():
                scores = _score(model, task, chunk.objects, chunk.n_objects, batch_size, dev)
                cols = dict(chunk.identity)
                cols.update({name: scores[:, k].astype(np.float32) for k, name in enumerate(columns)})
                if len(chunk.objects):
                    writer.write(cols)
                n_done += len(chunk.objects)
                bar.advance(chunk.n_read)
    finally:
        image = writer.close()
    if n_done == 0:
        raise HepfmError(f"{', '.join(data)}: no event to score")
    atomic_write_bytes(out, image)
    return PredictionReport(out=out, n_events=n_done, n_skipped=source.skipped(), columns=columns,
                            seconds=time.perf_counter() - start)
