"""Throughput of the full generation chain against bare Pythia, side by side, one core.

    python benchmarks/generation.py [--process tth] [--events 2000] [--repeats 3]

"bare" runs ``pythia.next()`` with exactly the settings and seed of shard 0 of the process; "chain" runs
hepfm's whole shard production (Pythia ``nextBatch``, detector response, FastJet, truth labels, atomic
HDF5 write). Runs alternate so that machine noise hits both alike; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from hepfm.physics.generate import catalog_source, make_pythia, plan_shards, produce_shard


def bare_pythia(task) -> float:
    pythia = make_pythia(task.pythia_settings(), "bare")
    start = time.perf_counter()
    for _ in range(task.n_events):
        pythia.next()
    return task.n_events / (time.perf_counter() - start)


def full_chain(task) -> float:
    # Initialisation is outside the timing in both cases, as in bare_pythia.
    import hepfm.physics.generate as gen

    pythia = make_pythia(task.pythia_settings(), "chain")
    original = gen.make_pythia
    gen.make_pythia = lambda settings, where: pythia
    try:
        start = time.perf_counter()
        produce_shard(task)
        return task.n_events / (time.perf_counter() - start)
    finally:
        gen.make_pythia = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="tth")
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (task,) = plan_shards([catalog_source(args.process)], args.events, Path(tmp), seed=1,
                              shard_size=args.events)
        Path(task.path).parent.mkdir(parents=True)
        bare, chain = [], []
        for r in range(args.repeats):
            bare.append(bare_pythia(task))
            chain.append(full_chain(task))
            Path(task.path).unlink()
            print(f"repeat {r + 1}: bare {bare[-1]:7.1f} ev/s   chain {chain[-1]:7.1f} ev/s")
    b, c = statistics.median(bare), statistics.median(chain)
    print(f"\nprocess {args.process}, {args.events} events x {args.repeats} repeats, one core")
    print(f"{'bare Pythia next()':>28}: {b:8.1f} events/s")
    print(f"{'full chain (gen+det+truth+write)':>28}: {c:8.1f} events/s")
    print(f"{'ratio chain / bare':>28}: {c / b:8.3f}   (target >= 0.80)")


if __name__ == "__main__":
    main()
