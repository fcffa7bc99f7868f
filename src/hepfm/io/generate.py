"""The event-generation job: simulated events written into an event store, shard by shard.

The simulation itself (Pythia 8, or an LHE file showered by Pythia -> detector -> truth labels) is
:mod:`hepfm.physics.generation`; this module plans the shards, seeds them, runs them in worker processes
and writes them into the store.

The unit of work is a shard. A shard's seed is derived from (base seed, process, shard index), so a
rerun reproduces it bit for bit, shards that are already complete are skipped, and a batch system can
run one shard per job (``shard_index``). Shards are independent, so workers run them in parallel.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hepfm.errors import HepfmError
from hepfm.executors import LOCAL, Executor, run_tasks, session
from hepfm.io import store
from hepfm.io.atomic import prepare_output_folder, remove_stale_temporaries
from hepfm.io.lhe import count_lhe_events
from hepfm.io.locking import exclusive_lock
from hepfm.io.schema import constituent_attrs, truth_attrs
from hepfm.names import check_name
from hepfm.physics.detector import DetectorConfig
from hepfm.physics.generation import EventSource, check_settings, simulate
from hepfm.physics.processes import COMMON_SETTINGS, get_process
from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES

#: Events per ``nextBatch`` call: large enough to amortise the columnar overheads, small enough for
#: smooth progress and ~100 MB of generator records in memory.
BATCH_EVENTS = 250
DEFAULT_SHARD_SIZE = 50_000
_MAX_PYTHIA_SEED = 900_000_000


@dataclass(frozen=True)
class Source:
    """Where events of one label come from: a catalog process or an external LHE file."""

    name: str
    settings: tuple[str, ...]
    lhe_file: str | None = None
    lhe_events: int | None = None  # events available in the LHE file
    mixture: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # two settings sets, chosen per event

    @property
    def generator(self) -> str:
        return "Pythia 8 (LHE input)" if self.lhe_file else "Pythia 8"


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to produce one shard, independent of the parent process."""

    source: Source
    shard_index: int
    n_events: int
    first_event: int
    seed: int
    base_seed: int
    path: str
    detector: dict = field(default_factory=dict)
    constituents: int = 0  # K: constituents kept per jet (0: none stored)

    def pythia_settings(self, part: int | None = None) -> list[str]:
        """Pythia settings of the shard; for a mixture source, those of its instance ``part`` (0 or 1)."""
        seed = self.seed
        extra: list[str] = []
        if part is not None:
            extra = list(self.source.mixture[part])
            seed = self.seed if part == 0 else derive_seed(self.seed, self.source.name, 1)
        s = list(self.source.settings) + extra + ["Random:setSeed = on", f"Random:seed = {seed}"]
        if self.source.lhe_file:
            s.append(f"Beams:nSkipLHEFatInit = {self.first_event}")
        return s

    def mixture_settings(self) -> list[list[str]]:
        """The settings of both instances of a mixture source ([] for a single source)."""
        return [self.pythia_settings(k) for k in (0, 1)] if self.source.mixture else []


