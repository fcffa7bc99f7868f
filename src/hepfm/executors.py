"""Where independent jobs run: on this machine (the default), or as tasks on a Dask cluster.

Generation shards and a study's tuning points and parts of its grid are independent jobs whose results do not
depend on where they run (each carries its own seeds), so they can be Dask tasks. ``Executor`` says which;
the local default needs no Dask. With ``kind="dask"`` the tasks go to

* a running scheduler (``scheduler="tcp://host:8786"``), whose workers must see the same files;
* a batch-system cluster that dask-jobqueue starts from a small YAML file (``cluster=PATH``)::

      kind: slurm          # slurm, htcondor, pbs, lsf, sge (dask-jobqueue), or local
      jobs: 20             # batch jobs to start (each one a Dask worker)
      options:             # passed as they are to dask_jobqueue.SLURMCluster(...)
        cores: 1
        memory: 4GB
        walltime: "04:00:00"

* or, with neither, a ``distributed.LocalCluster`` of single-threaded worker processes on this machine.

A task whose worker dies is rerun elsewhere by the scheduler; a task that raises is retried ``retries`` times.
Dask (the ``[cluster]`` extra) is imported only when a Dask executor is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hepfm.errors import HepfmError
from hepfm.files import safe_yaml

EXECUTORS = ("local", "dask")
#: The ``kind`` of a cluster file and the dask-jobqueue class it starts (``local``: a LocalCluster).
CLUSTER_KINDS = {"slurm": "SLURMCluster", "htcondor": "HTCondorCluster", "pbs": "PBSCluster",
                 "lsf": "LSFCluster", "sge": "SGECluster", "local": "LocalCluster"}
INSTALL_HINT = "pip install 'hepfm[cluster]'"


@dataclass(frozen=True)
class Executor:
    """Where jobs run: ``local`` (this machine's processes), or ``dask`` (a scheduler, a cluster file, or a
    LocalCluster when neither is given); ``retries``: reruns of a Dask task that raised."""

    kind: str = "local"
    scheduler: str | None = None
    cluster: str | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise HepfmError(f"unknown executor {self.kind!r} (--executor): choose {' or '.join(EXECUTORS)}")
        if self.kind == "local" and (self.scheduler or self.cluster):
            raise HepfmError("--scheduler and --cluster need --executor dask")
        if self.scheduler and self.cluster:
            raise HepfmError("give either --scheduler ADDRESS or --cluster FILE, not both")
        if self.retries < 0:
            raise HepfmError(f"the number of task retries must be 0 or positive, got {self.retries}")

    @property
    def is_dask(self) -> bool:
        """True when jobs are Dask tasks."""
        return self.kind == "dask"

    def describe(self) -> str:
        """A few words naming where jobs run, for the console."""
        if not self.is_dask:
            return "local processes"
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        return f"the Dask cluster of {self.cluster}" if self.cluster else "a local Dask cluster"


LOCAL = Executor()

# The client of the Dask executor opened by the outermost ``session`` of this process (a study opens one for
# its generation and its training; generate() inside it reuses it).
_active: dict[Executor, Any] = {}


def _distributed():
    try:
        import distributed
    except ImportError:
        raise HepfmError(f"--executor dask needs Dask's distributed package: {INSTALL_HINT}") from None
    return distributed


def read_cluster_file(path: str | Path) -> tuple[str, int, dict]:
    """(kind, number of jobs, keyword options) of a cluster file; a bad one is a one-line HepfmError."""
    raw = safe_yaml(path, "cluster file")
    if not isinstance(raw, dict):
        raise HepfmError(f"{path}: a cluster file is a mapping with kind, jobs and options")
    unknown = set(raw) - {"kind", "jobs", "options"}
    if unknown:
        raise HepfmError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (kind, jobs, options)")
    kind = raw.get("kind")
    if kind not in CLUSTER_KINDS:
        raise HepfmError(f"{path}: kind must be one of {', '.join(CLUSTER_KINDS)}, got {kind!r}")
    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise HepfmError(f"{path}: jobs must be a positive integer, got {jobs!r}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise HepfmError(f"{path}: options must be a mapping of the cluster's keyword arguments")
    return kind, jobs, options


def _start_cluster(path: str, distributed):
    kind, jobs, options = read_cluster_file(path)
    if kind == "local":
        return distributed.LocalCluster(**{"n_workers": jobs, "threads_per_worker": 1, "processes": True,
                                           "dashboard_address": ":0", **options})
    try:
        import dask_jobqueue
    except ImportError:
        raise HepfmError(f"{path}: a {kind} cluster needs dask-jobqueue: {INSTALL_HINT}") from None
    try:
        cluster = getattr(dask_jobqueue, CLUSTER_KINDS[kind])(**options)
    except (TypeError, ValueError) as exc:
        raise HepfmError(f"{path}: the {kind} cluster refused its options ({exc})") from None
    cluster.scale(jobs=jobs)
    return cluster


def _connect(executor: Executor, workers: int):
    """A distributed.Client for ``executor`` and the cluster this call started (None for a scheduler)."""
    distributed = _distributed()
    if executor.scheduler:
        try:
            return distributed.Client(executor.scheduler, set_as_default=False), None
        except (OSError, TimeoutError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise HepfmError(f"cannot reach the Dask scheduler at {executor.scheduler} (--scheduler): "
                             f"{reason}") from None
    if executor.cluster:
        cluster = _start_cluster(executor.cluster, distributed)
    else:
        cluster = distributed.LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
    try:
        return distributed.Client(cluster, set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


@contextmanager
def session(executor: Executor, workers: int = 1) -> Iterator[Any]:
    """Open ``executor`` for the calls inside (the Dask client, or None for the local executor).

    ``workers``: the size of the LocalCluster started when a Dask executor names no scheduler or cluster file.
    A session inside another one of the same executor reuses its client.
    """
    if not executor.is_dask:
        yield None
        return
    if executor in _active:
        yield _active[executor]
        return
    client, cluster = _connect(executor, workers)
    _active[executor] = client
    try:
        yield client
    finally:
        del _active[executor]
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(executor: Executor, function: Callable, calls: Sequence[tuple], workers: int = 1,
              on_result: Callable[[int, Any], None] | None = None) -> list:
    """``function(*call)`` for every call as Dask tasks; the results in the order of ``calls``.

    ``on_result(index, result)`` runs here as each task finishes (a progress bar follows the cluster). The first
    task that fails for good cancels the others and its error is raised here; so does an interrupt.
    """
    with session(executor, workers) as client:
        distributed = _distributed()
        futures = [client.submit(function, *call, pure=False, retries=executor.retries) for call in calls]
        index = {future.key: i for i, future in enumerate(futures)}
        results: list = [None] * len(futures)
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                i = index[future.key]
                results[i] = future.result()  # re-raises the task's error
                if on_result is not None:
                    on_result(i, results[i])
        except BaseException:
            client.cancel(futures)
            raise
        return results


def task_threads() -> int:
    """The CPU cores a task may use: inside a Dask worker its share of the worker's cores, else all of them."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    import sys

    if "distributed" in sys.modules:  # a Dask worker has it loaded; never imported for it here
        try:
            worker = sys.modules["distributed"].get_worker()
        except ValueError:  # not inside a task
            return cores
        return max(1, cores // max(1, worker.state.nthreads))
    return cores
