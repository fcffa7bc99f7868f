"""Generation through a Dask LocalCluster against the local process pool, on the same events, in one run.

    python benchmarks/cluster_generation.py [--process ttbar] [--events 4000] [--shards 8] [--workers 2]
                                            [--repeats 2] [--tasks 200]

The same store (same shards, seeds and bytes, checked) is generated with ``hepfm generate --workers N`` and
with ``--executor dask`` on a ``distributed.LocalCluster`` of N single-threaded worker processes started
beforehand (its start-up, a few seconds once per session, is outside the timing, as a cluster is started once
and then serves many runs); runs alternate so that machine noise hits both alike. Printed: events/s of each,
their ratio (Dask / local; the goal is >= 0.9), and the scheduler's overhead per task, measured as the wall
time per task of ``--tasks`` empty tasks submitted with the options generation uses (retries, not pure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from hepfm.executors import Executor, run_tasks
from hepfm.io.generate import catalog_source, generate


def _noop(i: int) -> int:
    return i


def _store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.h5"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="ttbar")
    ap.add_argument("--events", type=int, default=4000, help="events in all")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=200, help="empty tasks timed for the scheduler overhead")
    args = ap.parse_args()

    from distributed import LocalCluster

    sources = [catalog_source(args.process)]
    rates: dict[str, list[float]] = {"local": [], "dask": []}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, tempfile.TemporaryDirectory() as tmp:
        on_dask = Executor("dask", scheduler=cluster.scheduler_address)
        for repeat in range(args.repeats):
            stores = {}
            for name, executor in (("local", Executor()), ("dask", on_dask)):
                out = Path(tmp) / f"{name}{repeat}"
                report = generate(sources, out, args.events, seed=7, workers=args.workers,
                                  num_shards=args.shards, progress=False, executor=executor)
                rates[name].append(report.events_per_second)
                stores[name] = _store_bytes(out)
            assert stores["local"] == stores["dask"], "the Dask run wrote other bytes than the local one"
            print(f"repeat {repeat}: local {rates['local'][-1]:.0f} events/s, dask {rates['dask'][-1]:.0f} events/s")
        run_tasks(on_dask, _noop, [(i,) for i in range(10)])  # warm: the function is shipped once
        start = time.perf_counter()
        run_tasks(on_dask, _noop, [(i,) for i in range(args.tasks)])
        overhead = (time.perf_counter() - start) / args.tasks
    local, dask = statistics.median(rates["local"]), statistics.median(rates["dask"])
    shard_s = args.events / args.shards / (local / args.workers)
    print(f"{args.process}, {args.events} events in {args.shards} shards, {args.workers} workers "
          f"(median of {args.repeats}; identical bytes)")
    print(f"  local pool (--workers {args.workers}):   {local:6.0f} events/s")
    print(f"  Dask LocalCluster ({args.workers} workers): {dask:6.0f} events/s")
    print(f"  ratio dask / local: {dask / local:.3f} (goal >= 0.9)")
    print(f"  scheduler overhead: {overhead * 1e3:.2f} ms per task ({args.tasks} empty tasks), "
          f"{overhead / shard_s:.2e} of a {shard_s:.1f} s shard here")


if __name__ == "__main__":
    main()
