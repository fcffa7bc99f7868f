"""A study's training phase with its parts in parallel processes (``--jobs``) next to the same study run serially.

The stores are generated once (``--prepare-only``) into OUT/stores; every repeat then trains the whole grid into a
fresh folder linked to them, alternating serial (``jobs=1``, PyTorch's default threads) and parallel
(``--jobs`` processes sharing the cores), and prints each wall time, the medians and the ratio serial / parallel.
The default configuration is the demo's (H+ vs tt, scratch and fine-tuning from the shipped model, tuned rates).

    python benchmarks/study_jobs.py --out /tmp/study-jobs [--config CONFIG] [--jobs 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from rich.console import Console

from hepfm.study.config import load_config
from hepfm.study.demo import demo_config
from hepfm.study.layout import StudyLayout
from hepfm.study.run import run_study


def _train(cfg, root: Path, stores: Path, jobs: int) -> tuple[float, dict]:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "stores").symlink_to(stores.resolve(), target_is_directory=True)
    t0 = time.perf_counter()
    state = run_study(cfg, root, progress=False, console=Console(quiet=True), jobs=jobs)
    seconds = time.perf_counter() - t0
    if state.failures:
        raise SystemExit(f"{root}: {len(state.failures)} cell(s) failed")
    results = {(r["task"], r["strategy"], r["seed"]): round(r["accuracy"], 4)
               for r in (json.loads(p.read_text()) for p in (root / "cells").rglob(StudyLayout.RESULT))}
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="study configuration (default: the demo's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cfg = load_config(args.config) if args.config else demo_config()
    prepared = args.out / "prepared"
    run_study(cfg, prepared, progress=False, prepare_only=True)
    times: dict[int, list[float]] = {1: [], args.jobs: []}
    for repeat in range(args.repeats):
        for jobs in (1, args.jobs):
            seconds, results = _train(cfg, args.out / f"jobs{jobs}", prepared / "stores", jobs)
            times[jobs].append(seconds)
            print(f"repeat {repeat}: jobs={jobs}: {seconds:.1f} s; test accuracies {results}", flush=True)
    serial, parallel = statistics.median(times[1]), statistics.median(times[args.jobs])
    print(f"training phase, median of {args.repeats}: serial {serial:.1f} s, {args.jobs} jobs {parallel:.1f} s, "
          f"ratio serial/parallel {serial / parallel:.2f}")


if __name__ == "__main__":
    main()
