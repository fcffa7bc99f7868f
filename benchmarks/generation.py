"""Throughput of the full generation chain against bare Pythia, side by side, one core.

    python benchmarks/generation.py [--process tth] [--events 2000] [--repeats 3] [--constituents 32]

"bare" runs ``pythia.next()`` with exactly the settings and seed of shard 0 of the process; "chain" runs
hepfm's whole shard production (Pythia ``nextBatch``, detector response, FastJet, truth labels, atomic
HDF5 write) on the same events. Runs alternate so that machine noise hits both alike. Rates use the
process's CPU time (everything here is single-threaded), which other load on the machine disturbs less
than wall time; the wall-time ratio is printed too. Initialisation is outside the timing in both cases.
With ``--constituents K`` each repeat also runs the chain storing K constituents and the flavour of every
jet (``hepfm generate --constituents K``), and the ratio of its rate to the plain chain's is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses

from hepfm.io.generate import catalog_source, plan_shards, produce_shard
from hepfm.physics.generation import make_pythia


def _rates(run, n_events: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return n_events / (time.process_time() - cpu), n_events / (time.perf_counter() - wall)


def bare_pythia(job) -> tuple[float, float]:
    pythia = make_pythia(job.pythia_settings(), "bare")

    def run():
        for _ in range(job.n_events):
            pythia.next()

    return _rates(run, job.n_events)


def full_chain(job) -> tuple[float, float]:
    import hepfm.physics.generation as sim

    pythia = make_pythia(job.pythia_settings(), "chain")
    original = sim.make_pythia
    sim.make_pythia = lambda settings, where: pythia
    try:
        return _rates(lambda: produce_shard(job), job.n_events)
    finally:
        sim.make_pythia = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="tth")
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--constituents", type=int, default=0, help="also time the chain keeping K constituents")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (job,) = plan_shards([catalog_source(args.process)], args.events, Path(tmp), seed=1,
                              shard_size=args.events)
        Path(job.path).parent.mkdir(parents=True)
        bare, chain, wall_ratios, with_const, sizes = [], [], [], [], []
        for r in range(args.repeats):
            (b_cpu, b_wall), (c_cpu, c_wall) = bare_pythia(job), full_chain(job)
            sizes.append(Path(job.path).stat().st_size)
            Path(job.path).unlink()
            if args.constituents:
                cjob = dataclasses.replace(job, constituents=args.constituents)
                with_const.append(full_chain(cjob)[0])
                sizes.append(Path(job.path).stat().st_size)
                Path(job.path).unlink()
                print(f"repeat {r + 1}: chain with {args.constituents} constituents {with_const[-1]:7.1f} ev/s   "
                      f"ratio to the plain chain {with_const[-1] / c_cpu:.3f}")
            bare.append(b_cpu)
            chain.append(c_cpu)
            wall_ratios.append(c_wall / b_wall)
            print(f"repeat {r + 1}: bare {b_cpu:7.1f} ev/s   chain {c_cpu:7.1f} ev/s   ratio {c_cpu / b_cpu:.3f} "
                  f"(wall time: {wall_ratios[-1]:.3f})")
    b, c = statistics.median(bare), statistics.median(chain)
    ratios = [y / x for x, y in zip(bare, chain, strict=True)]
    print(f"\nprocess {args.process}, {args.events} events x {args.repeats} repeats, one core, CPU-time rates")
    print(f"{'bare Pythia next()':>34}: {b:8.1f} events/s")
    print(f"{'full chain (gen+det+truth+write)':>34}: {c:8.1f} events/s")
    print(f"{'ratio chain / bare (median)':>34}: {statistics.median(ratios):8.3f}   "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; wall-time median {statistics.median(wall_ratios):.3f}; "
          f"target >= 0.80)")
    if args.constituents:
        const_ratios = [y / x for x, y in zip(chain, with_const, strict=True)]
        print(f"{'chain with constituents':>34}: {statistics.median(with_const):8.1f} events/s   ratio to the plain "
              f"chain {statistics.median(const_ratios):.3f} (range {min(const_ratios):.3f}-{max(const_ratios):.3f})")
        print(f"{'shard size per event':>34}: {sizes[0] / args.events:8.0f} bytes without, "
              f"{sizes[1] / args.events:.0f} bytes with {args.constituents} constituents per jet (gzip level 1)")


if __name__ == "__main__":
    main()