def derive_seed(base_seed: int, name: str, shard_index: int) -> int:
    """A Pythia seed in [1, 900000000] derived from (base seed, process name, shard index)."""
    digest = hashlib.sha256(f"{base_seed}/{name}/{shard_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % _MAX_PYTHIA_SEED + 1


def catalog_source(name: str, extra_settings: Sequence[str] = ()) -> Source:
    """The Source of a catalog process, with optional extra Pythia settings appended."""
    proc = get_process(name)
    return Source(name=name, settings=tuple(proc.pythia_settings()) + tuple(extra_settings),
                  mixture=proc.mixture)


def lhe_source(path: str | Path, label: str, extra_settings: Sequence[str] = ()) -> Source:
    """A Source that showers an LHE file; the file is validated and its events counted."""
    check_name(label, "LHE sample label (--label)")
    n = count_lhe_events(path)
    settings = tuple(COMMON_SETTINGS) + (
        "Beams:frameType = 4", f"Beams:LHEF = {Path(path).resolve()}") + tuple(extra_settings)
    return Source(name=label, settings=settings, lhe_file=str(Path(path).resolve()), lhe_events=n)


# -------------------------------------------------------------------------------------------- shards


def produce_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> int:
    """Simulate one shard (:func:`hepfm.physics.generation.simulate`) and write it atomically; returns its event
    count."""
    where = f"{job.source.name} shard {job.shard_index}"
    events = EventSource(job.mixture_settings() or [job.pythia_settings()], job.seed, where,
                         lhe=bool(job.source.lhe_file))
    cfg = DetectorConfig.from_dict(job.detector) if job.detector else DetectorConfig()
    rng = np.random.default_rng([job.seed, 1])  # independent stream from Pythia's own
    arrays = simulate(events, job.n_events, job.first_event, cfg, rng, constituents=job.constituents,
                      batch_events=BATCH_EVENTS, progress=progress)
    if not arrays:
        raise HepfmError(f"{where}: no events to write (the LHE file has none left from event {job.first_event})")
    done = len(arrays["event_id"])
    arrays["process"] = np.zeros(done, dtype=np.int32)
    sigma, sigma_err, sigma_parts = events.cross_section()
    attrs = {
        "process_name": job.source.name,
        "process_names": [job.source.name],
        "shard_index": job.shard_index,
        "n_events_planned": job.n_events,  # an LHE file may run out or Pythia may drop failed events
        "seed": job.seed,
        "base_seed": job.base_seed,
        "generator": job.source.generator,
        "generator_version": events.generator_version(),
        "generator_settings": job.pythia_settings(),
        "mixture_settings": job.mixture_settings(),
        "mixture_sigma_pb": sigma_parts if job.source.mixture else [],
        "lhe_file": job.source.lhe_file or "",
        "sigma_pb": sigma,
        "sigma_err_pb": sigma_err,
        "detector": job.detector or DetectorConfig().to_dict(),
        "truth_labels": list(LABEL_NAMES),
        "truth_label_kinds": list(LABEL_KINDS),
        **truth_attrs(),
    }
    if job.constituents:
        attrs.update(constituent_attrs(job.constituents))
    store.write_shard(Path(job.path), arrays, attrs)
    return done


def _quiet_worker() -> None:
    """Pool initializer: a worker leaves interrupts to its parent and dies silently when the pool is terminated.

    The parent handles Ctrl-C and SIGTERM (it terminates the pool and removes partial files); a worker raising
    KeyboardInterrupt itself would only print a traceback per worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker(job: ShardJob, queue) -> int:
    return produce_shard(job, progress=queue.put)


# ---------------------------------------------------------------------------------------- planning


def plan_shards(sources: Sequence[Source], events: int | None, out: Path, seed: int,
                shard_size: int = DEFAULT_SHARD_SIZE, num_shards: int | None = None,
                shard_index: int | None = None, detector: DetectorConfig | None = None,
                constituents: int = 0) -> list[ShardJob]:
    """The shards to produce for every source (all of them, or just ``shard_index``); ``constituents`` = K
    keeps up to K constituents per jet (0: none)."""
    if events is not None and events <= 0:
        raise HepfmError(f"the number of events must be positive, got {events}")
    if shard_size <= 0:
        raise HepfmError(f"the shard size must be positive, got {shard_size}")
    if num_shards is not None and num_shards <= 0:
        raise HepfmError(f"the number of shards must be positive, got {num_shards}")
    if constituents < 0:
        raise HepfmError(f"the number of constituents per jet must be 0 or positive, got {constituents}")
    det = (detector or DetectorConfig()).to_dict()
    jobs = []
    for src in sources:
        n_total = events
        if src.lhe_events is not None:
            n_total = src.lhe_events if events is None else min(events, src.lhe_events)
        if n_total is None:
            raise HepfmError(f"{src.name}: give the number of events to generate")
        size = math.ceil(n_total / num_shards) if num_shards else shard_size
        n_shards = math.ceil(n_total / size)
        if shard_index is not None and not 0 <= shard_index < n_shards:
            raise HepfmError(f"shard index {shard_index} is out of range: {src.name} has {n_shards} shard(s)")
        for i in range(n_shards):
            if shard_index is not None and i != shard_index:
                continue
            jobs.append(ShardJob(
                source=src, shard_index=i, n_events=min(size, n_total - i * size), first_event=i * size,
                seed=derive_seed(seed, src.name, i), base_seed=seed,
                path=str(out / src.name / store.shard_name(i)), detector=det, constituents=constituents))
    return jobs


def _is_done(job: ShardJob) -> bool:
    """True when the shard exists and was made by this very job; a different one is an error."""
    path = Path(job.path)
    if not path.exists():
        return False
    try:
        attrs = store.read_attrs(path)
    except OSError:
        raise HepfmError(f"{path}: exists but is not a readable shard; remove it and rerun") from None
    same = (attrs.get("seed") == job.seed and attrs.get("n_events_planned") == job.n_events
            and attrs.get("generator_settings") == job.pythia_settings()
            and list(attrs.get("mixture_settings", [])) == job.mixture_settings()
            and attrs.get("detector") == job.detector
            and attrs.get("max_constituents", 0) == job.constituents)
    if not same:
        raise HepfmError(f"{path}: exists with a different seed, size, configuration or number of constituents; "
                         "use a new output folder")
    return True


@dataclass
class GenerationReport:
    """What a generate call did."""

    written: list[str]
    skipped: list[str]
    n_events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.n_events / self.seconds if self.seconds > 0 else float("nan")


def generate(sources: Sequence[Source], out: str | Path, events: int | None, seed: int = 1,
             workers: int = 1, shard_size: int = DEFAULT_SHARD_SIZE, num_shards: int | None = None,
             shard_index: int | None = None, detector: DetectorConfig | None = None,
             progress: bool = True, constituents: int = 0, executor: Executor = LOCAL) -> GenerationReport:
    """Produce the event store ``out`` for ``sources``; see the module docstring. ``constituents`` = K
    also stores up to K constituents and the truth flavour of every jet.

    With ``workers > 1`` the workers are spawned processes (safe with threads, as in notebooks), so a
    script that calls this must guard its entry point with ``if __name__ == "__main__":``. A Dask ``executor``
    runs the shards as tasks of its cluster instead (the same shards, seeds and bytes; ``out`` must be on a
    file system its workers share); without a scheduler or cluster file it starts ``workers`` local workers.
    """
    out = Path(out)
    if workers <= 0:
        raise HepfmError(f"the number of workers must be positive, got {workers}")
    jobs = plan_shards(sources, events, out, seed, shard_size, num_shards, shard_index, detector, constituents)
    with session(executor, workers):  # an unreachable scheduler is refused before the folder is made
        created = prepare_output_folder(out)
        try:
            # One writer per store: two runs into one folder would mix their shards (workers run inside this lock).
            with exclusive_lock(out, "event store"):
                return _generate_locked(sources, jobs, out, workers, progress, executor)
        except BaseException:
            if created and not any(out.glob(f"*/{store.SHARD_GLOB}")):
                shutil.rmtree(out, ignore_errors=True)
            raise


def _generate_locked(sources: Sequence[Source], jobs: list[ShardJob], out: Path, workers: int,
                     progress: bool, executor: Executor = LOCAL) -> GenerationReport:
    todo = [t for t in jobs if not _is_done(t)]
    if todo:  # a complete store is reused without Pythia (e.g. on a machine that only trains)
        for src in sources:
            check_settings(src.settings, src.name)
    new_dirs = [d for d in {Path(t.path).parent for t in jobs} if not d.exists()]
    try:
        skipped = [t.path for t in jobs if t not in todo]
        for t in todo:
            Path(t.path).parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(t.path)  # left by a killed run
        start = time.perf_counter()
        n_done = _run(todo, workers, progress, executor)
        seconds = time.perf_counter() - start
        for t in todo:
            remove_stale_temporaries(t.path)  # a Dask worker lost mid-write leaves its temporary; its task reran
        store.write_manifest(out)
    except BaseException:
        # Leave nothing behind that this run created and did not complete.
        for t in todo:
            remove_stale_temporaries(t.path)
        for d in new_dirs:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    return GenerationReport(written=[t.path for t in todo], skipped=skipped, n_events=n_done, seconds=seconds)


def _run(jobs: list[ShardJob], workers: int, show: bool, executor: Executor = LOCAL) -> int:
    from hepfm.progress import EventProgress

    total = sum(t.n_events for t in jobs)
    with EventProgress(total, "generating", enabled=show) as bar:
        if executor.is_dask:  # the bar advances by a shard as each task finishes
            return sum(run_tasks(executor, produce_shard, [(t,) for t in jobs], workers,
                                 on_result=lambda i, n: bar.advance(n)))
        if workers == 1 or len(jobs) <= 1:
            return sum(produce_shard(t, progress=bar.advance) for t in jobs)
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork: Pythia and the progress thread must not be copied
        with ctx.Manager() as manager:
            queue = manager.Queue()
            pool = ctx.Pool(min(workers, len(jobs)), initializer=_quiet_worker)
            try:
                pending = [pool.apply_async(_worker, (t, queue)) for t in jobs]
                n_done = 0
                while pending:
                    time.sleep(0.2)
                    while not queue.empty():
                        bar.advance(queue.get())
                    for res in [r for r in pending if r.ready()]:
                        n_done += res.get()  # re-raises a worker's error
                        pending.remove(res)
                pool.close()
            except BaseException:
                pool.terminate()  # workers die silently; the caller removes their partial files
                raise
            finally:
                pool.join()
            while not queue.empty():
                bar.advance(queue.get())
            return n_done
